"""``Monitors``: actors of this node watching actors of other nodes, and the other way.

A watcher here watches a target there: a ``monitor`` entry goes to the target's node, which
answers with a ``down`` entry when the target exits (the kind of its exit reason), or at
once if it has no such actor (``noproc``). If the target's node leaves the cluster first,
this node fires the monitor itself (``nodedown``). Either way a monitor fires once: the
watcher is told :class:`ActorDown` here, by the node that holds the monitor, with the
target as the watcher named it. Each side forgets the monitors of a node that left.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass

import trio

from protocol import Message

from .._base._errors import ActorError
from .._base._events import ActorDown, ActorExited, EventBus, ExitReason
from .._base._ref import ActorRef
from .._messaging._names import NameRegistry
from ._membership import Membership
from ._sending import Sending

__all__ = ["Downed", "Monitors", "Unwatch", "Watch"]

log = logging.getLogger("actors.cluster")


class Watch(Message, tag="actors.cluster.Watch"):
    """A ``monitor`` entry's body: report to ``watcher``'s node when the target goes."""

    id: str
    watcher: ActorRef


class Unwatch(Message, tag="actors.cluster.Unwatch"):
    """A ``demonitor`` entry's body."""

    id: str


class Downed(Message, tag="actors.cluster.Downed"):
    """A ``down`` entry's body: the target of monitor ``id`` went (``reason``, ``exit``)."""

    id: str
    reason: str
    exit: ExitReason | None = None


@dataclass(frozen=True, slots=True)
class Watching:
    target: ActorRef  # on another node, as the watcher named it
    watcher: ActorRef  # on this node


class Monitors:
    """Monitors across nodes, as seen from node ``name``."""

    def __init__(self, membership: Membership, sending: Sending, names: NameRegistry,
                 nursery: trio.Nursery) -> None:
        self._prefix = f"{membership.name}:{membership.incarnation}:"
        self._ids = itertools.count(1)
        self._membership = membership
        self._sending = sending
        self._names = names
        self._nursery = nursery
        self.watching: dict[str, Watching] = {}  # by id: targets elsewhere
        self.watched: dict[str, dict[str, ActorRef]] = {}  # address here -> id -> watcher

    # -- watchers here ---------------------------------------------------------------------

    def watch_remote(self, target: ActorRef, watcher: ActorRef) -> str:
        """Remember that ``watcher`` watches ``target`` (on another node); the id."""
        id = f"{self._prefix}{next(self._ids)}"
        self.watching[id] = Watching(target, watcher)
        return id

    def unwatch_remote(self, id: str) -> Watching | None:
        return self.watching.pop(id, None)

    def fire(self, id: str, reason: str, exit: ExitReason | None = None) -> None:
        """Monitor ``id`` fires (once): its watcher is told."""
        found = self.watching.pop(id, None)
        if found is not None:
            self._nursery.start_soon(
                _tell, found.watcher, ActorDown(ref=found.target, reason=reason, exit=exit))

    def downed(self, downed: Downed) -> None:
        """The target's node reports its end (a ``down`` entry)."""
        self.fire(downed.id, downed.reason, downed.exit)

    def node_left(self, node: str) -> None:
        for id, found in list(self.watching.items()):
            if found.target.node == node:
                self.fire(id, "nodedown")
        for address, watchers in list(self.watched.items()):
            for id, watcher in list(watchers.items()):
                if watcher.node == node:
                    del watchers[id]
            if not watchers:
                del self.watched[address]

    # -- targets here ----------------------------------------------------------------------

    def watch_local(self, to: str, watch: Watch) -> None:
        """A watcher elsewhere watches ``to`` (an address or ``@path`` here)."""
        address = self._names.get(to[1:]) if to.startswith("@") else to
        if address is None or address not in self._names.names.values():
            self._report(watch.watcher, Downed(id=watch.id, reason="noproc"))
            return
        self.watched.setdefault(address, {})[watch.id] = watch.watcher

    def unwatch_local(self, unwatch: Unwatch) -> None:
        for address, watchers in list(self.watched.items()):
            if watchers.pop(unwatch.id, None) is not None and not watchers:
                del self.watched[address]

    def exited(self, address: str, reason: ExitReason) -> None:
        for id, watcher in self.watched.pop(address, {}).items():
            self._report(watcher, Downed(id=id, reason=reason.kind, exit=reason))

    async def follow(self, events: EventBus, *,
                     task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Learn this node's exits from its events, for as long as the node runs."""
        with events.subscribe() as channel:
            task_status.started()
            async for event in channel:
                if isinstance(event, ActorExited) and event.address is not None:
                    self.exited(event.address, event.reason)

    def _report(self, watcher: ActorRef, downed: Downed) -> None:
        # Its own task: the watcher's node may be slow to take it (backpressure), and
        # the monitors never wait for one watcher.
        self._nursery.start_soon(self._send_down, watcher, downed)

    async def _send_down(self, watcher: ActorRef, downed: Downed) -> None:
        node = watcher.node
        live = self._membership.live.get(node or "")
        if node is None or live is None or watcher.incarnation not in (None, live):
            return  # the watcher's node is gone: its monitors went with it
        to = watcher.address if watcher.address is not None else f"@{watcher.path}"
        try:
            await self._sending.send("down", node, live, to, downed)
        except ActorError as exc:
            log.debug("the end of a watched actor was not reported to %r: %s", watcher, exc)


async def _tell(watcher: ActorRef, down: ActorDown) -> None:
    try:
        await watcher.tell(down)
    except ActorError as exc:
        log.debug("ActorDown for %r not delivered to %r: %s", down.ref, watcher, exc)
