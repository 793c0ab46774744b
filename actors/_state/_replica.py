"""A process's replica: the records of the keys it read and the prefixes it watches, and its
watchers. Reads see the newest of everything heard; watchers are fed from the service's
pushes alone, in the order the changes were made.
"""

from __future__ import annotations

from collections import deque
from typing import TypeVar

import trio

from protocol import Message, ProtocolError, registry

from .._base._errors import (
    InvalidStoredValue,
)
from .._base._shared import StateChanged, StateResynced
from ._store import Record
from ._wire import TOO_LARGE

__all__ = [
    "Replica",
    "Watcher",
]

M = TypeVar("M", bound=Message)

_WATCH_BUFFER = 1024  # changes a watcher may fall behind before it is resynced


class Watcher:
    """One ``watch()``: changes under a prefix, bounded; resynced if it falls behind."""

    def __init__(self, replica: Replica, prefix: str) -> None:
        self.replica = replica
        self.prefix = prefix
        self.queue: deque[Record] = deque()
        self.resync = False
        self.ready = trio.Event()

    def push(self, record: Record) -> None:
        if self.resync:
            return  # it will get the current values anyway
        if len(self.queue) >= _WATCH_BUFFER:
            self.queue.clear()
            self.resync = True
        else:
            self.queue.append(record)
        self.ready.set()

    def resynced(self) -> None:
        self.queue.clear()
        self.resync = True
        self.ready.set()

    def start_at(self, versions: dict[str, int]) -> None:
        """The watch starts from these versions: what it was fed up to them is no change."""
        if self.queue:
            self.queue = deque(r for r in self.queue if r.version > versions.get(r.key, 0))

    def __aiter__(self) -> Watcher:
        return self

    async def __anext__(self) -> StateChanged | StateResynced:
        while not self.queue and not self.resync:
            self.ready = trio.Event()
            await self.ready.wait()
        if self.resync:
            self.resync = False
            self.queue.extend(sorted(
                (r for k, r in self.replica.records.items() if k.startswith(self.prefix)),
                key=lambda r: r.key,
            ))
            await trio.lowlevel.checkpoint()
            return StateResynced(prefix=self.prefix)
        record = self.queue.popleft()
        await trio.lowlevel.checkpoint()
        return StateChanged(
            key=record.key, version=record.version,
            value=None if record.deleted else self.replica.decode(record, Message),
        )


class Replica:
    """The records this process holds: of the keys it read, and under the prefixes it
    watches. Versions only go up (until a store reset).

    ``records`` is the newest of everything heard (what reads see); watchers are fed from
    the service's pushes alone (:meth:`take`), which come in the order the changes were
    made, so that an answer overtaking a push (:meth:`learn`) never makes them skip one."""

    def __init__(self) -> None:
        self.records: dict[str, Record] = {}
        self.keys: set[str] = set()  # subscribed one by one
        self.prefixes: dict[str, int] = {}  # watched: how many watchers each
        self.watchers: list[Watcher] = []
        self._fed: dict[str, int] = {}  # per key, the newest version given to watchers
        self._decoded: dict[str, tuple[int, Message]] = {}

    def keeps(self, key: str) -> bool:
        return key in self.keys or any(key.startswith(p) for p in self.prefixes)

    def learn(self, record: Record) -> bool:
        """Take ``record`` for reads if it is newer than what is held (and wanted here):
        an answer (a write's own record, a read, a sync), which watchers do not see."""
        current = self.records.get(record.key)
        if current is not None and current.version >= record.version:
            return False
        if current is None and not self.keeps(record.key):
            return False
        self.records[record.key] = record
        return True

    def take(self, record: Record) -> None:
        """A change pushed by the service (in order, per key): for reads and watchers."""
        self.learn(record)
        key = record.key
        if record.version <= self._fed.get(key, 0) or not self.keeps(key):
            return
        self._fed[key] = record.version
        for watcher in self.watchers:
            if key.startswith(watcher.prefix):
                watcher.push(record)

    def start(self, records: list[Record]) -> dict[str, int]:
        """Records a watch starts from: learnt, and not changes to feed anyone later."""
        versions = {}
        for record in records:
            self.learn(record)
            key = record.key
            if record.version > self._fed.get(key, 0):
                self._fed[key] = record.version
            versions[key] = record.version
        return versions

    def subscribe(self, key: str, records: list[Record]) -> None:
        self.keys.add(key)
        for record in records:
            self.learn(record)

    def resync(self, prefixes: list[str], records: list[Record], *, reset: bool = False
               ) -> None:
        """Take the current records; watchers of ``prefixes`` are told to start over (all of
        them after a reset, when what was held before is dropped first)."""
        if reset:
            self.records.clear()
            self._fed.clear()
            self._decoded.clear()
        self.start(records)
        for watcher in self.watchers:
            if reset or any(watcher.prefix.startswith(p) or p.startswith(watcher.prefix)
                            for p in prefixes):
                watcher.resynced()

    def decode(self, record: Record, kind: type[M]) -> M:
        cached = self._decoded.get(record.key)
        if cached is not None and cached[0] == record.version:
            value = cached[1]
            if type(value) is kind:
                return value
        else:
            if record.tag == TOO_LARGE:
                raise InvalidStoredValue(record.key, "is too large for this system's frame "
                                         "limit (another system wrote it)")
            try:
                value = registry.decode(record.tag, record.body or b"")
            except ProtocolError as exc:
                raise InvalidStoredValue(record.key, f"cannot be read: {exc}") from exc
            self._decoded[record.key] = (record.version, value)
        if not isinstance(value, kind):
            raise InvalidStoredValue(
                record.key, f"is a {type(value).__qualname__}, not a {kind.__qualname__}"
            )
        return value


