"""``Routing``: how a listener's connections reach its acceptors.

The :class:`Dispatcher` decides (sans-IO) which acceptor gets what; this does the I/O around
it: attaching each acceptor as it comes, retiring it as it goes, handing connections over
(a request the acceptor acknowledges), accepting in the master for the routed policies, and
settling what a dead acceptor left in doubt.
"""

from __future__ import annotations

import logging
import random
import socket

import trio

from protocol import Message, SocketHandle

from .._base._errors import ActorError
from .._base._handoff import Attach, HandlePassed, Handoff
from .._base._ref import ActorRef
from .._base._tree import Child
from .._messaging._router import Router
from .._supervision._places import ChildDown, ChildUp, Membership
from ._accepting import accept_all, accept_loop
from ._dispatcher import Batch, Dispatcher, Route, outcome
from ._sockets import AcceptBackoff, bind, bound_address
from ._spec import ListenerSpec

__all__ = ["Routing"]

log = logging.getLogger("actors")


class Routing:
    """Hands the connections of the listener at ``path`` (on ``sock``) to its acceptors,
    as its ``dispatcher`` decides; hand-offs in doubt are settled by tasks in ``nursery``.

    Every policy routes: the master's own accepts (:meth:`accept_loop`, round robin and
    least busy), and the idle connections a draining acceptor hands back
    (:meth:`handed_back`). ``reuseport`` slots (one socket per acceptor, bound and held by
    the master) live in ``sockets``, which belongs to the system. Its listener sets
    ``accepting`` (the master accepts on ``sock``) and ``open`` (acceptors may be routed to:
    the listener is up, and the system is not stopping)."""

    def __init__(
        self,
        router: Router,
        spec: ListenerSpec,
        path: str,
        sock: socket.socket,
        sockets: dict[str, socket.socket],
        dispatcher: Dispatcher,
        nursery: trio.Nursery,
    ) -> None:
        self.router = router
        self.spec = spec
        self.path = path
        self.sock = sock
        self._host, self._port = bound_address(sock)
        self._sockets = sockets
        self.dispatcher = dispatcher
        self._nursery = nursery
        self.accepting = False
        self.open = False

    # -- acceptors coming and going ---------------------------------------------------------

    async def follow(self, joined: trio.MemoryReceiveChannel[Membership], listener: ActorRef
                     ) -> None:
        """Attach each acceptor that joins (it reports to ``listener``), retire each that
        goes, until the supervisor's membership ends."""
        async for change in joined:
            if isinstance(change, ChildUp):
                await self._attach(change.name, change.child, listener)
            elif isinstance(change, ChildDown):
                key = change.child.address
                if key is not None:
                    self.dispatcher.retire(key)

    async def _attach(self, name: str, instance: Child, listener: ActorRef) -> None:
        policy = self.spec.policy
        pid = instance.pid or 0
        key = instance.address
        family = int(self.sock.family)
        if policy == "shared":
            attach = Attach(listener=listener, policy="shared", family=family,
                            sock=SocketHandle.from_socket(self.sock))
        elif policy == "reuseport":
            attach = Attach(listener=listener, policy="reuseport", family=family,
                            sock=SocketHandle.from_socket(await self._slot(name)))
        else:
            attach = Attach(listener=listener, policy=policy, family=family)
        limit = self.spec.max_connections_per_worker
        if limit is not None:
            attach = attach.model_copy(
                update={"recycle_after": limit + random.randrange(limit // 10 + 1)}
            )
        try:
            await instance.ref.tell(attach)
        except ActorError as exc:
            log.warning("could not attach acceptor %s: %r", instance.path, exc)
            return
        if attach.sock is not None:
            self.router.publish(HandlePassed(
                path=self.path, acceptor=instance.path, pid=pid, host=self._host,
                port=self._port,
            ))
        if key is not None:
            # Every policy routes: the master's own accepts (round_robin, least_busy), and
            # the idle connections a draining acceptor hands back (any policy).
            self._send(self.dispatcher.add(Route(
                key=key, name=instance.path, ref=instance.ref, pid=pid, gone=instance.done,
            )))

    async def _slot(self, name: str) -> socket.socket:
        """The ``reuseport`` socket of acceptor ``name``: bound and held by the master, so
        that the connections the kernel queued on it wait for the acceptor's successor
        (a crash, a reload) instead of being reset when the acceptor's copy closes."""
        key = f"{self.path}/{name}"
        sock = self._sockets.get(key)
        if sock is None:
            sock = self._sockets[key] = await bind(
                self._host, self._port, reuseport=True, listen=True, backlog=self.spec.backlog,
                udp=self.spec.transport == "udp",
            )
        return sock

    def close_slot(self, name: str) -> None:
        """Acceptor ``name`` is gone for good (scaled down): what its socket queued goes to
        the others, then it is closed."""
        sock = self._sockets.pop(f"{self.path}/{name}", None)
        if sock is None:
            return
        if self.spec.transport == "udp":
            # (What waits on it is lost, as a datagram may be: there is no connection to
            # hand over.)
            sock.close()
            return
        taken = accept_all(sock, self.path)
        trio.lowlevel.notify_closing(sock)
        sock.close()
        self._route(taken)

    # -- routing ----------------------------------------------------------------------------

    def _route(self, conns: list[socket.socket]) -> None:
        self._send(self.dispatcher.dispatch([(conn, 0) for conn in conns]))

    def handed_back(self, conns: list[socket.socket]) -> None:
        """Idle connections a draining acceptor could not keep: to another one, unless the
        system is stopping (then nobody will serve them)."""
        if self.router.stopping or not self.open:
            for conn in conns:
                conn.close()
            return
        self._route(conns)

    def _send(self, batches: list[Batch]) -> None:
        for batch in batches:
            self._hand_off(batch)

    def _hand_off(self, batch: Batch) -> None:
        route = batch.route

        def answered(reply: Message | None, error: BaseException | None) -> None:
            taken, how = outcome(reply, error)
            self._send(self.dispatcher.answered(route, batch.id, taken, how))
            if route.doubtful and not route.settling:
                route.settling = True
                self._nursery.start_soon(self._settle, route)

        handoff = Handoff(conns=[SocketHandle.from_socket(conn) for conn, _ in batch.conns])
        self.router.outbox.request(route.ref, handoff, answered)

    async def _settle(self, route: Route) -> None:
        """Once the process of an acceptor that died with connections in doubt is gone,
        hand on those it never touched."""
        await route.gone.wait()
        self._send(self.dispatcher.settle(route))

    async def accept_loop(self) -> None:
        """Accept in the master while ``accepting``, as fast as the acceptors have room."""
        dispatcher = self.dispatcher

        def room() -> int:
            # (connections already waiting for room go first: the kernel queues the rest)
            if not self.accepting:
                return -1
            return 0 if dispatcher.waiting else dispatcher.room()

        async def wait_for_room() -> None:
            dispatcher.capacity = trio.Event()
            await dispatcher.capacity.wait()  # every acceptor is at its cap

        # What is queued goes over together: one hand-off per acceptor, however many it gets.
        await accept_loop(self.sock, room=room, wait_for_room=wait_for_room, take=self._route,
                          backoff=AcceptBackoff(self.path))
