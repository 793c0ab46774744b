"""Listeners: one listening socket in the master, connections served by acceptor workers.

A running :class:`Listener` is a composition (as OTP composes its listeners): a small router
actor, which its acceptors report to, plus a plain :class:`Supervisor` of the acceptor
workers; its :class:`Routing` follows the acceptors coming and going through the
supervisor's membership channel, and hands them connections. The listening socket is bound
in the master by the first incarnation and belongs to the system, so a restarted listener
serves the same address and loses no queued connection. Policies:

``round_robin`` (default, Node's SCHED_RR): the master accepts, and hands each connection's fd
to the next acceptor with a request that the acceptor acknowledges; at most ``in_flight``
hand-offs per acceptor are unacknowledged. A connection an acceptor refuses, or one that
certainly did not reach it, goes to another; one whose acceptor died with the hand-off in
doubt is closed (it may have been served: a connection is never served by two acceptors).

``least_busy``: as round robin, to the acceptor with the fewest open connections.

``shared`` (Node's SCHED_NONE): every acceptor (and every replacement) gets the listening
socket itself and accepts on it; the master keeps its copy and never accepts.

``reuseport``: each acceptor binds a socket of its own with ``SO_REUSEPORT`` and the kernel
spreads connections. Caveat: when an acceptor's socket closes (a crash, a drain, a reload),
the connections the kernel had queued on it are reset, not moved to the others.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import socket
from collections.abc import Callable, Sequence

import trio

from .._base._actor import Actor, handler
from .._base._errors import ActorError, ReloadFailed, SpawnError
from .._base._handoff import (
    ROUTED,
    AcceptorStats,
    Closed,
    GetStats,
    HandBack,
    ListenerReport,
)
from .._base._ref import ActorRef
from .._base._spec import SupervisorSpec, WorkerSpec
from .._base._tree import (
    Child,
    ChildBase,
    ChildKind,
    Lifecycle,
    Parent,
    Replacement,
    stop_children,
)
from .._messaging._router import Router
from .._running._cell import Cell
from .._supervision._places import Membership
from .._supervision._runtime import remove_child
from .._supervision._start import Starter
from .._supervision._supervisor import Supervisor
from ._dispatcher import Dispatcher
from ._routing import Routing
from ._sockets import bind, bound_address, claim_address, hold_out_of_spread
from ._spec import ListenerSpec

__all__ = ["CommandSockets", "Listener", "register_listener_kind"]

log = logging.getLogger("actors")


# -- the listener itself ----------------------------------------------------------------------


class _ListenerActor(Actor):
    """The listener's own actor: acceptors report closed connections to it, and hand back
    the idle connections they cannot keep (they drain)."""

    def __init__(self, dispatcher: Dispatcher, route: Callable[[list[socket.socket]], None]
                 ) -> None:
        self.dispatcher = dispatcher
        self.route = route

    @handler
    async def closed(self, msg: Closed) -> None:
        self.dispatcher.closed(msg.address, msg.count)

    @handler
    async def hand_back(self, msg: HandBack) -> None:
        self.route([handle.into_socket() for handle in msg.conns])


class Listener(ChildBase):
    """A running listener: binds (or reuses) the socket, supervises its acceptors, and
    routes connections to them. A :class:`Child` of its supervisor and the :class:`Parent`
    of its router actor and its acceptors' supervisor.

    ``sockets`` (by listener path) and ``registry`` belong to the system: the socket outlives
    the listener's restarts; the registry is how ``system.listener(path)`` finds it. Its
    ``address`` is its router actor's: messages to its path go there.

    Walking the tree, its :attr:`children` are its acceptors (its router actor and its
    supervisor share its path, and are not shown); restarting it replaces them one at a
    time (``rolling``), and every reload does too.
    """

    kind: ChildKind = "listener"
    rolling = True

    def __init__(
        self,
        spec: ListenerSpec,
        *,
        parent: Parent,
        path: str,
        starter: Starter,
        sockets: dict[str, socket.socket],
        registry: dict[str, Listener],
    ) -> None:
        super().__init__(path, parent, math.inf)
        self.spec = spec
        self.pid = os.getpid()
        self.router: Router = starter.router
        self._starter = starter
        self._sockets = sockets
        self._registry = registry
        self.running: list[Child] = []  # its router actor, then its supervisor
        self.sock: socket.socket | None = None
        self.host = spec.host
        self.port = spec.port
        self.nursery: trio.Nursery
        self.dispatcher = Dispatcher(spec.policy, spec.in_flight)
        self._supervisor: Supervisor | None = None
        self._routing: Routing | None = None  # (once its socket is bound)
        self._reload_lock = trio.Lock()

    @property
    def ref(self) -> ActorRef:
        return ActorRef(self.router.outbox, path=self.path)

    @property
    def children(self) -> Sequence[Child]:
        return () if self._supervisor is None else self._supervisor.children

    def replaces(self, child: Child) -> Replacement | None:
        sup = self._supervisor
        return None if sup is None or sup.replaces(child) is None else "on_reload"

    async def replace_child(self, child: Child) -> bool:
        async with self._reload_lock:
            return self._supervisor is not None and await self._supervisor.replace_child(child)

    async def run(
        self, *, task_status: trio.TaskStatus[Listener] = trio.TASK_STATUS_IGNORED
    ) -> None:
        self.started_at = trio.current_time()
        failure: BaseException | None = None
        try:
            self.sock = await self._socket()
            self.host, self.port = bound_address(self.sock)
            self._registry[self.path] = self
            membership, joined = trio.open_memory_channel[Membership](math.inf)
            async with trio.open_nursery() as nursery:
                self.nursery = nursery
                routing = self._routing = Routing(
                    self.router, self.spec, self.path, self.sock, self._sockets,
                    self.dispatcher, nursery,
                )
                # The actor shares the listener's path: the supervisor's events speak for both.
                actor = Cell(
                    self.router, _ListenerActor(self.dispatcher, routing.handed_back),
                    path=self.path, parent=self, shutdown_timeout=1.0,
                    spawn=self._starter.spawn, report_events=False,
                )
                self.running.append(actor)
                await nursery.start(actor.run)
                self.address = actor.address
                sup = self._supervisor = Supervisor(
                    self.router, self.spec, parent=self, path=self.path,
                    start_child=self._starter.start_child, membership=membership,
                    address=actor.address,
                )
                self.running.append(sup)
                nursery.start_soon(routing.follow, joined, actor.ref)
                try:
                    await nursery.start(sup.run)
                except ActorError as exc:
                    failure = exc  # raised out of the nursery, as itself
                else:
                    if self.spec.policy in ROUTED:
                        routing.accepting = True
                        nursery.start_soon(routing.accept_loop)
                    if self.spec.report_every > 0:
                        nursery.start_soon(self._report_loop)
                    routing.open = True
                    self._move(Lifecycle.RUNNING)
                    task_status.started(self)
                    await sup.done.wait()
                routing.accepting = routing.open = False
                self._stopping(None)
                with trio.CancelScope(shield=True):
                    await stop_children(self)
                nursery.cancel_scope.cancel()
            if failure is not None:
                raise failure
        finally:
            if self._routing is not None:
                self._routing.accepting = self._routing.open = False
            if self._registry.get(self.path) is self:
                del self._registry[self.path]
            self.dispatcher.close_all()
            if self._supervisor is not None:
                self.gave_up = self._supervisor.gave_up
                if self._supervisor.exit_reason is not None:  # it speaks for the listener
                    self._explain(self._supervisor.exit_reason)
            self._finish(None, failure=failure)  # (its supervisor reported the exit)

    async def _socket(self) -> socket.socket:
        # The socket outlives a restart of the listener (what is queued on it is kept): it
        # belongs to the system, which closes it when it ends.
        sock = self._sockets.get(self.path)
        if sock is None:
            spec = self.spec
            udp = spec.transport == "udp"
            sock = await bind(spec.host, spec.port, reuseport=spec.policy == "reuseport",
                              listen=spec.policy != "reuseport", backlog=spec.backlog,
                              udp=udp)
            if spec.policy == "reuseport":
                host, port = sock.getsockname()[:2]
                sock = claim_address(sock, str(host), int(port), udp=udp)
                if udp:
                    hold_out_of_spread(sock)
            self._sockets[self.path] = sock
        return sock

    async def shutdown(self, grace: float) -> None:
        """Stop accepting, stop the acceptors (each drains), then exit.

        When the system itself is stopping, nothing will accept on the socket again: it is
        closed at once, so that new clients are refused rather than left waiting for an
        answer while the acceptors drain."""
        self._stopping("asked")
        routing = self._routing
        if routing is not None:
            routing.accepting = False
        if self.sock is not None:
            trio.lowlevel.notify_closing(self.sock)
            if self.router.stopping:
                if routing is not None:
                    routing.open = False  # (nobody will serve what is handed back)
                for key in [self.path, *(k for k in self._sockets
                                         if k.startswith(self.path + "/"))]:
                    sock = self._sockets.pop(key, None)  # (a second stop finds none)
                    if sock is not None:
                        trio.lowlevel.notify_closing(sock)
                        sock.close()
        if self._supervisor is not None:
            await self._supervisor.shutdown(grace)
        await self.done.wait()

    async def scale(self, count: int) -> None:
        """Run ``count`` acceptors: new ones start and take connections; removed ones (the
        last added first) stop taking them and drain. All or nothing: if a new one does not
        start, those this call started are stopped again and :class:`SpawnError` says why."""
        if count < 1:
            raise ValueError("a listener needs at least one acceptor")
        sup = self._supervisor
        if sup is None:
            raise SpawnError(f"listener {self.path} is not running")
        if not self.spec.children:
            raise SpawnError(f"listener {self.path} has no acceptors to scale: its socket "
                             "is served by commands")
        async with self._reload_lock:
            names = sorted(sup.child_names(), key=int)
            template = sup.spec.children[0]
            assert isinstance(template, WorkerSpec)
            next_index = max(map(int, names), default=-1) + 1
            added: list[str] = []
            for index in range(next_index, next_index + count - len(names)):
                try:
                    await sup.add_child(dataclasses.replace(template, name=str(index)))
                except ActorError as exc:
                    # All or nothing: a scale that stopped half way (out of fds, say) would
                    # leave a count nobody asked for, and the master at the end of its means.
                    for name in reversed(added):
                        await remove_child(sup, name)
                    why = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                    raise SpawnError(
                        f"{why}; the {len(added)} acceptor(s) this scale started are stopped: "
                        f"back to {len(names)} acceptors"
                    ) from exc
                added.append(str(index))
            for name in reversed(names[count:]):
                await remove_child(sup, name)
                if self._routing is not None:
                    self._routing.close_slot(name)

    # -- figures and reloads ----------------------------------------------------------------

    async def stats(self) -> list[AcceptorStats]:
        """Per-acceptor figures: open and total connections, pid, restarts."""
        sup = self._supervisor
        if sup is None:
            return []
        found = []
        for _, instance in sorted(sup.instances().items()):
            restarts = instance.restarts
            with trio.move_on_after(2):
                try:
                    reply = await instance.ref.ask(GetStats(), AcceptorStats)
                except ActorError as exc:
                    log.debug("no stats from %s: %r", instance.path, exc)
                    continue
                found.append(reply.model_copy(update={"restarts": restarts}))
        return found

    async def _report_loop(self) -> None:
        while True:
            await trio.sleep(self.spec.report_every)
            self.router.publish(ListenerReport(
                path=self.path, host=str(self.host), port=int(self.port),
                policy=self.spec.policy, acceptors=await self.stats(),
            ))

    def acceptors(self) -> list[str]:
        """The names of the acceptors running now."""
        return [] if self._supervisor is None else sorted(self._supervisor.instances())

    async def reload(self, only: str | None = None) -> list[str]:
        """Replace the acceptors (``only``: the one of that name) one at a time: start the
        new one, wait until it is ready, then drain the old one (no connection is refused
        or dropped on the way). The paths replaced; :class:`ReloadFailed` as soon as a new
        one does not start (the old ones not yet replaced keep serving)."""
        async with self._reload_lock:
            sup = self._supervisor
            if sup is None:
                return []
            replaced = []
            for name in sorted(sup.instances()):
                if only is not None and name != only:
                    continue
                if not await sup.replace(name):
                    raise ReloadFailed(
                        f"the new acceptor {self.path}/{name} did not start; the old one "
                        "keeps serving (see the log for why)"
                    )
                replaced.append(f"{self.path}/{name}")
            return replaced


class CommandSockets:
    """The listening sockets commands may be given (``command(..., sockets=...)``): those of
    the running listeners declared without acceptors, by path (the master accepts on none
    of them, and a command may put one in blocking mode)."""

    def __init__(self, registry: dict[str, Listener]) -> None:
        self._registry = registry

    def passable(self, path: str) -> list[socket.socket]:
        found = self._registry.get(path)
        if found is None or found.sock is None:
            raise _fatal(f"no listener at {path!r} to take a socket from (a command's "
                         "sockets name listeners that start before it)")
        if found.spec.children:
            raise _fatal(f"listener {path!r} serves its socket with acceptors: a command "
                         "takes the socket of a listener(..., acceptor=None)")
        return [found.sock]


def _fatal(text: str) -> SpawnError:
    error = SpawnError(text)
    error.fatal = True  # the tree is wrong: a restart would fail the same way
    return error


def register_listener_kind(
    starter: Starter, sockets: dict[str, socket.socket], registry: dict[str, Listener]
) -> None:
    """Make ``starter`` run listener specs as :class:`Listener` (with these system-owned
    ``sockets`` and ``registry``), and give commands it starts the sockets of listeners
    without acceptors."""
    starter.listening = CommandSockets(registry)

    def make(spec: SupervisorSpec, parent: Parent, path: str) -> Listener:
        assert isinstance(spec, ListenerSpec)
        return Listener(spec, parent=parent, path=path, starter=starter, sockets=sockets,
                        registry=registry)

    starter.kinds[ListenerSpec] = make
