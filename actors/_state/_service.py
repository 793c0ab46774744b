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

import logging
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import trio

from .._base._errors import (
    ActorError,
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
from .._messaging._router import Router
from ._api import Upstream
from ._replica import Replica
from ._store import Disconnected, EpochChanged, Reconnected, Record, Reset, Store
from ._wire import Records, Resync, fit, page_budget, pages, travel_size

__all__ = [
    "LocalUpstream",
    "StateService",
    "explains",
]

log = logging.getLogger("actors.state")

_PUSH_BUFFER = 4096  # records queued for one process before it is resynced instead


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
    dropped: bool = False  # its process ended: its push task ends too
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
            found = self._remote[replica] = _Subscriber(
                ref=ActorRef(self.router.outbox, address=replica)
            )
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
        elif expect is not None and not explains(self._cache.get(key), expect):
            # Another write came first, one this service has not seen (another system's):
            # learn what is there now, so that the writer's retry starts from it.
            current = await self._guard("a read", self.store.read(key))
            if current is not None:
                self._changed(current)
        return record

    def current(self, key: str) -> Record | None:
        """The newest record of ``key`` this service knows."""
        return self._cache.get(key)

    async def resubscribe(self, replica: str, keys: list[str], prefixes: list[str]) -> None:
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
                if subscriber.dropped:
                    return
                if subscriber.behind:
                    reset, subscriber.reset = subscriber.reset, False
                    subscriber.behind = False
                    queue.clear()
                    prefixes = sorted(subscriber.prefixes)
                    parts = list(pages(self.wanted(subscriber), budget))
                    for n, page in enumerate(parts):
                        await ref.tell(Resync(prefixes=prefixes, records=page, reset=reset,
                                              more=n < len(parts) - 1))
                    continue
                batch: list[Record] = []
                size = 0
                while queue:
                    record = fit(queue[0], budget)
                    took = travel_size(record)
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
            self._follow_exit(event)
            # All that is queued, at once: spawns publish two events a scheduling pass,
            # and a follower reading one a pass would fall behind and be let go.
            while True:
                try:
                    self._follow_exit(events.receive_nowait())
                except trio.WouldBlock:
                    break
                except trio.EndOfChannel:
                    return

    def _follow_exit(self, event: Event) -> None:
        if isinstance(event, ActorExited) and event.node:
            node = event.node
            for address, subscriber in list(self._remote.items()):
                gone = subscriber.node
                if gone == node or gone.startswith(node + "."):
                    del self._remote[address]
                    subscriber.dropped = True
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


def explains(known: Record | None, expect: int) -> bool:
    """Whether ``known`` is a reason for a compare_and_set at ``expect`` to fail."""
    if known is None:
        return False
    if expect == 0:
        return not known.deleted
    return known.version != expect


