"""Shared state (状态共享): one typed API in every process, replicas pushed from the master.

The seeds' answer to state every worker must see is a store plus a notification process
that polls it and tells the workers. Here the master is that process, pushing instead of
polling:

- the master's :class:`StateService` alone talks to the store (one connection, one
  subscription for Redis); it knows which process holds a replica of which key or prefix,
  and pushes every change to them over the channels the runtime already has;
- every process has a :class:`Replica` of the keys it read and the prefixes it watches,
  so a repeated read costs no IPC; a worker's replica is updated by the task that reads
  its channel (inline), so it is never behind a reply that came after a change;
- :class:`SharedState` is the API (``system.state``, ``ctx.state``) over both.

Guarantees: read-your-writes in a process (a write's answer carries the record written);
per key, versions only go up in every replica (but for a store that lost its data, which
is announced: :class:`StoreReset`); a watcher gets every change under its prefix in version
order, or a :class:`StateResynced` marker followed by the current value of every key under
the prefix; ``sync()`` brings the replica up to the store's state.

Two streams reach a worker's replica, and only one of them feeds its watchers: the
service's pushes, in the order the changes happened (per key), and the answers to the
worker's own requests, which may overtake pushes still on their way (a write's own record,
say). Answers update what reads see; watchers are fed from the pushes alone, so an answer
never makes a watcher skip a version. Nothing sent is larger than a frame, whatever the
data: pushes, resyncs and answers are split into pages.
"""

from __future__ import annotations

import bisect
import logging
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, TypeVar

import trio

from protocol import FrameTooLarge, Message, ProtocolError, registry

from .._base._actor import Actor, handler
from .._base._errors import (
    ActorError,
    InvalidStoredValue,
    RemoteError,
    StateError,
    StoreUnavailable,
)
from .._base._events import (
    ActorExited,
    Event,
    EventBus,
    StoreDisconnected,
    StoreReconnected,
    StoreReset,
)
from .._base._ref import ActorRef
from .._base._shared import Entry, StateChanged, StateResynced, check_key
from .._messaging._router import Router
from ._stores import Disconnected, EpochChanged, Reconnected, Record, Reset, Store

__all__ = [
    "RemoteUpstream",
    "Replica",
    "ReplicaActor",
    "SharedState",
    "StateService",
    "StateServiceActor",
    "page_budget",
]

log = logging.getLogger("actors.state")

M = TypeVar("M", bound=Message)

_WATCH_BUFFER = 1024  # changes a watcher may fall behind before it is resynced
_PUSH_BUFFER = 4096  # records queued for one process before it is resynced instead
_ENVELOPE = 16384  # a frame's bytes that are not records: header, route, tag, JSON around them
_TOO_LARGE = "actors.state.TooLarge"
"""The tag of a record that stands for one too large to travel in this system's frames
(another system with a larger frame limit wrote it): reading it is InvalidStoredValue."""


def page_budget(max_frame_size: int) -> int:
    """The bytes of records one frame may carry (what a value may take, too)."""
    return max(max_frame_size - _ENVELOPE, max_frame_size // 2)


def _travel_size(record: Record) -> int:
    """An upper bound of the bytes ``record`` takes in a frame's JSON (body as base64; a tag
    escaped at worst; keys have nothing to escape)."""
    body = 0 if record.body is None else (len(record.body) + 2) // 3 * 4
    return 96 + len(record.key) + 6 * len(record.tag) + body


def _fit(record: Record, budget: int) -> Record:
    """``record``, or a stand-in with its key and version if it cannot travel at all."""
    if _travel_size(record) <= budget:
        return record
    log.error("the value of %r (version %d) is too large for this system's frames: its "
              "readers get InvalidStoredValue", record.key, record.version)
    return Record(key=record.key, version=record.version, tag=_TOO_LARGE, body=b"")


def _pages(records: Iterable[Record], budget: int) -> Iterator[list[Record]]:
    """``records`` in lists that each fit in a frame (at least one list, maybe empty)."""
    page: list[Record] = []
    size = 0
    for record in records:
        record = _fit(record, budget)
        took = _travel_size(record)
        if page and size + took > budget:
            yield page
            page, size = [], 0
        page.append(record)
        size += took
    yield page


def _page_after(records: list[Record], after: str | None, budget: int
                ) -> tuple[list[Record], str | None]:
    """The page of ``records`` (sorted by key) that follows the key ``after``, and the key
    to ask the next one after (None: this was the last)."""
    keys = [r.key for r in records]
    start = 0 if after is None else bisect.bisect_right(keys, after)
    page = next(_pages(records[start:], budget))
    if start + len(page) >= len(records):
        return page, None
    return page, page[-1].key


# -- what replicas and the service say to each other -----------------------------------------


class ReadKey(Message, tag="actors.state.ReadKey"):
    """Subscribe ``replica`` to ``key``; answered with the key's records."""

    key: str
    replica: str


class WatchPrefix(Message, tag="actors.state.WatchPrefix"):
    """Subscribe ``replica`` to every key under ``prefix`` (when ``after`` is None); answered
    with a Page of their records, the page after the key ``after`` otherwise."""

    prefix: str
    replica: str
    after: str | None = None


class Write(Message, tag="actors.state.Write"):
    """Write (``body`` None: delete) with ``expect`` as :meth:`Store.write`."""

    key: str
    tag: str
    body: bytes | None
    expect: int | None


class Hold(Message, tag="actors.state.Hold"):
    """``replica`` holds these keys and prefixes: subscribe it to any the service lost (it
    is then resynced). Part of a sync."""

    replica: str
    keys: list[str] = []
    prefixes: list[str] = []


class Sync(Message, tag="actors.state.Sync"):
    """Answered (in pages: ``after`` as for WatchPrefix) once everything the store had when
    it was asked is in the answer."""

    replica: str
    after: str | None = None


class Records(Message, tag="actors.state.Records"):
    """Records (an answer, or a push); ``written``: a write's own record (None if it did
    not happen)."""

    records: list[Record] = []
    written: Record | None = None


class Page(Message, tag="actors.state.Page"):
    """One page of an answer; ``after`` is the key to ask the next page after (None: the
    last page)."""

    records: list[Record]
    after: str | None = None


class Resync(Message, tag="actors.state.Resync"):
    """To a replica that may have missed changes: the current records of its keys and
    prefixes (watchers of those prefixes get a StateResynced marker first). Sent in parts:
    ``more`` on all but the last. ``reset``: the store lost its data, and what the replica
    held before is meaningless (versions started again)."""

    prefixes: list[str]
    records: list[Record]
    more: bool = False
    reset: bool = False


class Failed(Message, tag="actors.state.Failed"):
    """A state request failed: ``kind`` names the StateError to raise."""

    kind: Literal["unavailable", "invalid"]
    message: str


# -- a process's replica -------------------------------------------------------------------------


class _Watcher:
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

    def __aiter__(self) -> _Watcher:
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
        self.watchers: list[_Watcher] = []
        self._fed: dict[str, int] = {}  # per key, the newest version given to watchers
        self._decoded: dict[str, tuple[int, Message]] = {}

    def holds(self, key: str) -> bool:
        return key in self.keys or any(key.startswith(p) for p in self.prefixes)

    def learn(self, record: Record) -> bool:
        """Take ``record`` for reads if it is newer than what is held (and wanted here):
        an answer (a write's own record, a read, a sync), which watchers do not see."""
        current = self.records.get(record.key)
        if current is not None and current.version >= record.version:
            return False
        if current is None and not self.holds(record.key):
            return False
        self.records[record.key] = record
        return True

    def take(self, record: Record) -> None:
        """A change pushed by the service (in order, per key): for reads and watchers."""
        self.learn(record)
        key = record.key
        if record.version <= self._fed.get(key, 0) or not self.holds(key):
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
            if record.tag == _TOO_LARGE:
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


# -- the API -------------------------------------------------------------------------------------


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
            if replica.holds(key):
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
    async def watch(self, prefix: str) -> AsyncIterator[_Watcher]:
        """Every change under ``prefix`` (``""``: every key), as :class:`StateChanged`, in
        version order per key; or, after falling behind (or a store outage), one
        :class:`StateResynced` followed by the current value of each key under it.

        A value that cannot be read (another program's, an older schema) raises
        :class:`InvalidStoredValue` from that one iteration; iterating again goes on.
        """
        if prefix:
            check_key(prefix)
        replica = self._replica
        watcher = _Watcher(replica, prefix)
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
        size = _travel_size(Record(key=key, version=0, tag=value.message_tag, body=body))
        if size > page_budget(self._max_size):
            raise FrameTooLarge(size + _ENVELOPE, self._max_size)
        written = await self._upstream.write(key, value.message_tag, body, expect, self._replica)
        if written is not None:
            self._replica.learn(written)  # read-your-writes, whatever the pushes do
        return written


# -- the master's service ------------------------------------------------------------------------


@dataclass(eq=False)
class _Subscriber:
    """A process holding a replica: the master's own, or a worker's (``ref``)."""

    replica: Replica | None = None
    ref: ActorRef | None = None
    keys: set[str] = field(default_factory=set)
    prefixes: set[str] = field(default_factory=set)
    queue: deque[Record] = field(default_factory=deque)
    behind: bool = False  # it gets a Resync instead of what it missed
    reset: bool = False  # ... and that Resync drops what it held (the store lost its data)
    wake: trio.Event = field(default_factory=trio.Event)

    @property
    def node(self) -> str:
        return "" if self.ref is None or self.ref.address is None else (
            self.ref.address.partition("/")[0]
        )

    def wants(self, key: str) -> bool:
        return key in self.keys or any(key.startswith(p) for p in self.prefixes)


class StateService:
    """The master's side: the store, who holds which key, and the pushes to them."""

    def __init__(
        self, router: Router, store: Store, *, timeout: float, events: EventBus | None = None
    ) -> None:
        self.router = router
        self.store = store
        self.timeout = timeout
        self.events = events
        self.budget = page_budget(router.max_frame_size)
        self.local = Replica()
        self._local = _Subscriber(replica=self.local)
        self._remote: dict[str, _Subscriber] = {}  # by replica address
        self._cache: dict[str, Record] = {}
        self._complete: set[str] = set()  # prefixes whose every key is in the cache
        self._up = True
        self._down_since = 0.0
        self._epoch: str | None = None  # the store's epoch this service started over at
        self._pending_reset: str | None = None  # a reset that could not finish (store away)
        self._resetting = trio.Lock()
        self.nursery: trio.Nursery | None = None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Follow the store's own changes and the system's exits, until cancelled."""
        async with trio.open_nursery() as nursery:
            self.nursery = nursery
            nursery.start_soon(self._follow_store)
            if self.events is not None:
                nursery.start_soon(self._follow_exits, self.events.subscribe())
            task_status.started()
            await trio.sleep_forever()

    # -- requests (from the master's own client, or from a worker's replica) --------------------

    def _subscriber(self, replica: str | Replica) -> _Subscriber:
        if isinstance(replica, Replica):
            return self._local
        found = self._remote.get(replica)
        if found is None:
            found = self._remote[replica] = _Subscriber(ref=ActorRef(self.router,
                                                                     address=replica))
            assert self.nursery is not None
            self.nursery.start_soon(self._push_to, found)
        return found

    async def _guard(self, what: str, operation: Any) -> Any:
        try:
            with trio.fail_after(self.timeout):
                return await operation
        except trio.TooSlowError:
            raise StoreUnavailable(
                f"the store {self.store.name} did not answer {what} within {self.timeout} s"
            ) from None

    async def read(self, key: str, replica: str | Replica) -> list[Record]:
        subscriber = self._subscriber(replica)
        subscriber.keys.add(key)
        record = await self._cached(key)
        return [] if record is None else [record]

    async def _cached(self, key: str) -> Record | None:
        """The newest record of ``key``, read from the store if the cache cannot say."""
        record = self._cache.get(key)
        if record is None and not any(key.startswith(p) for p in self._complete):
            record = await self._guard("a read", self.store.read(key))
            if record is not None:
                self._learn(record)
        return record

    async def watch(self, prefix: str, replica: str | Replica) -> list[Record]:
        """Subscribe ``replica`` to ``prefix``: every record under it, sorted by key."""
        subscriber = self._subscriber(replica)
        await self._complete_prefix(prefix)
        subscriber.prefixes.add(prefix)
        return self.held_under(prefix)

    async def _complete_prefix(self, prefix: str) -> None:
        if not any(prefix.startswith(p) for p in self._complete):
            for record in await self._guard("a read", self.store.read_prefix(prefix)):
                self._learn(record)
            self._complete.add(prefix)

    def held_under(self, prefix: str) -> list[Record]:
        """The cached records under ``prefix``, sorted by key."""
        return sorted((r for k, r in self._cache.items() if k.startswith(prefix)),
                      key=lambda r: r.key)

    async def write(self, key: str, tag: str, body: bytes | None, expect: int | None
                    ) -> Record | None:
        write = self.store.write
        try:
            record: Record | None = await self._guard("a write", write(key, tag, body,
                                                                        expect=expect))
        except EpochChanged as exc:
            # The store lost its data: nothing was written. Start over from what it holds,
            # then write (what this write expected is judged against that).
            await self._reset(exc.epoch)
            try:
                record = await self._guard("a write", write(key, tag, body, expect=expect))
            except EpochChanged:
                raise StoreUnavailable(
                    f"the store {self.store.name} keeps losing its data: the write was not made"
                ) from None
        if record is not None:
            self._changed(record)
        elif expect is not None and not _explains(self._cache.get(key), expect):
            # Another write came first, one this service has not seen (another system's):
            # learn what is there now, so that the writer's retry starts from it.
            current = await self._guard("a read", self.store.read(key))
            if current is not None:
                self._changed(current)
        return record

    def current(self, key: str) -> Record | None:
        """The newest record of ``key`` this service knows."""
        return self._cache.get(key)

    async def hold(self, replica: str, keys: list[str], prefixes: list[str]) -> None:
        """``replica`` holds ``keys`` and ``prefixes``: subscribe it again to any this
        service does not know it holds (lost: it may have missed changes, so it is
        resynced)."""
        subscriber = self._subscriber(replica)
        lost_keys = set(keys) - subscriber.keys
        lost_prefixes = set(prefixes) - subscriber.prefixes
        for prefix in lost_prefixes:
            await self._complete_prefix(prefix)
        for key in lost_keys:
            await self._cached(key)
        subscriber.keys |= lost_keys
        subscriber.prefixes |= lost_prefixes
        if lost_keys or lost_prefixes:
            log.warning("state replica %s had lost %d key(s) and %d prefix(es): resubscribed "
                        "and resynced", replica, len(lost_keys), len(lost_prefixes))
            subscriber.behind = True
            subscriber.wake.set()

    async def sync(self, replica: str | Replica) -> list[Record]:
        """What ``replica`` holds, at least as new as the store is now (sorted by key)."""
        subscriber = self._subscriber(replica)
        if self.store.shared:
            # Others write there too: read what it holds now (after a look at its epoch:
            # emptied since, it is started over from instead).
            try:
                await self._guard("a read", self.store.check())
            except EpochChanged as exc:
                await self._reset(exc.epoch)
            await self._refresh()
        return self.wanted(subscriber)

    def wanted(self, subscriber: str | Replica | _Subscriber) -> list[Record]:
        """The cached records a subscriber holds, sorted by key."""
        if not isinstance(subscriber, _Subscriber):
            subscriber = self._subscriber(subscriber)
        return sorted((r for k, r in self._cache.items() if subscriber.wants(k)),
                      key=lambda r: r.key)

    # -- changes ---------------------------------------------------------------------------

    def _learn(self, record: Record) -> bool:
        current = self._cache.get(record.key)
        if current is not None and current.version >= record.version:
            return False
        self._cache[record.key] = record
        return True

    def _changed(self, record: Record) -> None:
        """A change (ours, or another system's): to the cache, and to whoever holds it."""
        if not self._learn(record):
            return
        self.local.take(record)
        for subscriber in self._remote.values():
            if subscriber.wants(record.key) and not subscriber.behind:
                if len(subscriber.queue) >= _PUSH_BUFFER:
                    subscriber.queue.clear()
                    subscriber.behind = True  # it will be resynced instead
                else:
                    subscriber.queue.append(record)
                subscriber.wake.set()

    async def _push_to(self, subscriber: _Subscriber) -> None:
        """Send one process its changes, in pages that fit in a frame; a process that
        cannot keep up (or that was away) gets a Resync instead of what it missed."""
        ref = subscriber.ref
        assert ref is not None
        queue = subscriber.queue
        budget = self.budget
        try:
            while True:
                if not queue and not subscriber.behind:
                    subscriber.wake = trio.Event()
                    await subscriber.wake.wait()
                if subscriber.behind:
                    reset, subscriber.reset = subscriber.reset, False
                    subscriber.behind = False
                    queue.clear()
                    prefixes = sorted(subscriber.prefixes)
                    pages = list(_pages(self.wanted(subscriber), budget))
                    for n, page in enumerate(pages):
                        await ref.tell(Resync(prefixes=prefixes, records=page, reset=reset,
                                              more=n < len(pages) - 1))
                    continue
                batch: list[Record] = []
                size = 0
                while queue:
                    record = _fit(queue[0], budget)
                    took = _travel_size(record)
                    if batch and size + took > budget:
                        break
                    batch.append(record)
                    size += took
                    queue.popleft()
                await ref.tell(Records(records=batch))
        except ActorError:
            pass  # the process is gone: so are its subscriptions
        finally:
            if self._remote.get(ref.address or "") is subscriber:
                del self._remote[ref.address or ""]

    async def _refresh(self) -> None:
        """Read again what is cached (a reconnection, a sync): newer records are changes."""
        for record in await self._read_again(sorted(self._complete), list(self._cache)):
            self._changed(record)

    async def _read_again(self, prefixes: list[str], keys: list[str]) -> list[Record]:
        """The store's records under ``prefixes`` and of ``keys`` (those not under them)."""
        keys = [k for k in keys if not any(k.startswith(p) for p in prefixes)]
        fresh: list[Record] = []
        for prefix in prefixes:
            fresh.extend(await self._guard("a read", self.store.read_prefix(prefix)))
        for key in keys:
            record = await self._guard("a read", self.store.read(key))
            if record is not None:
                fresh.append(record)
        return fresh

    async def _reset(self, epoch: str) -> None:
        """The store lost its data (it is at ``epoch`` now): every version known is
        meaningless. Read what it holds now, and start every replica over from that."""
        async with self._resetting:
            if epoch == self._epoch:
                return  # started over already (the write that found it, or the store)
            subscribers = [self._local, *self._remote.values()]
            prefixes = sorted(self._complete.union(*(s.prefixes for s in subscribers)))
            keys = sorted(set(self._cache).union(*(s.keys for s in subscribers)))
            try:
                fresh = await self._read_again(prefixes, keys)
            except StoreUnavailable as exc:
                log.error("starting over from %s failed: %s", self.store.name, exc)
                self._pending_reset = epoch  # done when it is back
                return
            self._epoch = epoch
            self._pending_reset = None
            self._cache = {r.key: r for r in fresh}
            self._complete = set(prefixes)
            self.local.resync([], [r for r in fresh if self._local.wants(r.key)], reset=True)
            for subscriber in self._remote.values():
                subscriber.queue.clear()
                subscriber.behind = subscriber.reset = True
                subscriber.wake.set()
            self.router.publish(StoreReset(
                path="state", store=self.store.name,
                detail=f"it is at a new epoch ({epoch}); versions started again",
            ))
            self._back()

    def _back(self) -> None:
        was_down = not self._up
        self._up = True
        if was_down:
            self.router.publish(StoreReconnected(
                path="state", store=self.store.name,
                down_for=round(trio.current_time() - self._down_since, 3),
            ))

    async def _follow_store(self) -> None:
        async for change in self.store.changes():
            if isinstance(change, Record):
                self._changed(change)
            elif isinstance(change, Disconnected):
                if self._up:
                    self._up = False
                    self._down_since = trio.current_time()
                    self.router.publish(StoreDisconnected(
                        path="state", store=self.store.name, error=change.error
                    ))
            elif isinstance(change, Reset):
                await self._reset(change.epoch)
            elif isinstance(change, Reconnected):
                await self._reconnected()

    async def _reconnected(self) -> None:
        if self._pending_reset is not None:
            await self._reset(self._pending_reset)
            return
        try:
            await self._refresh()
        except StoreUnavailable as exc:
            log.error("resynchronising with %s failed: %s", self.store.name, exc)
            return  # the next Reconnected tries again
        # Whatever was missed while away: every watcher starts over from current values.
        self.local.resync(list(self.local.prefixes), [])
        for subscriber in self._remote.values():
            subscriber.behind = True
            subscriber.wake.set()
        self._back()

    async def _follow_exits(self, events: trio.MemoryReceiveChannel[Event]) -> None:
        """Forget the subscriptions of worker processes that ended (and of the processes
        below them). Only a process's end says so: an actor that ends inside a process
        (the master's, or a worker's) leaves that process's replica subscribed."""
        async for event in events:
            if isinstance(event, ActorExited) and event.node:
                node = event.node
                for address, subscriber in list(self._remote.items()):
                    gone = subscriber.node
                    if gone == node or gone.startswith(node + "."):
                        del self._remote[address]
                        subscriber.wake.set()


class LocalUpstream(Upstream):
    """The master's own process: straight to the service."""

    def __init__(self, service: StateService) -> None:
        self._service = service

    async def read(self, key: str, replica: Replica) -> list[Record]:
        return await self._service.read(key, replica)

    async def watch(self, prefix: str, replica: Replica) -> list[Record]:
        return await self._service.watch(prefix, replica)

    async def write(self, key: str, tag: str, body: bytes | None, expect: int | None,
                    replica: Replica) -> Record | None:
        return await self._service.write(key, tag, body, expect)

    async def sync(self, replica: Replica) -> list[Record]:
        return await self._service.sync(replica)


def _explains(known: Record | None, expect: int) -> bool:
    """Whether ``known`` is a reason for a compare_and_set at ``expect`` to fail."""
    if known is None:
        return False
    if expect == 0:
        return not known.deleted
    return known.version != expect


class StateServiceActor(Actor):
    """The service as an actor of the master: workers' replicas ask it. Its answers are
    pages that fit in a frame, whatever the data."""

    mailbox_size: ClassVar[int] = 65536

    def __init__(self, service: StateService) -> None:
        self.service = service

    @staticmethod
    async def _answer(operation: Any) -> Any:
        """What ``operation`` returns, or the Failed that says why it did not."""
        try:
            return await operation
        except StoreUnavailable as exc:
            return Failed(kind="unavailable", message=str(exc))
        except StateError as exc:
            return Failed(kind="invalid", message=str(exc))

    def _page(self, records: list[Record] | Failed, after: str | None) -> Page | Failed:
        if isinstance(records, Failed):
            return records
        page, next_after = _page_after(records, after, self.service.budget)
        return Page(records=page, after=next_after)

    @handler
    async def read(self, msg: ReadKey) -> Records | Failed:
        found = await self._answer(self.service.read(msg.key, msg.replica))
        if isinstance(found, Failed):
            return found
        return Records(records=[_fit(r, self.service.budget) for r in found])

    @handler
    async def watch(self, msg: WatchPrefix) -> Page | Failed:
        if msg.after is None:
            return self._page(await self._answer(self.service.watch(msg.prefix, msg.replica)),
                              None)
        return self._page(self.service.held_under(msg.prefix), msg.after)

    @handler
    async def write(self, msg: Write) -> Records | Failed:
        written = await self._answer(
            self.service.write(msg.key, msg.tag, msg.body, msg.expect)
        )
        if isinstance(written, Failed):
            return written
        if written is None and msg.expect is not None:
            # A compare_and_set that lost: the answer brings the record it lost to, ahead of
            # the push, so that a retry does not lose again for want of it.
            current = self.service.current(msg.key)
            return Records(records=[] if current is None else [_fit(current,
                                                                    self.service.budget)])
        return Records(written=written)

    @handler
    async def hold(self, msg: Hold) -> Records | Failed:
        failed = await self._answer(self.service.hold(msg.replica, msg.keys, msg.prefixes))
        return failed if isinstance(failed, Failed) else Records()

    @handler
    async def sync(self, msg: Sync) -> Page | Failed:
        if msg.after is None:
            return self._page(await self._answer(self.service.sync(msg.replica)), None)
        return self._page(self.service.wanted(msg.replica), msg.after)


class ReplicaActor(Actor):
    """A worker's replica, as an actor: the service pushes to it. The pushes are taken by
    the task that reads the channel (inline), so they are in the replica before anything
    that came after them on the channel (the answer to a sync, say)."""

    __inline_handlers__: ClassVar[dict[type[Message], str]] = {
        Records: "_take_records",
        Resync: "_take_resync",
    }

    def __init__(self, replica: Replica) -> None:
        self.replica = replica
        self._resync: list[Record] = []  # the parts of a Resync received so far

    def _take_records(self, msg: Records) -> None:
        for record in msg.records:
            self.replica.take(record)

    def _take_resync(self, msg: Resync) -> None:
        self._resync.extend(msg.records)
        if msg.more:
            return  # taken whole, once the last part is here
        records, self._resync = self._resync, []
        self.replica.resync(msg.prefixes, records, reset=msg.reset)


class RemoteUpstream(Upstream):
    """A worker: asks to the master's service actor (answers larger than a frame come in
    pages)."""

    def __init__(self, service: ActorRef, replica_address: Callable[[], str],
                 max_frame_size: int) -> None:
        self._service = service
        self._address = replica_address
        self._budget = page_budget(max_frame_size)

    async def _ask(self, message: Message) -> Records | Page:
        try:
            reply = await self._service.ask(message)
        except RemoteError as exc:
            raise StateError(f"the state service failed: {exc.message}") from exc
        except ActorError as exc:
            raise StoreUnavailable(f"the state service cannot be reached: {exc}") from exc
        if isinstance(reply, Failed):
            if reply.kind == "unavailable":
                raise StoreUnavailable(reply.message)
            raise StateError(reply.message)
        if not isinstance(reply, Records | Page):
            raise StateError(f"the state service answered {reply!r}")
        return reply

    async def _pages(self, ask: Callable[[str | None], Message]) -> list[Record]:
        """Every page of an answer, asked one after the other."""
        records: list[Record] = []
        after: str | None = None
        while True:
            page = await self._ask(ask(after))
            records.extend(page.records)
            if not isinstance(page, Page) or page.after is None:
                return records
            after = page.after

    async def read(self, key: str, replica: Replica) -> list[Record]:
        return (await self._ask(ReadKey(key=key, replica=self._address()))).records

    async def watch(self, prefix: str, replica: Replica) -> list[Record]:
        address = self._address()
        return await self._pages(
            lambda after: WatchPrefix(prefix=prefix, replica=address, after=after)
        )

    async def write(self, key: str, tag: str, body: bytes | None, expect: int | None,
                    replica: Replica) -> Record | None:
        reply = await self._ask(Write(key=key, tag=tag, body=body, expect=expect))
        for record in reply.records:  # what a compare_and_set lost to
            replica.learn(record)
        return reply.written if isinstance(reply, Records) else None

    async def sync(self, replica: Replica) -> list[Record]:
        address = self._address()
        # First what it holds, so that whatever the service lost of it is subscribed again
        # (in parts that fit a frame: a key is at most 512 bytes).
        per_part = max(1, self._budget // 1024)
        keys = sorted(replica.keys)
        prefixes = sorted(replica.prefixes)
        for start in range(0, max(len(keys), len(prefixes), 1), per_part):
            await self._ask(Hold(replica=address, keys=keys[start:start + per_part],
                                 prefixes=prefixes[start:start + per_part]))
        return await self._pages(lambda after: Sync(replica=address, after=after))
