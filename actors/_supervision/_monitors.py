"""Monitors: an actor (or the master) is told when another actor's instance ends.

The master's :class:`Monitors` keeps every monitor of the system: every instance's end
reaches the master's events (from any worker, and for the instances of a worker that was
killed, from the process that saw its channel end), so it is the one place that hears of
them all. Actors ask it through its actor, ``@monitors`` (:class:`MonitorsActor`), with
:class:`Monitor` and :class:`Demonitor`; the master's own code watches through
:meth:`Monitors.watch`. A monitor is on an instance (an address): a ref by path is resolved
when the monitor is made, so a restart of that path fires it, and the next instance is
watched only if asked again, as in OTP. It fires once, and goes.
"""

from __future__ import annotations

import itertools
import logging
from collections import OrderedDict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import trio

from .._base._actor import Actor, handler
from .._base._errors import ActorError
from .._base._events import (
    ActorDown,
    ActorExited,
    Demonitor,
    EventBus,
    ExitReason,
    Monitor,
    Monitoring,
)
from .._base._ref import ActorRef
from .._messaging._router import Router

__all__ = ["SERVICE", "Monitors", "MonitorsActor"]

log = logging.getLogger("actors")

SERVICE = "@monitors"
"""The name of the master's monitors' actor."""

_GONE_KEPT = 4096  # addresses of ended instances remembered, for a monitor made just after


@dataclass(frozen=True)
class _Watch:
    id: str
    target: ActorRef  # as the watcher gave it (ActorDown carries it back)
    address: str
    watcher: ActorRef | trio.MemorySendChannel[ActorDown]


class Monitors:
    """Every monitor of the system, in the master: started with ``nursery.start(run)``,
    which follows the system's events until cancelled."""

    def __init__(self, router: Router, events: EventBus) -> None:
        self.router = router
        self._events = events.subscribe(unbounded=True)
        self._ids = itertools.count(1)
        self._by_address: dict[str, dict[str, _Watch]] = {}  # watched address -> monitors
        self._by_id: dict[str, _Watch] = {}
        self._of_watcher: dict[str, set[str]] = {}  # a watcher's address -> its monitors
        self._gone: OrderedDict[str, ActorExited] = OrderedDict()
        self._nursery: trio.Nursery

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery  # where ActorDown messages are sent from
            task_status.started()
            with self._events:
                async for event in self._events:
                    if isinstance(event, ActorExited) and event.address is not None:
                        self._ended(event)
            nursery.cancel_scope.cancel()

    def add(self, watcher: ActorRef | trio.MemorySendChannel[ActorDown], target: ActorRef
            ) -> str:
        """Watch ``target``'s instance for ``watcher``; the monitor's id. A target that is
        gone (or never was) is told at once (``noproc``)."""
        monitor = str(next(self._ids))
        # (the names themselves: a pool's path would give one of its members, in turn)
        address = target.address or self.router.names.names.get(target.path or "")
        if address is None or address in self._gone or (
                address not in self.router.names.names.values()):
            gone = None if address is None else self._gone.get(address)
            if gone is None:
                self._tell(watcher, ActorDown(ref=target, reason="noproc"))
            else:  # it ended just now: that is news, not a miss
                self._tell(watcher, ActorDown(ref=target, reason=gone.reason.kind,
                                              exit=gone.reason))
            return monitor
        watch = _Watch(monitor, target, address, watcher)
        self._by_address.setdefault(address, {})[monitor] = watch
        self._by_id[monitor] = watch
        if isinstance(watcher, ActorRef) and watcher.address is not None:
            self._of_watcher.setdefault(watcher.address, set()).add(monitor)
        return monitor

    def remove(self, monitor: str) -> None:
        """Forget monitor ``monitor`` (nothing happens if it fired, or is unknown)."""
        watch = self._by_id.pop(monitor, None)
        if watch is None:
            return
        watched = self._by_address.get(watch.address)
        if watched is not None:
            watched.pop(monitor, None)
            if not watched:
                del self._by_address[watch.address]
        if isinstance(watch.watcher, ActorRef) and watch.watcher.address is not None:
            mine = self._of_watcher.get(watch.watcher.address)
            if mine is not None:
                mine.discard(monitor)
                if not mine:
                    del self._of_watcher[watch.watcher.address]

    @asynccontextmanager
    async def watch(self, target: ActorRef) -> AsyncIterator[trio.MemoryReceiveChannel[ActorDown]]:
        """``system.monitor``: a channel that gets the :class:`ActorDown` of ``target``'s
        instance (once); the monitor is removed as the block ends."""
        send, receive = trio.open_memory_channel[ActorDown](1)
        monitor = self.add(send, target)
        try:
            with receive:
                yield receive
        finally:
            self.remove(monitor)
            send.close()

    def _ended(self, event: ActorExited) -> None:
        address = event.address
        assert address is not None
        self._gone[address] = event
        if len(self._gone) > _GONE_KEPT:
            self._gone.popitem(last=False)
        self.down(address, event.reason.kind, event.reason)

    def down(self, address: str, reason: str, exit: ExitReason | None = None) -> None:
        """The instance at ``address`` is gone (or cannot be watched any more: a node that
        went down, ``nodedown``): its watchers are told, and its own monitors go."""
        for monitor in list(self._of_watcher.get(address, ())):
            self.remove(monitor)  # a watcher that ended watches nothing any more
        for watch in list(self._by_address.get(address, {}).values()):
            self.remove(watch.id)
            self._tell(watch.watcher, ActorDown(ref=watch.target, reason=reason, exit=exit))

    def _tell(self, watcher: ActorRef | trio.MemorySendChannel[ActorDown], down: ActorDown
              ) -> None:
        if isinstance(watcher, ActorRef):
            # In a task of its own: a watcher whose mailbox is full holds up nobody else.
            self._nursery.start_soon(_send, watcher, down)
        else:
            try:
                watcher.send_nowait(down)
            except (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
                pass  # (it holds the one ActorDown it gets, or stopped reading)


async def _send(watcher: ActorRef, down: ActorDown) -> None:
    try:
        await watcher.tell(down)
    except ActorError as exc:
        log.debug("ActorDown for %s not delivered: %s", watcher, exc)  # the watcher went


class MonitorsActor(Actor):
    """The master's monitors as an actor (``@monitors``): what ``ctx.monitor`` asks."""

    def __init__(self, monitors: Monitors) -> None:
        self.monitors = monitors

    @handler
    async def monitor(self, message: Monitor) -> Monitoring:
        return Monitoring(id=self.monitors.add(message.watcher, message.target))

    @handler
    async def demonitor(self, message: Demonitor) -> None:
        self.monitors.remove(message.id)
