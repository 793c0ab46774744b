"""``ClusterNode``: this master as a node of a cluster, opened by ``open_cluster_node``.

It is the :class:`Sender` of every ref with a node in this master (the outbox hands such
sends over), keeps the membership (a heartbeat and a look at the others every
``ttl / 8``), and answers for the monitors and the names across nodes. The node owns its
broker connection, its tasks and the streams it reads; leaving it takes the node out of
the cluster at once (its key deleted), so that the others fail their sends to it without
waiting for its time to live.
"""

from __future__ import annotations

import contextlib
import logging
import math
import urllib.parse
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio

from protocol import Message

from .._base._errors import ActorGone, BrokerUnavailable, NodeDown
from .._base._events import EventBus
from .._base._ref import ActorRef, split_node
from .._messaging._names import NameRegistry
from .._messaging._outbox import Outbox
from ._broker import Broker, open_broker
from ._directory import Directory
from ._membership import Change, Membership, NodeJoined, NodeLeft, new_incarnation
from ._monitors import Monitors, Unwatch, Watch
from ._receiving import Receiving
from ._sending import Sending
from ._wire import Keys, validate_node_name

__all__ = ["ClusterNode", "open_cluster_node"]

log = logging.getLogger("actors.cluster")

# KEYS: the node's key, the members hash; ARGV: name, incarnation, ttl (ms). The key says
# the node left until its time to live is over: a heartbeat already on its way when the
# node left finds it so, and does not bring the node back.
_LEAVE = """
if redis.call('GET', KEYS[1]) == ARGV[2] then
  redis.call('SET', KEYS[1], 'left:' .. ARGV[2], 'PX', ARGV[3])
  redis.call('HDEL', KEYS[2], ARGV[1])
end
return 1
"""


class ClusterNode:
    """This master in the cluster: ``name``, ``incarnation`` (new at each start)."""

    def __init__(self, broker: Broker, keys: Keys, membership: Membership, outbox: Outbox,
                 events: EventBus, sending: Sending, monitors: Monitors,
                 directory: Directory) -> None:
        self.broker = broker
        self.name = membership.name
        self.incarnation = membership.incarnation
        self.membership = membership
        self._keys = keys
        self._outbox = outbox
        self._events = events
        self._sending = sending
        self._monitors = monitors
        self._directory = directory

    def nodes(self) -> dict[str, int]:
        """The live nodes (this one included), each with its incarnation."""
        return dict(self.membership.live)

    def ref(self, path: str, node: str | None = None) -> ActorRef:
        """A ref to whatever actor holds ``path`` on ``node`` (``"name@node"`` names the
        node too); this node's own is a local ref."""
        if node is None:
            path, node, _ = split_node("@" + path)
            path = path[1:]
        if node is None or node == self.name:
            return ActorRef(self._outbox, path=path)
        return ActorRef(self._outbox, path=path, node=validate_node_name(node))

    # -- the Sender of refs with a node ------------------------------------------------------

    async def tell(self, ref: ActorRef, message: Message) -> None:
        node, incarnation, to = self._target(ref)
        await self._sending.send("tell", node, incarnation, to, message)

    async def ask(self, ref: ActorRef, message: Message) -> Message | None:
        node, incarnation, to = self._target(ref)
        corr, pending = await self._sending.send("ask", node, incarnation, to, message)
        assert pending is not None
        try:
            await pending.wait()
        finally:
            self._sending.forget(corr)
        return pending.result()

    def _target(self, ref: ActorRef) -> tuple[str, int, str]:
        """Where a send to ``ref`` goes: node, incarnation, the target as the node knows it."""
        node = ref.node
        assert node is not None
        if not self.broker.up:
            raise BrokerUnavailable(f"cannot reach node {node}: the cluster's Redis "
                                    f"{self.broker.name} is unreachable")
        live = self.membership.live.get(node)
        if live is None or self.membership.replaced:
            gone = NodeDown(f"node {node} is not in the cluster (actor {ref.wire()})")
            gone.in_doubt = False
            raise gone
        if ref.incarnation is not None and ref.incarnation != live:
            raise ActorGone(f"actor {ref.wire()} is gone: it was on an earlier incarnation "
                            f"of node {node} (now {live})")
        return node, live, ref.address if ref.address is not None else f"@{ref.path}"

    # -- monitors across nodes ----------------------------------------------------------------

    async def monitor(self, target: ActorRef, watcher: ActorRef) -> str:
        """Have ``watcher`` told :class:`ActorDown` when ``target``, an actor of another node,
        ends (the kind of its exit), is not there (``noproc``) or its node leaves the
        cluster (``nodedown``, at once if it is not in it). The monitor's id."""
        id = self._monitors.watch_remote(target, watcher)
        try:
            node, incarnation, to = self._target(target)
        except ActorGone as exc:
            self._monitors.fire(id, "nodedown" if isinstance(exc, NodeDown) else "noproc")
            return id
        await self._sending.send("monitor", node, incarnation, to, Watch(id=id, watcher=watcher))
        return id

    async def demonitor(self, id: str) -> None:
        """Stop the monitor ``id`` (nothing if it fired or was stopped already)."""
        found = self._monitors.unwatch_remote(id)
        if found is None:
            return
        try:
            node, incarnation, to = self._target(found.target)
        except ActorGone:
            return  # its node is gone: nothing there to forget
        await self._sending.send("demonitor", node, incarnation, to, Unwatch(id=id))

    # -- names across the cluster --------------------------------------------------------------

    async def register(self, name: str, ref: ActorRef) -> bool:
        """Hold ``name`` for ``ref`` across the cluster while its node is live: False if a
        live node holds it already for another actor."""
        wire = self._wire(ref)
        return await self._directory.register(name, self.name, self.incarnation, wire) == wire

    async def whereis(self, name: str) -> ActorRef | None:
        """The actor holding ``name`` across the cluster, or None."""
        wire = await self._directory.whereis(name)
        return None if wire is None else self._from_wire(wire)

    async def unregister(self, name: str, ref: ActorRef) -> bool:
        """Give ``name`` up, if ``ref`` holds it."""
        return await self._directory.unregister(name, self.name, self.incarnation,
                                                self._wire(ref))

    def _wire(self, ref: ActorRef) -> str:
        if ref.node is not None:
            return ref.wire()
        if ref.address is not None:
            return f"{ref.address}@{self.name}#{self.incarnation}"
        return f"@{ref.path}@{self.name}"

    def _from_wire(self, wire: str) -> ActorRef:
        local, node, incarnation = split_node(wire)
        if node == self.name and incarnation in (None, self.incarnation):
            node = incarnation = None
        if local.startswith("@"):
            return ActorRef(self._outbox, path=local[1:], node=node)
        return ActorRef(self._outbox, address=local, node=node, incarnation=incarnation)

    # -- membership -------------------------------------------------------------------------

    async def keep(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                   ) -> None:
        """Beat and look every ``ttl / 8`` for as long as the node runs."""
        task_status.started()
        failing_since: float | None = None
        while True:
            await trio.sleep(self.membership.every)
            try:
                await self.membership.beat()
                change = await self.membership.look()
            except BrokerUnavailable:
                now = trio.current_time()
                failing_since = now if failing_since is None else failing_since
                if now - failing_since >= self.membership.ttl:
                    # The others count this node out by now: count them out too, so that
                    # monitors fire and nothing waits on a node it cannot hear from.
                    self.changed(self.membership.adopt({self.name: self.incarnation}))
                continue
            failing_since = None
            self.broker.recovered()
            self.changed(change)

    def changed(self, change: Change) -> None:
        for node, incarnation in change.left:
            self._events.publish(NodeLeft(path="cluster", node=node, incarnation=incarnation))
            self._sending.node_left(node, incarnation)
            self._monitors.node_left(node)
        for node, incarnation in change.joined:
            self._events.publish(NodeJoined(path="cluster", node=node,
                                            incarnation=incarnation))

    async def fail_when_lost(self) -> None:
        """Fail every send in flight each time the broker is lost."""
        while True:
            await self.broker.lost.wait()
            self._sending.broker_lost()
            await self.broker.back.wait()


@asynccontextmanager
async def open_cluster_node(
    url: str, name: str, *, outbox: Outbox, names: NameRegistry, events: EventBus,
    ttl: float = 5.0, bound: int = 10_000, call_timeout: float = 2.0,
) -> AsyncIterator[ClusterNode]:
    """Join the cluster at ``url`` as node ``name`` for the block; this master's refs with a
    node send through it meanwhile. :class:`BrokerUnavailable` if Redis does not answer."""
    validate_node_name(name)
    if not ttl > 0 or not math.isfinite(ttl):
        raise ValueError("node_ttl must be a number of seconds > 0")
    if bound < 1:
        raise ValueError("the inbox bound must be at least 1")
    parsed = urllib.parse.urlsplit(url)
    query = urllib.parse.parse_qs(parsed.query)
    prefix = query.pop("prefix", ["trio-actors"])[0]
    url = urllib.parse.urlunsplit(parsed._replace(
        query=urllib.parse.urlencode(query, doseq=True)))
    keys = Keys(prefix)
    incarnation = new_incarnation()
    async with open_broker(url, call_timeout) as broker, trio.open_nursery() as nursery:
        membership = Membership(broker, keys, name, incarnation, ttl)
        await broker.call("a start", broker.client.set(keys.bound(name), str(bound)))
        await membership.beat()
        sending = Sending(broker, keys, name, incarnation, nursery, bound=bound)
        monitors = Monitors(membership, sending, names, nursery)
        receiving = Receiving(broker, keys, name, incarnation, outbox, sending, monitors,
                              nursery)
        node = ClusterNode(broker, keys, membership, outbox, events, sending, monitors,
                           Directory(broker, keys, ttl))
        await nursery.start(sending.take_answers, receiving.decode)
        await nursery.start(receiving.run)
        await nursery.start(monitors.follow, events)
        node.changed(await membership.look())
        await nursery.start(node.keep)
        nursery.start_soon(node.fail_when_lost)
        log.info("node %s (incarnation %d) joined the cluster at %s: %s", name, incarnation,
                 broker.name, ", ".join(sorted(membership.live)))
        previous, outbox.remote = outbox.remote, node
        try:
            yield node
        finally:
            outbox.remote = previous
            membership.leaving = True  # no heartbeat from here on
            with trio.move_on_after(call_timeout) as leaving:
                leaving.shield = True
                if broker.up:
                    await _leave(broker, keys, name, incarnation, ttl)
            nursery.cancel_scope.cancel()


async def _leave(broker: Broker, keys: Keys, name: str, incarnation: int, ttl: float
                 ) -> None:
    """Take this node out at once (else its key expires within its time to live).

    On a connection of its own: the node's was cut by the cancellation of its readers."""
    with contextlib.suppress(*broker.outage):
        async with broker.connect() as client:
            leave: Any = client.register_script(_LEAVE)
            await leave(keys=[keys.node(name), keys.members],
                        args=[name, incarnation, int(ttl * 1000)])

