"""``Monitors``: actors of this node watching actors of other nodes, and the other way.

A watcher here asks to watch a target there (a ``monitor`` entry to the target's node): the
target's node answers, when the target exits, with ``ActorDown`` (the kind of its exit
reason) told to the watcher, or at once ``ActorDown(reason="noproc")`` if it has no such
actor. If the target's node leaves the cluster first, this node tells the watcher
``ActorDown(reason="nodedown")`` itself. Each side forgets the monitors of a node that left.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass

import trio

from protocol import Message

from .._base._errors import ActorError
from .._base._events import ActorDown, ActorExited, EventBus, ExitReason
from .._base._ref import ActorRef, Sender
from .._messaging._names import NameRegistry

__all__ = ["Monitors", "Unwatch", "Watch"]

log = logging.getLogger("actors.cluster")


class Watch(Message, tag="actors.cluster.Watch"):
    """A ``monitor`` entry's body: tell ``watcher`` when the entry's target goes."""

    id: str
    watcher: ActorRef


class Unwatch(Message, tag="actors.cluster.Unwatch"):
    """A ``demonitor`` entry's body."""

    id: str


@dataclass(frozen=True, slots=True)
class _Watching:
    target: ActorRef  # on another node
    watcher: ActorRef  # on this node


class Monitors:
    """Monitors across nodes, as seen from node ``name``."""

    def __init__(self, name: str, incarnation: int, outbox: Sender, names: NameRegistry,
                 nursery: trio.Nursery) -> None:
        self._prefix = f"{name}:{incarnation}:"
        self._ids = itertools.count(1)
        self._outbox = outbox
        self._names = names
        self._nursery = nursery
        self.watching: dict[str, _Watching] = {}  # by id: targets elsewhere
        self.watched: dict[str, dict[str, ActorRef]] = {}  # address here -> id -> watcher

    def watch_remote(self, target: ActorRef, watcher: ActorRef) -> str:
        """Remember that ``watcher`` watches ``target`` (on another node); the id."""
        id = f"{self._prefix}{next(self._ids)}"
        self.watching[id] = _Watching(target, watcher)
        return id

    def unwatch_remote(self, id: str) -> _Watching | None:
        return self.watching.pop(id, None)

    def down(self, id: str, reason: str) -> None:
        """The target of ``id`` cannot be watched (its node is down): tell its watcher."""
        found = self.watching.pop(id, None)
        if found is not None:
            self._tell(found.watcher, ActorDown(ref=found.target, reason=reason))

    def node_left(self, node: str) -> None:
        for id, found in list(self.watching.items()):
            if found.target.node == node:
                self.down(id, "nodedown")
        for address, watchers in list(self.watched.items()):
            for id, watcher in list(watchers.items()):
                if watcher.node == node:
                    del watchers[id]
            if not watchers:
                del self.watched[address]

    def watch_local(self, to: str, watch: Watch) -> None:
        """A watcher elsewhere watches ``to`` (an address or ``@path`` here)."""
        address = self._names.get(to[1:]) if to.startswith("@") else to
        alive = address is not None and address in self._names.names.values()
        if not alive or address is None:
            target = (ActorRef(self._outbox, path=to[1:]) if to.startswith("@")
                      else ActorRef(self._outbox, address=to))
            self._tell(watch.watcher, ActorDown(ref=target, reason="noproc"))
            return
        self.watched.setdefault(address, {})[watch.id] = watch.watcher

    def unwatch_local(self, unwatch: Unwatch) -> None:
        for address, watchers in list(self.watched.items()):
            if watchers.pop(unwatch.id, None) is not None and not watchers:
                del self.watched[address]

    def exited(self, address: str, reason: ExitReason) -> None:
        watchers = self.watched.pop(address, None)
        if not watchers:
            return
        target = ActorRef(self._outbox, address=address)
        for watcher in watchers.values():
            self._tell(watcher, ActorDown(ref=target, reason=reason.kind, exit=reason))

    async def follow(self, events: EventBus, *,
                     task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Learn this node's exits from its events, for as long as the node runs."""
        with events.subscribe() as channel:
            task_status.started()
            async for event in channel:
                if isinstance(event, ActorExited) and event.address is not None:
                    self.exited(event.address, event.reason)

    def _tell(self, watcher: ActorRef, down: ActorDown) -> None:
        # Its own task: a remote watcher's node may be slow to take it (backpressure),
        # and the monitors never wait for one watcher.
        self._nursery.start_soon(self._deliver, watcher, down)

    async def _deliver(self, watcher: ActorRef, down: ActorDown) -> None:
        try:
            await watcher.tell(down)
        except ActorError as exc:
            log.debug("ActorDown for %r not delivered to %r: %s", down.ref, watcher, exc)
