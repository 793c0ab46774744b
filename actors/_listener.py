"""Listener and acceptors: one listening socket in the master, connections served by workers.

The listener is a supervisor (of its acceptor worker processes) that also binds the socket
in the master and owns it for as long as it lives, so worker churn loses no queued
connection. Policies:

``round_robin`` (default, Node's SCHED_RR): the master accepts, and hands each connection's fd
to the next acceptor with a request that the acceptor acknowledges; at most ``in_flight``
hand-offs per acceptor are unacknowledged. A connection an acceptor refuses, or one it cannot
get because it died, goes to another. The master closes its copy once the hand-off is taken.

``least_busy``: as round robin, to the acceptor with the fewest open connections.

``shared`` (Node's SCHED_NONE): every acceptor (and every replacement) gets the listening
socket itself and accepts on it; the master keeps its copy and never accepts.

``reuseport``: each acceptor binds a socket of its own with ``SO_REUSEPORT`` and the kernel
spreads connections. Caveat: when an acceptor's socket closes (a crash, a drain, a reload),
the connections the kernel had queued on it are reset, not moved to the others.
"""

from __future__ import annotations

import errno
import itertools
import logging
import os
import socket
from collections import deque
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import trio

from protocol import Message, SocketHandle

from ._actor import Actor, handler
from ._cell import Cell, Child, Parent
from ._errors import SpawnError
from ._events import Event
from ._node import Node
from ._ref import ActorRef
from ._spec import Shutdown, SupervisorSpec, supervisor, worker
from ._supervisor import Supervisor, _Ended

__all__ = [
    "Acceptor",
    "AcceptorStats",
    "BindError",
    "Listener",
    "ListenerReport",
    "ListenerSpec",
    "Policy",
    "listener",
]

log = logging.getLogger("actors")

Policy = Literal["round_robin", "least_busy", "shared", "reuseport"]
_POLICIES = ("round_robin", "least_busy", "shared", "reuseport")
_ROUTED = ("round_robin", "least_busy")
_SHARED_ACCEPT_BATCH = 4


class BindError(SpawnError):
    """The listening socket could not be bound (an address in use, a bad host)."""

    fatal = True  # a port in use does not free itself for a restart loop


# -- messages between the listener and its acceptors ------------------------------------------


class Attach(Message, tag="actors.listener.Attach"):
    """Sent to an acceptor once it is ready: where connections come from."""

    listener: ActorRef
    policy: Policy
    sock: SocketHandle | None = None  # shared: the listening socket itself
    host: str = ""
    port: int = 0  # reuseport: where to bind


class Handoff(Message, tag="actors.listener.Handoff"):
    """One accepted connection (round_robin, least_busy): reply Taken or Refused."""

    conn: SocketHandle


class Taken(Message, tag="actors.listener.Taken"):
    pass


class Refused(Message, tag="actors.listener.Refused"):
    reason: str


class Closed(Message, tag="actors.listener.Closed"):
    """An acceptor finished ``count`` connections."""

    acceptor: str
    count: int = 1


class GetStats(Message, tag="actors.listener.GetStats"):
    pass


class AcceptorStats(Message, tag="actors.listener.AcceptorStats"):
    """How one acceptor is doing."""

    path: str
    pid: int
    open: int
    total: int
    restarts: int = 0


class ListenerReport(Event, tag="actors.listener.ListenerReport"):
    """A listener's address and the figures of its acceptors (sent every ``report_every``)."""

    host: str
    port: int
    policy: Policy
    acceptors: list[AcceptorStats]


class HandlePassed(Event, tag="actors.listener.HandlePassed"):
    """A listener passed its listening socket to an acceptor (the ``shared`` policy).

    Sent once per acceptor instance, replacements included. Connections handed over one by
    one (``round_robin``, ``least_busy``) are counted in :class:`AcceptorStats` rather than
    sent as an event each: an event per connection would cost more than the hand-off.
    """

    acceptor: str
    pid: int
    handle: Literal["listening socket"] = "listening socket"
    host: str
    port: int


# -- the acceptor (in each worker process) ----------------------------------------------------


class _AcceptorState:
    def __init__(self) -> None:
        self.listener: ActorRef | None = None
        self.policy: Policy = "round_robin"
        self.open = 0
        self.total = 0
        self.closed_unreported = 0
        self.draining = False
        self.idle = trio.Event()
        self.idle.set()
        self.listening: list[socket.socket] = []


class Acceptor(Actor):
    """Base class of actors that serve connections: override :meth:`handle`.

    Acceptors run as worker processes under a :func:`listener`. Each connection is served by
    ``handle`` in a task of its own. An exception escaping ``handle`` triggers the suicide
    signal by default (``on_error = "suicide"``): the worker asks for its replacement, stops
    taking connections and lets its other connections finish (up to its shutdown time)
    before it exits. With ``on_error = "log"`` the exception is logged and the worker goes
    on. A subclass that overrides ``drain`` must await ``super().drain()``.
    """

    on_error: ClassVar[Literal["suicide", "log"]] = "suicide"
    max_connections: ClassVar[int] = 100_000
    """Connections served at once before hand-offs are refused (sent to other acceptors)."""

    async def handle(self, stream: trio.SocketStream) -> None:
        """Serve one connection; the stream is closed when this returns."""
        raise NotImplementedError(f"{type(self).__qualname__} must define handle()")

    @property
    def _acceptor(self) -> _AcceptorState:
        state = self.__dict__.get("_acceptor_state")
        if state is None:
            state = self.__dict__["_acceptor_state"] = _AcceptorState()
        return state

    # Attach and Handoff are taken by the task that reads the worker's channel, not through
    # the mailbox: both only start tasks and answer at once, and a hand-off that waited
    # behind the actor's own task would cost a scheduling round per connection.
    __inline_handlers__: ClassVar[dict[type[Message], str]] = {
        Attach: "_take_attach",
        Handoff: "_take_handoff",
    }

    def _take_attach(self, msg: Attach) -> None:
        state = self._acceptor
        state.listener = msg.listener
        state.policy = msg.policy
        if msg.policy == "shared" and msg.sock is not None:
            sock = msg.sock.into_socket()
            state.listening.append(sock)
            self.ctx.start_soon(self._accept_loop, sock)
        elif msg.policy == "reuseport":
            sock = _bind(msg.host, msg.port, reuseport=True, listen=True)
            state.listening.append(sock)
            self.ctx.start_soon(self._accept_loop, sock)

    def _take_handoff(self, msg: Handoff) -> Taken | Refused:
        state = self._acceptor
        if state.draining or state.open >= self.max_connections:
            msg.conn.close()
            return Refused(reason="draining" if state.draining else "at max_connections")
        self._serve(msg.conn.into_socket())
        return Taken()

    @handler
    async def _on_stats(self, msg: GetStats) -> AcceptorStats:
        state = self._acceptor
        return AcceptorStats(path=self.ctx.path, pid=os.getpid(), open=state.open,
                             total=state.total)

    async def _accept_loop(self, listening: socket.socket) -> None:
        state = self._acceptor
        while not state.draining:
            try:
                await trio.lowlevel.wait_readable(listening)
            except trio.ClosedResourceError:
                return
            # Take a few queued connections per wake-up (fewer system calls), but not all of
            # them: the other acceptors sharing the socket were woken too and should get some.
            for _ in range(_SHARED_ACCEPT_BATCH):
                if state.draining or state.open >= self.max_connections:
                    break
                try:
                    conn, _ = listening.accept()
                except BlockingIOError:
                    break
                except OSError as exc:
                    if exc.errno in (errno.EBADF, errno.EINVAL):
                        return  # closed by drain
                    if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                        log.error("acceptor %s cannot accept: %s", self.ctx.path, exc)
                        await trio.sleep(0.1)
                        break
                    continue  # ECONNABORTED and friends: the client gave up
                self._serve(conn)
            if state.open >= self.max_connections:
                await state.idle.wait()

    def _serve(self, conn: socket.socket) -> None:
        state = self._acceptor
        state.open += 1
        state.total += 1
        state.idle = trio.Event() if state.idle.is_set() else state.idle
        self.ctx._cell.nursery.start_soon(self._connection, conn)

    async def _connection(self, conn: socket.socket) -> None:
        state = self._acceptor
        conn.setblocking(False)
        stream = trio.SocketStream(trio.socket.from_stdlib_socket(conn))
        try:
            await self.handle(stream)
        except (trio.BrokenResourceError, ConnectionError) as exc:
            # The client reset or vanished: an ordinary end of a connection, not a bug.
            log.debug("connection to %s ended abruptly: %r", self.ctx.path, exc)
        except Exception as exc:
            if self.on_error == "suicide":
                self.ctx.crash(exc)
            else:
                log.error("connection handler of %s raised", self.ctx.path, exc_info=exc)
        finally:
            stream.socket.close()
            state.open -= 1
            if state.open == 0:
                state.idle.set()
            if state.listener is not None and state.policy == "least_busy":
                state.closed_unreported += 1
                if state.closed_unreported == 1:
                    self.ctx._cell.nursery.start_soon(self._report_closed)

    async def _report_closed(self) -> None:
        # One tell for all the connections closed since the last one went out.
        state = self._acceptor
        await trio.lowlevel.checkpoint()
        count, state.closed_unreported = state.closed_unreported, 0
        if state.listener is not None and count:
            try:
                await state.listener.tell(Closed(acceptor=self.ctx.path, count=count))
            except Exception as exc:  # the master is going away: nobody needs the count
                log.debug("cannot report closed connections: %r", exc)

    def _in_flight(self) -> int | None:
        return self._acceptor.open

    async def drain(self) -> None:
        """Stop taking connections, then wait for the open ones to finish."""
        state = self._acceptor
        state.draining = True
        for sock in state.listening:
            trio.lowlevel.notify_closing(sock)
            sock.close()
        state.listening.clear()
        await state.idle.wait()


# -- the listener (in the master) -------------------------------------------------------------


@dataclass(frozen=True)
class ListenerSpec(SupervisorSpec):
    """A listener: the socket, the policy, and ``count`` acceptors (its children)."""

    host: str = "127.0.0.1"
    port: int = 0
    policy: Policy = "round_robin"
    in_flight: int = 64
    backlog: int = 1024
    report_every: float = 5.0


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
    **kwargs: Any,
) -> ListenerSpec:
    """Spec of a listener on ``host:port`` (port 0: any free port) served by ``count``
    acceptor processes (default: the number of CPUs). ``kwargs`` go to the acceptor's
    ``__init__``; ``shutdown`` is each acceptor's time to drain its connections."""
    if not (isinstance(acceptor, type) and issubclass(acceptor, Acceptor)):
        raise TypeError(f"listener() takes an Acceptor subclass, not {acceptor!r}")
    if policy not in _POLICIES:
        raise ValueError(f"policy must be one of {_POLICIES}, not {policy!r}")
    if count is None:
        count = os.cpu_count() or 1
    if count < 1:
        raise ValueError("a listener needs at least one acceptor")
    if not 0 <= port <= 65535:
        raise ValueError(f"port must be in 0..65535, not {port}")
    if in_flight < 1:
        raise ValueError("in_flight must be >= 1")
    children = tuple(
        worker(acceptor, name=str(i), process=True, shutdown=shutdown, **kwargs)
        for i in range(count)
    )
    checked = supervisor(name, max_restarts=max_restarts, within=within, children=children)
    return ListenerSpec(
        name=checked.name, strategy="one_for_one", max_restarts=checked.max_restarts,
        within=checked.within, children=checked.children, shutdown="infinity",
        host=host, port=port, policy=policy, in_flight=in_flight, backlog=backlog,
        report_every=report_every,
    )


def _bind(host: str, port: int, *, reuseport: bool, listen: bool, backlog: int = 1024
          ) -> socket.socket:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise BindError(f"cannot listen on {host}:{port}: {exc}") from exc
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuseport:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
        if listen:
            sock.listen(backlog)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        reason = "address already in use" if exc.errno == errno.EADDRINUSE else exc.strerror
        raise BindError(f"cannot listen on {host}:{port}: {reason}") from exc
    return sock


@dataclass
class _Route:
    """The listener's view of one running acceptor."""

    name: str
    instance: Child
    ref: ActorRef
    pid: int
    in_flight: dict[int, socket.socket]
    open: int = 0
    total: int = 0


class _Router(Actor):
    """The listener's own actor: acceptors report closed connections to it."""

    def __init__(self, owner: Listener) -> None:
        self.owner = owner

    @handler
    async def closed(self, msg: Closed) -> None:
        self.owner._on_closed(msg.acceptor, msg.count)


class Listener(Supervisor):
    """A running listener: binds, supervises its acceptors, and routes connections.

    The listening socket is bound by the first incarnation and kept by the system until it
    closes, so a restarted listener serves the same address and loses no queued connection.
    """

    def __init__(self, node: Node, spec: ListenerSpec, *, parent: Parent, path: str) -> None:
        super().__init__(node, spec, parent=parent, path=path)
        self.lspec = spec
        self.sock: socket.socket | None = None
        self.host = spec.host
        self.port = spec.port
        self._router: Cell | None = None
        self._routes: dict[str, _Route] = {}
        self._turn = 0
        self._ids = itertools.count(1)
        self._waiting: deque[tuple[socket.socket, int]] = deque()  # to re-route
        self._capacity = trio.Event()
        self._accepting = False
        self._reload_lock = trio.Lock()

    async def _prepare(self) -> None:
        spec = self.lspec
        policy = spec.policy
        # The socket outlives a restart of the listener (what is queued on it is kept): it
        # belongs to the system, which closes it when it ends.
        self.sock = self.node.listen_sockets.get(self.path)
        if self.sock is None:
            self.sock = _bind(spec.host, spec.port, reuseport=policy == "reuseport",
                              listen=policy != "reuseport", backlog=spec.backlog)
            self.node.listen_sockets[self.path] = self.sock
        self.host, self.port = self.sock.getsockname()[:2]
        self.node.listeners[self.path] = self
        # The router shares the listener's path: the listener's own events speak for both.
        router = Cell(self.node, _Router(self), path=self.path, parent=self,
                      shutdown_timeout=1.0, report_events=False)
        self.children.append(router)
        await self.nursery.start(router.run)
        self._router = router
        if policy in _ROUTED:
            self._accepting = True
            self.nursery.start_soon(self._accept_loop)
        if spec.report_every > 0:
            self.nursery.start_soon(self._report_loop)

    def _address(self) -> str | None:
        return None if self._router is None else self._router.address

    async def _before_stop(self) -> None:
        self._accepting = False
        if self.sock is not None:
            trio.lowlevel.notify_closing(self.sock)

    def _finish(self) -> None:
        self._accepting = False
        if self.node.listeners.get(self.path) is self:
            del self.node.listeners[self.path]
        for route in self._routes.values():
            for conn in route.in_flight.values():
                conn.close()
        self._routes.clear()
        while self._waiting:
            self._waiting.popleft()[0].close()

    # -- acceptors coming and going ---------------------------------------------------------

    async def _child_up(self, name: str, instance: Child) -> None:
        assert self._router is not None
        assert self.sock is not None
        pid = getattr(instance, "pid", None) or 0
        attach = Attach(listener=self._router.ref, policy=self.lspec.policy)
        if self.lspec.policy == "shared":
            attach = Attach(listener=self._router.ref, policy="shared",
                            sock=SocketHandle.from_socket(self.sock))
        elif self.lspec.policy == "reuseport":
            attach = Attach(listener=self._router.ref, policy="reuseport",
                            host=self.host, port=self.port)
        try:
            await instance.ref.tell(attach)
        except Exception as exc:
            log.warning("could not attach acceptor %s: %r", instance.path, exc)
            return
        if attach.sock is not None:
            self.node.publish(HandlePassed(
                path=self.path, acceptor=instance.path, pid=pid, host=self.host, port=self.port
            ))
        self._routes[name] = _Route(name, instance, instance.ref, pid, {})
        self._flush_waiting()
        self._capacity.set()

    def _child_down(self, name: str, instance: Child) -> None:
        route = self._routes.get(name)
        if route is None or route.instance is not instance:
            return
        del self._routes[name]
        for conn in route.in_flight.values():
            self._waiting.append((conn, 0))  # no acknowledgement came: someone else's now
        route.in_flight.clear()
        self._flush_waiting()

    # -- routing ----------------------------------------------------------------------------

    def _has_capacity(self) -> bool:
        cap = self.lspec.in_flight
        return any(len(route.in_flight) < cap for route in self._routes.values())

    def _pick(self, exclude: str | None = None) -> _Route | None:
        cap = self.lspec.in_flight
        candidates = [
            r for r in self._routes.values() if len(r.in_flight) < cap and r.name != exclude
        ]
        if not candidates:
            return None
        if self.lspec.policy == "least_busy":
            return min(candidates, key=lambda r: (r.open + len(r.in_flight), r.total))
        self._turn += 1
        return candidates[self._turn % len(candidates)]

    def _dispatch(self, conn: socket.socket, attempts: int = 0, exclude: str | None = None
                  ) -> None:
        if attempts > 2 * max(1, len(self._routes)) + 2:
            log.error("%s: no acceptor would take a connection; closing it", self.path)
            conn.close()
            return
        route = self._pick(exclude)
        if route is None:
            self._waiting.append((conn, attempts))
            return
        handoff_id = next(self._ids)
        route.in_flight[handoff_id] = conn

        def answered(reply: Message | None, error: BaseException | None) -> None:
            self._answered(route, handoff_id, attempts, reply)

        self.node.request(route.ref, Handoff(conn=SocketHandle.from_socket(conn)), answered)

    def _answered(self, route: _Route, handoff_id: int, attempts: int,
                  reply: Message | None) -> None:
        conn = route.in_flight.pop(handoff_id, None)
        if conn is None:
            return  # already sent elsewhere (the acceptor went down first)
        if isinstance(reply, Taken):
            route.open += 1
            route.total += 1
            conn.close()  # the acceptor has its own copy now
        else:
            self._dispatch(conn, attempts + 1, exclude=route.name)
        self._flush_waiting()
        self._capacity.set()

    def _flush_waiting(self) -> None:
        while self._waiting and self._has_capacity():
            conn, attempts = self._waiting.popleft()
            self._dispatch(conn, attempts)

    def _on_closed(self, acceptor_path: str, count: int) -> None:
        route = self._routes.get(acceptor_path.rpartition("/")[2])
        if route is not None:
            route.open = max(0, route.open - count)

    async def _accept_loop(self) -> None:
        sock = self.sock
        assert sock is not None
        while self._accepting:
            if not self._has_capacity() or self._waiting:
                self._capacity = trio.Event()
                await self._capacity.wait()  # every acceptor is at its cap: let the kernel queue
                continue
            try:
                await trio.lowlevel.wait_readable(sock)
            except trio.ClosedResourceError:
                return
            # Take what is queued before yielding: one wake-up, many connections.
            while self._accepting and self._has_capacity():
                try:
                    conn, _ = sock.accept()
                except BlockingIOError:
                    break
                except OSError as exc:
                    if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                        log.error("%s cannot accept: %s", self.path, exc)
                        await trio.sleep(0.1)
                        break
                    if exc.errno in (errno.EBADF, errno.EINVAL):
                        return
                    continue
                self._dispatch(conn)

    # -- figures and reloads ----------------------------------------------------------------

    async def stats(self) -> list[AcceptorStats]:
        """Per-acceptor figures: open and total connections, pid, restarts."""
        found = []
        for name, route in list(self._routes.items()):
            restarts = self.restart_counts.get(name, 0)
            try:
                with trio.move_on_after(2):
                    reply = await route.ref.ask(GetStats(), AcceptorStats)
                    found.append(reply.model_copy(update={"restarts": restarts}))
            except Exception as exc:
                log.debug("no stats from %s: %r", route.instance.path, exc)
        return found

    async def _report_loop(self) -> None:
        while True:
            await trio.sleep(self.lspec.report_every)
            self.node.publish(ListenerReport(
                path=self.path, host=str(self.host), port=int(self.port),
                policy=self.lspec.policy, acceptors=await self.stats(),
            ))

    async def reload(self) -> None:
        """Replace the acceptors one at a time: start the new one, wait until it is ready,
        then drain the old one (no connection is refused or dropped on the way)."""
        async with self._reload_lock:
            for name, slot in list(self._slots.items()):
                old = slot.instance
                if old is None or not hasattr(old, "shutdown") or isinstance(old, _Ended):
                    continue
                self._child_down(name, old)
                address = getattr(old, "address", None)
                if address is not None:
                    self.node.unregister_name(old.path, address)
                slot.instance = None  # its exit is no longer news
                if not await self._start(name):
                    log.error("reload of %s: the new acceptor did not start", old.path)
                await old.shutdown(old.shutdown_timeout)

