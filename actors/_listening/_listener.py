"""Listeners: one listening socket in the master, connections served by acceptor workers.

A running :class:`Listener` is a composition (as OTP composes its listeners): a small router
actor, which its acceptors report to, plus a plain :class:`Supervisor` of the acceptor
workers; it follows its acceptors coming and going through the supervisor's membership
channel. The listening socket is bound in the master by the first incarnation and belongs
to the system, so a restarted listener serves the same address and loses no queued
connection. Policies:

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
import itertools
import logging
import math
import os
import random
import socket
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import trio

from protocol import Message, SocketHandle

from .._base._actor import Actor, handler
from .._base._errors import ActorError, ActorGone, ReloadFailed, RemoteError, SpawnError
from .._base._events import ExitReason, exit_reason
from .._base._handoff import (
    POLICIES,
    ROUTED,
    AcceptorStats,
    Attach,
    Closed,
    GetStats,
    HandBack,
    HandlePassed,
    Handoff,
    ListenerReport,
    Policy,
    Taken,
)
from .._base._ref import ActorRef
from .._base._spec import Shutdown, SupervisorSpec, WorkerSpec, supervisor, worker
from .._base._tree import Child, Parent, stop_children
from .._messaging._router import Router
from .._running._cell import Cell
from .._supervision._start import Starter
from .._supervision._supervisor import ChildDown, ChildUp, Membership, Supervisor
from ._acceptor import Acceptor
from ._sockets import AcceptBackoff, accept_failure, bind, claim_address, untouched

__all__ = [
    "Batch",
    "Dispatcher",
    "Listener",
    "ListenerSpec",
    "Outcome",
    "Route",
    "listener",
    "run_listeners",
]

log = logging.getLogger("actors")



@dataclass(frozen=True)
class ListenerSpec(SupervisorSpec):
    """A listener: the socket, the policy, and ``count`` acceptors (its children)."""

    host: str = "127.0.0.1"
    port: int = 0
    policy: Policy = "round_robin"
    in_flight: int = 64
    backlog: int = 1024
    report_every: float = 5.0
    max_connections_per_worker: int | None = None


def listener(
    name: str,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    acceptor: type[Acceptor],
    count: int | None = None,
    policy: Policy = "round_robin",
    in_flight: int = 64,
    backlog: int = 1024,
    shutdown: Shutdown = 10.0,
    max_restarts: int = 10,
    within: float = 10.0,
    report_every: float = 5.0,
    max_memory: int | None = None,
    max_connections_per_worker: int | None = None,
    **kwargs: Any,
) -> ListenerSpec:
    """Spec of a listener on ``host:port`` (port 0: any free port) served by ``count``
    acceptor processes (default: the number of CPUs). ``kwargs`` go to the acceptor's
    ``__init__``; ``shutdown`` is each acceptor's time to drain its connections.

    ``max_memory`` (bytes): an acceptor whose resident memory stays above it is replaced
    (its successor first). ``max_connections_per_worker``: an acceptor is replaced after
    about that many connections (each gets up to 10% more, at random, so that they do not
    all go at once), as gunicorn's ``max_requests``."""
    if not (isinstance(acceptor, type) and issubclass(acceptor, Acceptor)):
        raise TypeError(f"listener() takes an Acceptor subclass, not {acceptor!r}")
    if policy not in POLICIES:
        raise ValueError(f"policy must be one of {POLICIES}, not {policy!r}")
    if count is None:
        count = os.cpu_count() or 1
    if count < 1:
        raise ValueError("a listener needs at least one acceptor")
    if not 0 <= port <= 65535:
        raise ValueError(f"port must be in 0..65535, not {port}")
    if in_flight < 1:
        raise ValueError("in_flight must be >= 1")
    if max_connections_per_worker is not None and max_connections_per_worker < 1:
        raise ValueError("max_connections_per_worker must be >= 1 (or None)")
    children = tuple(
        worker(acceptor, name=str(i), process=True, shutdown=shutdown,
               max_memory=max_memory, **kwargs)
        for i in range(count)
    )
    checked = supervisor(name, max_restarts=max_restarts, within=within, children=children)
    return ListenerSpec(
        name=checked.name, strategy="one_for_one", max_restarts=checked.max_restarts,
        within=checked.within, children=checked.children, shutdown="infinity",
        host=host, port=port, policy=policy, in_flight=in_flight, backlog=backlog,
        report_every=report_every, max_connections_per_worker=max_connections_per_worker,
    )


# -- routing connections to acceptors (round_robin, least_busy, and hand-backs) --------------


@dataclass(eq=False)
class Route:
    """The listener's view of one running acceptor instance (``key``: its address).

    ``gone`` is set once its process has exited: connections it held in doubt can then be
    judged by the kernel (see :meth:`Dispatcher.settle`)."""

    key: str
    name: str
    ref: ActorRef
    pid: int
    gone: trio.Event = field(default_factory=trio.Event)
    in_flight: dict[int, list[tuple[socket.socket, int]]] = field(default_factory=dict)
    pending: int = 0  # connections in flight (unanswered hand-offs)
    doubtful: list[tuple[socket.socket, int]] = field(default_factory=list)
    settling: bool = False  # the listener waits for its process to go, to judge them
    routable: bool = True
    open: int = 0
    total: int = 0


@dataclass(frozen=True)
class Batch:
    """One hand-off to send: ``conns`` (with the attempts each had) to ``route``."""

    route: Route
    id: int
    conns: list[tuple[socket.socket, int]]


Outcome = Literal["taken", "full", "draining", "undelivered", "in_doubt"]
"""How a hand-off ended for the connections the acceptor did not take: it took them all;
refused the rest (it is full for now); refused them for good (it drains: nothing more goes
to it); certainly never got them (its process or actor was gone first); or died with them
in doubt (it may have served them)."""


class Dispatcher:
    """Which acceptor gets each connection, and what happens to those it does not take.

    Pure bookkeeping: :meth:`dispatch` returns the hand-offs to send (:class:`Batch`), and
    whoever gets their answers calls :meth:`answered`, which returns what to send next. A
    connection goes to one acceptor at a time; it is re-routed when the acceptor refused it
    or certainly never got it. One whose acceptor died with it in doubt waits until that
    acceptor's process is gone (``route.gone``); then :meth:`settle` asks the kernel: a
    connection nobody read from or wrote to is handed on as if just accepted, any other is
    closed (it was served in part: never by two). Connections no acceptor has room for
    wait, in order; ``capacity`` is set whenever room may have come back.
    """

    def __init__(self, policy: Policy, in_flight: int,
                 untouched: Callable[[socket.socket], bool] = untouched) -> None:
        self.policy = policy
        self.cap = in_flight
        self._untouched = untouched
        self.routes: dict[str, Route] = {}
        self.waiting: deque[tuple[socket.socket, int]] = deque()
        self.capacity = trio.Event()
        self.lost = 0  # connections closed because they were served in part when lost
        self.rescued = 0  # connections in doubt that nobody had touched: handed on
        self._turn = 0
        self._ids = itertools.count(1)

    def add(self, route: Route) -> list[Batch]:
        self.routes[route.key] = route
        self.capacity.set()
        return self.flush()

    def retire(self, key: str) -> None:
        """Route nothing new to ``key``; the hand-offs it has in flight still get answered."""
        route = self.routes.get(key)
        if route is not None:
            route.routable = False
            self._forget_if_done(route)

    def room(self) -> int:
        """How many more connections may be in flight now, over every acceptor."""
        cap = self.cap
        return sum(cap - r.pending for r in self.routes.values()
                   if r.routable and r.pending < cap)

    def has_capacity(self) -> bool:
        return self.room() > 0

    def _pick(self, exclude: str | None) -> Route | None:
        cap = self.cap
        candidates = [
            r for r in self.routes.values()
            if r.routable and r.pending < cap and r.key != exclude
        ]
        if not candidates:
            return None
        if self.policy == "least_busy":
            return min(candidates, key=lambda r: (r.open + r.pending, r.total))
        self._turn += 1
        return candidates[self._turn % len(candidates)]

    def dispatch(self, conns: list[tuple[socket.socket, int]], exclude: str | None = None
                 ) -> list[Batch]:
        """Route ``conns`` (each with the attempts it had): the hand-offs to send."""
        batches: dict[str, Batch] = {}
        limit = 2 * max(1, len(self.routes)) + 2
        for conn, attempts in conns:
            if attempts > limit:
                log.error("no acceptor would take a connection; closing it")
                conn.close()
                continue
            route = self._pick(exclude)
            if route is None:
                self.waiting.append((conn, attempts))
                continue
            batch = batches.get(route.key)
            if batch is None:
                batch = batches[route.key] = Batch(route, next(self._ids), [])
                route.in_flight[batch.id] = batch.conns
            batch.conns.append((conn, attempts))
            route.pending += 1
        return list(batches.values())

    def answered(self, route: Route, batch_id: int, taken: int, outcome: Outcome
                 ) -> list[Batch]:
        """The acceptor took the first ``taken`` connections of hand-off ``batch_id``; the
        others ended as ``outcome`` says. What to send next."""
        conns = route.in_flight.pop(batch_id, None)
        if conns is None:
            return []
        route.pending -= len(conns)
        for conn, _ in conns[:taken]:
            route.open += 1
            route.total += 1
            conn.close()  # the acceptor has its own copy now
        rest = conns[taken:]
        again: list[Batch] = []
        if rest:
            if outcome == "in_doubt":
                route.routable = False  # its process died (or its channel broke)
                route.doubtful.extend(rest)  # judged once its process is gone
            else:
                if outcome in ("undelivered", "draining"):
                    route.routable = False  # gone, or going: nothing more goes to it
                again = self.dispatch([(c, a + 1) for c, a in rest], exclude=route.key)
        self._forget_if_done(route)
        self.capacity.set()
        return again + self.flush()

    def settle(self, route: Route) -> list[Batch]:
        """``route``'s process is gone, and with it every other reference to the
        connections it held in doubt: hand on those nobody touched, close the others."""
        doubtful, route.doubtful = route.doubtful, []
        handed: list[tuple[socket.socket, int]] = []
        for conn, attempts in doubtful:
            if self._untouched(conn):
                self.rescued += 1
                handed.append((conn, attempts))
            else:
                self.lost += 1
                log.warning("acceptor %s went while serving a connection: closing it",
                            route.name)
                conn.close()
        route.routable = False
        self._forget_if_done(route)
        return self.dispatch(handed, exclude=route.key)

    def _forget_if_done(self, route: Route) -> None:
        done = not (route.routable or route.in_flight or route.doubtful)
        if done and self.routes.get(route.key) is route:
            del self.routes[route.key]

    def flush(self) -> list[Batch]:
        """Hand over the waiting connections while some acceptor has room."""
        waiting: list[tuple[socket.socket, int]] = []
        room = self.room()
        while self.waiting and len(waiting) < room:
            waiting.append(self.waiting.popleft())
        return self.dispatch(waiting) if waiting else []

    def closed(self, key: str, count: int) -> None:
        route = self.routes.get(key)
        if route is not None:
            route.open = max(0, route.open - count)

    def close_all(self) -> None:
        """The listener is gone: close every connection it still holds."""
        for route in self.routes.values():
            for conns in route.in_flight.values():
                for conn, _ in conns:
                    conn.close()
            route.in_flight.clear()
            for conn, _ in route.doubtful:
                conn.close()
            route.doubtful.clear()
        self.routes.clear()
        while self.waiting:
            self.waiting.popleft()[0].close()


def _outcome(reply: Message | None, error: BaseException | None) -> tuple[int, Outcome]:
    """How many connections of a hand-off its acceptor took, and what became of the rest."""
    if isinstance(reply, Taken):
        return reply.count, "taken" if not reply.refused else reply.refused
    if isinstance(error, ActorGone) and not error.in_doubt:
        return 0, "undelivered"
    if isinstance(error, RemoteError) and error.type_name.startswith("protocol."):
        # Its process could not take the hand-off (its fd table is full: the kernel dropped
        # the fds): the acceptor never saw it, and lives on.
        return 0, "full"
    return 0, "in_doubt"


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


class Listener:
    """A running listener: binds (or reuses) the socket, supervises its acceptors, and
    routes connections to them. A :class:`Child` of its supervisor and the :class:`Parent`
    of its router actor and its acceptors' supervisor.

    ``sockets`` (by listener path) and ``registry`` belong to the system: the socket outlives
    the listener's restarts; the registry is how ``system.listener(path)`` finds it.
    """

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
        self.spec = spec
        self.parent = parent
        self.path = path
        self.router: Router = starter.router
        self._starter = starter
        self._sockets = sockets
        self._registry = registry
        self.shutdown_timeout = math.inf
        self.children: list[Child] = []
        self.done = trio.Event()
        self.started_at = 0.0
        self.exit_reason: ExitReason | None = None
        self.sock: socket.socket | None = None
        self.host = spec.host
        self.port = spec.port
        self.nursery: trio.Nursery
        self.dispatcher = Dispatcher(spec.policy, spec.in_flight)
        self._supervisor: Supervisor | None = None
        self._actor: Cell | None = None
        self._accepting = False
        self._running = False  # acceptors may be routed to (it is up, and not stopping)
        self._reload_lock = trio.Lock()

    @property
    def ref(self) -> ActorRef:
        return ActorRef(self.router, path=self.path)

    @property
    def gave_up(self) -> BaseException | None:
        return None if self._supervisor is None else self._supervisor.gave_up

    async def run(
        self, *, task_status: trio.TaskStatus[Listener] = trio.TASK_STATUS_IGNORED
    ) -> None:
        self.started_at = trio.current_time()
        failure: BaseException | None = None
        try:
            self.sock = await self._socket()
            self.host, self.port = self.sock.getsockname()[:2]
            self._registry[self.path] = self
            membership, joined = trio.open_memory_channel[Membership](math.inf)
            async with trio.open_nursery() as nursery:
                self.nursery = nursery
                # The actor shares the listener's path: the supervisor's events speak for both.
                actor = self._actor = Cell(
                    self.router, _ListenerActor(self.dispatcher, self._handed_back),
                    path=self.path, parent=self, shutdown_timeout=1.0,
                    spawn=self._starter.spawn, report_events=False,
                )
                self.children.append(actor)
                await nursery.start(actor.run)
                sup = self._supervisor = Supervisor(
                    self.router, self.spec, parent=self, path=self.path,
                    start_child=self._starter.start_child, membership=membership,
                    address=actor.address,
                )
                self.children.append(sup)
                nursery.start_soon(self._follow, joined)
                try:
                    await nursery.start(sup.run)
                except ActorError as exc:
                    failure = exc  # raised out of the nursery, as itself
                else:
                    if self.spec.policy in ROUTED:
                        self._accepting = True
                        nursery.start_soon(self._accept_loop)
                    if self.spec.report_every > 0:
                        nursery.start_soon(self._report_loop)
                    self._running = True
                    task_status.started(self)
                    await sup.done.wait()
                self._accepting = self._running = False
                with trio.CancelScope(shield=True):
                    await stop_children(self)
                nursery.cancel_scope.cancel()
            if failure is not None:
                raise failure
        finally:
            self._accepting = self._running = False
            if self._registry.get(self.path) is self:
                del self._registry[self.path]
            self.dispatcher.close_all()
            if self in self.parent.children:
                self.parent.children.remove(self)
            sup_reason = None if self._supervisor is None else self._supervisor.exit_reason
            self.exit_reason = sup_reason or exit_reason(failure=failure)
            self.done.set()

    async def _socket(self) -> socket.socket:
        # The socket outlives a restart of the listener (what is queued on it is kept): it
        # belongs to the system, which closes it when it ends.
        sock = self._sockets.get(self.path)
        if sock is None:
            spec = self.spec
            sock = await bind(spec.host, spec.port, reuseport=spec.policy == "reuseport",
                              listen=spec.policy != "reuseport", backlog=spec.backlog)
            if spec.policy == "reuseport":
                host, port = sock.getsockname()[:2]
                sock = claim_address(sock, str(host), int(port))
            self._sockets[self.path] = sock
        return sock

    async def shutdown(self, grace: float) -> None:
        """Stop accepting, stop the acceptors (each drains), then exit.

        When the system itself is stopping, nothing will accept on the socket again: it is
        closed at once, so that new clients are refused rather than left waiting for an
        answer while the acceptors drain."""
        self._accepting = False
        if self.sock is not None:
            trio.lowlevel.notify_closing(self.sock)
            if self.router.stopping:
                self._running = False
                for key in [self.path, *(k for k in self._sockets
                                         if k.startswith(self.path + "/"))]:
                    sock = self._sockets.pop(key)
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
                        await sup.remove_child(name)
                    why = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                    raise SpawnError(
                        f"{why}; the {len(added)} acceptor(s) this scale started are stopped: "
                        f"back to {len(names)} acceptors"
                    ) from exc
                added.append(str(index))
            for name in reversed(names[count:]):
                await sup.remove_child(name)
                self._close_slot(name)

    # -- acceptors coming and going ---------------------------------------------------------

    async def _follow(self, joined: trio.MemoryReceiveChannel[Membership]) -> None:
        async for change in joined:
            if isinstance(change, ChildUp):
                await self._attach(change.name, change.child)
            elif isinstance(change, ChildDown):
                key = getattr(change.child, "address", None)
                if key is not None:
                    self.dispatcher.retire(key)

    async def _attach(self, name: str, instance: Child) -> None:
        assert self._actor is not None
        assert self.sock is not None
        policy = self.spec.policy
        pid = getattr(instance, "pid", None) or 0
        key = getattr(instance, "address", None)
        family = int(self.sock.family)
        if policy == "shared":
            attach = Attach(listener=self._actor.ref, policy="shared", family=family,
                            sock=SocketHandle.from_socket(self.sock))
        elif policy == "reuseport":
            attach = Attach(listener=self._actor.ref, policy="reuseport", family=family,
                            sock=SocketHandle.from_socket(await self._slot(name)))
        else:
            attach = Attach(listener=self._actor.ref, policy=policy, family=family)
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
                path=self.path, acceptor=instance.path, pid=pid, host=str(self.host),
                port=int(self.port),
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
                str(self.host), int(self.port), reuseport=True, listen=True,
                backlog=self.spec.backlog,
            )
        return sock

    def _close_slot(self, name: str) -> None:
        """Acceptor ``name`` is gone for good (scaled down): what its socket queued goes to
        the others, then it is closed."""
        sock = self._sockets.pop(f"{self.path}/{name}", None)
        if sock is None:
            return
        taken = _accept_all(sock, self.path)
        trio.lowlevel.notify_closing(sock)
        sock.close()
        self._route(taken)

    # -- routing ----------------------------------------------------------------------------

    def _route(self, conns: list[socket.socket]) -> None:
        self._send(self.dispatcher.dispatch([(conn, 0) for conn in conns]))

    def _handed_back(self, conns: list[socket.socket]) -> None:
        """Idle connections a draining acceptor could not keep: to another one, unless the
        system is stopping (then nobody will serve them)."""
        if self.router.stopping or not self._running:
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
            taken, outcome = _outcome(reply, error)
            self._send(self.dispatcher.answered(route, batch.id, taken, outcome))
            if route.doubtful and not route.settling:
                route.settling = True
                self.nursery.start_soon(self._settle, route)

        handoff = Handoff(conns=[SocketHandle.from_socket(conn) for conn, _ in batch.conns])
        self.router.request(route.ref, handoff, answered)

    async def _settle(self, route: Route) -> None:
        """Once the process of an acceptor that died with connections in doubt is gone,
        hand on those it never touched."""
        await route.gone.wait()
        self._send(self.dispatcher.settle(route))

    async def _accept_loop(self) -> None:
        sock = self.sock
        assert sock is not None
        dispatcher = self.dispatcher
        backoff = AcceptBackoff(self.path)
        while self._accepting:
            room = dispatcher.room()
            if not room or dispatcher.waiting:
                dispatcher.capacity = trio.Event()
                await dispatcher.capacity.wait()  # every acceptor is at its cap: the kernel queues
                continue
            try:
                await trio.lowlevel.wait_readable(sock)
            except trio.ClosedResourceError:
                return
            # Take what is queued before yielding (one wake-up, many connections), and hand
            # them over together: one hand-off per acceptor, however many it gets.
            conns, failure = _accept_some(sock, room)
            if conns:
                backoff.accepted()
                self._route(conns)
            if failure is None:
                continue
            if accept_failure(failure) == "closed":
                return
            await backoff.starved_by(failure)

    # -- figures and reloads ----------------------------------------------------------------

    async def stats(self) -> list[AcceptorStats]:
        """Per-acceptor figures: open and total connections, pid, restarts."""
        sup = self._supervisor
        if sup is None:
            return []
        found = []
        for name, instance in sorted(sup.instances().items()):
            restarts = sup.restart_counts.get(name, 0)
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


def _accept_some(sock: socket.socket, most: int
                 ) -> tuple[list[socket.socket], OSError | None]:
    """Up to ``most`` connections queued on ``sock`` now (without waiting), and the error
    that stopped it early, if one did: the socket was closed, or there is no fd or memory
    for more (see :func:`accept_failure`)."""
    conns: list[socket.socket] = []
    while len(conns) < most:
        try:
            conn, _ = sock.accept()
        except BlockingIOError:
            break
        except OSError as exc:
            if accept_failure(exc) == "aborted":
                continue  # that client gave up: the next one
            return conns, exc
        conns.append(conn)
    return conns, None


def _accept_all(sock: socket.socket, path: str) -> list[socket.socket]:
    """Every connection queued on a socket about to be closed (which would reset them)."""
    conns, failure = _accept_some(sock, 1 << 30)
    if failure is not None and accept_failure(failure) == "starved":
        log.error("%s: out of file descriptors while taking over a socket's queue", path)
    return conns


def run_listeners(
    starter: Starter, sockets: dict[str, socket.socket], registry: dict[str, Listener]
) -> None:
    """Make ``starter`` run listener specs as :class:`Listener` (with these system-owned
    ``sockets`` and ``registry``)."""

    def make(spec: SupervisorSpec, parent: Parent, path: str) -> Listener:
        assert isinstance(spec, ListenerSpec)
        return Listener(spec, parent=parent, path=path, starter=starter, sockets=sockets,
                        registry=registry)

    starter.kinds[ListenerSpec] = make
