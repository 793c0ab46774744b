"""The shared state's API (``system.state``, ``ctx.state``): a replica, and the upstream its
reads and writes go to (the master's service, in the master or over the channels).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TypeVar

import trio

from protocol import FrameTooLarge, Message

from .._base._shared import Entry, check_key
from ._replica import Replica, Watcher
from ._store import Record
from ._wire import ENVELOPE, page_budget, travel_size

__all__ = [
    "SharedState",
    "Upstream",
]

M = TypeVar("M", bound=Message)


class Upstream:
    """Where a process's reads and writes go: the master's service (see the two below)."""

    async def read(self, key: str, replica: Replica) -> list[Record]:
        raise NotImplementedError

    async def watch(self, prefix: str, replica: Replica) -> list[Record]:
        raise NotImplementedError

    async def write(self, key: str, tag: str, body: bytes | None, expect: int | None,
                    replica: Replica) -> Record | None:
        raise NotImplementedError

    async def sync(self, replica: Replica) -> list[Record]:
        raise NotImplementedError
class SharedState:
    """Typed shared state (the :class:`actors.State` interface): ``system.state`` in the
    master, ``self.ctx.state`` in any actor of any process.

    Keys are 1 to 512 bytes (letters, digits, ``. _ : / @ + = -``); values are Messages,
    stored with their tag, at most the system's frame size less 16 KiB (what may travel in
    one frame). Versions are integers that increase per key, across deletes (a store that
    lost its data is the exception, announced by :class:`StoreReset`). Reads come from this
    process's replica once it holds the key; while the store is unreachable writes raise
    :class:`StoreUnavailable` (within ``store_timeout``; such a write is in doubt) and
    reads are served from the replica, possibly stale.
    """

    def __init__(self, upstream: Upstream, replica: Replica, *, max_size: int) -> None:
        self._upstream = upstream
        self._replica = replica
        self._max_size = max_size
        self._hits = 0

    async def put(self, key: str, value: Message) -> int:
        """Write ``value`` under ``key``; the version written."""
        written = await self._write(key, value, None)
        assert written is not None  # an unconditional write always writes
        return written.version

    async def get(self, key: str, kind: type[M]) -> M | None:
        """The value under ``key``, checked to be a ``kind``; None if there is none."""
        replica = self._replica
        if type(key) is str and key in replica.keys:  # the hot path of _held, inlined
            self._hits += 1
            if self._hits & 31:
                await trio.lowlevel.checkpoint_if_cancelled()
            else:
                await trio.lowlevel.checkpoint()
            record = replica.records.get(key)
        else:
            record = await self._held(key)
        if record is None or record.deleted:
            return None
        return replica.decode(record, kind)

    async def entry(self, key: str, kind: type[M]) -> Entry[M] | None:
        """The value under ``key`` and its version; None if there is none."""
        record = await self._held(key)
        if record is None or record.deleted:
            return None
        return Entry(self._replica.decode(record, kind), record.version)

    async def _held(self, key: str) -> Record | None:
        """The replica's record of ``key``, once it holds it (asking upstream at first).

        A key read before is served from here without IPC, and without a full trio
        checkpoint each time: a hit is a cancellation point, and every 32nd hit a
        scheduling point too, so a loop of reads neither ignores a cancellation nor
        starves the other tasks, at a third of the cost."""
        replica = self._replica
        if type(key) is str and key in replica.keys:  # (checked when it was first read)
            self._hits += 1
            if self._hits & 31:
                await trio.lowlevel.checkpoint_if_cancelled()
            else:
                await trio.lowlevel.checkpoint()
        else:
            check_key(key)
            if replica.keeps(key):
                await trio.lowlevel.checkpoint()  # held here: no IPC
            else:
                replica.subscribe(key, await self._upstream.read(key, replica))
        return replica.records.get(key)

    async def compare_and_set(self, key: str, value: Message, *, version: int) -> int | None:
        """Write ``value`` only if ``key`` is at ``version`` (0: only if it has no value);
        the version written, or None if another write came first."""
        if isinstance(version, bool) or not isinstance(version, int) or version < 0:
            raise ValueError(f"version must be an int >= 0, not {version!r}")
        written = await self._write(key, value, version)
        return None if written is None else written.version

    async def delete(self, key: str) -> int | None:
        """Delete ``key``; the version of the deletion, or None if it had no value."""
        check_key(key)
        written = await self._upstream.write(key, "", None, None, self._replica)
        if written is not None:
            self._replica.learn(written)
        return None if written is None else written.version

    @asynccontextmanager
    async def watch(self, prefix: str) -> AsyncIterator[Watcher]:
        """Every change under ``prefix`` (``""``: every key), as :class:`StateChanged`, in
        version order per key; or, after falling behind (or a store outage), one
        :class:`StateResynced` followed by the current value of each key under it.

        A value that cannot be read (another program's, an older schema) raises
        :class:`InvalidStoredValue` from that one iteration; iterating again goes on.
        """
        if prefix:
            check_key(prefix)
        replica = self._replica
        watcher = Watcher(replica, prefix)
        replica.prefixes[prefix] = replica.prefixes.get(prefix, 0) + 1
        replica.watchers.append(watcher)
        try:
            # What it was fed before the answer, up to the versions the answer starts from,
            # is not a change to it (newer pushes that came meanwhile are).
            watcher.start_at(replica.start(await self._upstream.watch(prefix, replica)))
            yield watcher
        finally:
            replica.watchers.remove(watcher)
            replica.prefixes[prefix] -= 1
            if not replica.prefixes[prefix]:
                del replica.prefixes[prefix]

    async def sync(self) -> None:
        """Return once this process's replica is at least as new as the store was when
        ``sync`` was called."""
        for record in await self._upstream.sync(self._replica):
            self._replica.learn(record)

    async def _write(self, key: str, value: Message, expect: int | None) -> Record | None:
        check_key(key)
        if not isinstance(value, Message):
            raise TypeError(f"a state value is a Message, not {type(value).__qualname__}")
        body = type(value).__pydantic_serializer__.to_json(value)
        # Refused here if it could not travel to every replica in one frame.
        size = travel_size(Record(key=key, version=0, tag=value.message_tag, body=body))
        if size > page_budget(self._max_size):
            raise FrameTooLarge(size + ENVELOPE, self._max_size)
        written = await self._upstream.write(key, value.message_tag, body, expect, self._replica)
        if written is not None:
            self._replica.learn(written)  # read-your-writes, whatever the pushes do
        return written


