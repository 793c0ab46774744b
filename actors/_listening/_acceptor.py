"""``Acceptor``: the worker side of a listener; it serves the connections it gets.

Depending on the listener's policy, an acceptor is handed connections by the master
(``round_robin``, ``least_busy``: each :class:`Handoff`, of one or several connections, is
answered :class:`Taken`), or accepts on a listening socket the master passed it: the
listener's own (``shared``), or a ``SO_REUSEPORT`` socket the master keeps for this
acceptor's place (``reuseport``). Any acceptor also takes the idle connections another one
handed back as it drained.
"""

from __future__ import annotations

import logging
import os
import socket
from typing import ClassVar, Literal

import trio

from protocol import Message, SocketHandle

from .._base._actor import Actor, handler
from .._base._errors import ActorError
from .._base._handoff import (
    AcceptorStats,
    Attach,
    Closed,
    GetStats,
    HandBack,
    Handoff,
    Policy,
    Taken,
)
from .._base._ref import ActorRef
from ._accepting import accept_loop
from ._sockets import AcceptBackoff, unread_bytes

__all__ = ["Acceptor"]

log = logging.getLogger("actors")

_SHARED_ACCEPT_BATCH = 4
# errnos of accept() that mean "no fd for you now" (not the client's fault): back off.


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
        self.waiting: set[trio.SocketStream] = set()  # in receive(), between requests
        self.woken: set[trio.SocketStream] = set()  # waiting ones the drain woke up
        self.recycle_after: int | None = None
        self.family = socket.AF_INET  # of the connections handed over


class Acceptor(Actor):
    """Base class of actors that serve connections: override :meth:`handle`.

    Acceptors run as worker processes under a :func:`listener`. Each connection is served by
    ``handle`` in a task of its own. An exception escaping ``handle`` triggers the suicide
    signal by default (``on_error = "suicide"``): the worker asks for its replacement, stops
    taking connections and lets its other connections finish (up to its shutdown time)
    before it exits. With ``on_error = "log"`` the exception is logged and the worker goes
    on. A subclass that overrides ``drain`` must await ``super().drain()``.

    When an acceptor drains (a reload, a scale-down, a recycle, a stop), the connections in
    the middle of a request finish it; at the next request boundary (:meth:`receive`), a
    request the client already sent is still served, and an idle connection is closed, as
    HTTP servers close idle keep-alive connections. With ``stateless_connections = True``
    (its connections carry no state from one request to the next: no login, no selected
    database), an idle connection is instead handed to another acceptor, with whatever the
    client sent meanwhile, and the client never notices the drain.
    """

    on_error: ClassVar[Literal["suicide", "log"]] = "suicide"
    max_connections: ClassVar[int] = 100_000
    """Connections served at once before hand-offs are refused (sent to other acceptors)."""
    stateless_connections: ClassVar[bool] = False
    """Whether an idle connection (between requests) may move to another acceptor when
    this one drains. After :meth:`receive` returned None, ``handle`` must then return
    without using the stream: it may belong to another process already."""

    async def handle(self, stream: trio.SocketStream) -> None:
        """Serve one connection; the stream is closed when this returns."""
        raise NotImplementedError(f"{type(self).__qualname__} must define handle()")

    async def receive(self, stream: trio.SocketStream, max_bytes: int | None = None
                      ) -> bytes | None:
        """Wait for the client's next request: its first bytes, or None once the client
        closed the connection *or this acceptor drains* (then return at once).

        Use it where the connection is idle (between requests): a drain then waits only for
        the requests in progress, not for clients that are merely connected. A request the
        client sent before the drain reached it is still returned (and should be served);
        with ``stateless_connections``, an idle connection goes on in another acceptor.
        Reads in the middle of a request should use ``stream.receive_some`` as usual.
        """
        state = self._acceptor
        if state.draining:
            return await self._at_boundary(stream, max_bytes)
        # A drain wakes the waiting streams (a set entry costs far less than a cancel scope
        # per read): their reads end as if their socket were closing, the socket untouched.
        state.waiting.add(stream)
        try:
            data = await stream.receive_some(max_bytes)
        except trio.ClosedResourceError:
            if stream not in state.woken:
                raise
            state.woken.discard(stream)
            return await self._at_boundary(stream, max_bytes)
        finally:
            state.waiting.discard(stream)
        return data or None

    async def _at_boundary(self, stream: trio.SocketStream, max_bytes: int | None
                           ) -> bytes | None:
        """Between two requests while draining: the next one if the client already sent
        it (or, for stateless connections, the connection goes to another acceptor)."""
        sock = stream.socket
        if sock.fileno() < 0:
            return None
        if self.stateless_connections and await self._hand_back(stream):
            return None
        try:
            pending = unread_bytes(sock.fileno())
        except OSError:
            return None
        if pending:
            data = await stream.receive_some(max_bytes)
            return data or None
        return None

    async def _hand_back(self, stream: trio.SocketStream) -> bool:
        """Give an idle connection back to the listener (to go to another acceptor); False
        if it cannot take it (then this one closes it)."""
        listener = self._acceptor.listener
        if listener is None:
            return False
        fd = stream.socket.detach()  # from here the stream is unusable: the fd moves on
        try:
            await listener.tell(HandBack(conns=[SocketHandle(fd)]))
        except ActorError as exc:
            log.debug("cannot hand a connection back: %r", exc)
        finally:
            os.close(fd)  # the message carries its own copy (or nobody wants it)
        return True

    @property
    def _acceptor(self) -> _AcceptorState:
        state = self.__dict__.get("_acceptor_state")
        if state is None:
            state = self.__dict__["_acceptor_state"] = _AcceptorState()
        return state

    # Attach and Handoff are taken by the task that reads the worker's channel, not through
    # the mailbox: both only start tasks and answer at once, and a hand-off that waited
    # behind the actor's own task would cost a scheduling round per connection.
    _inline_handlers: ClassVar[dict[type[Message], str]] = {
        Attach: "_take_attach",
        Handoff: "_take_handoff",
    }

    def _take_attach(self, msg: Attach) -> None:
        state = self._acceptor
        state.listener = msg.listener
        state.policy = msg.policy
        state.recycle_after = msg.recycle_after
        state.family = socket.AddressFamily(msg.family)
        if msg.sock is not None:  # shared, reuseport: a listening socket to accept on
            sock = msg.sock.into_socket()
            if state.draining:
                sock.close()
                return
            state.listening.append(sock)
            self.ctx.start_soon(self._accept_loop, sock)

    def _take_handoff(self, msg: Handoff) -> Taken:
        """Serve the connections handed over, in order, while there is room; the others are
        refused (closed here: the master has its own copies and sends them elsewhere)."""
        state = self._acceptor
        count = 0
        refused: Literal["", "draining", "full"] = ""
        for handle in msg.conns:
            if not refused:
                if state.draining:
                    refused = "draining"
                elif state.open >= self.max_connections:
                    refused = "full"
            if refused:
                handle.close()
            else:
                # Family and type given: the kernel is not asked what it is (three calls).
                self._serve(socket.socket(state.family, socket.SOCK_STREAM, 0,
                                          fileno=handle.detach()))
                count += 1
        return Taken(count=count, refused=refused)

    @handler
    async def _on_stats(self, msg: GetStats) -> AcceptorStats:
        state = self._acceptor
        return AcceptorStats(path=self.ctx.path, pid=os.getpid(), open=state.open,
                             total=state.total)

    async def _accept_loop(self, listening: socket.socket) -> None:
        state = self._acceptor

        def room() -> int:
            # A few queued connections per wake-up (fewer system calls), not all of them:
            # the other acceptors sharing the socket were woken too and should get some.
            if state.draining:
                return -1
            return max(0, min(_SHARED_ACCEPT_BATCH, self.max_connections - state.open))

        def take(conns: list[socket.socket]) -> None:
            for conn in conns:
                self._serve(conn)

        await accept_loop(listening, room=room, wait_for_room=state.idle.wait, take=take,
                          backoff=AcceptBackoff(f"acceptor {self.ctx.path}"))

    def _serve(self, conn: socket.socket) -> None:
        state = self._acceptor
        state.open += 1
        state.total += 1
        state.idle = trio.Event() if state.idle.is_set() else state.idle
        self.ctx.start_soon(self._connection, conn)
        if state.recycle_after is not None and state.total >= state.recycle_after:
            # Served its share (max_connections_per_worker): take no more, and have a
            # successor started; this one drains once it is up.
            state.recycle_after = None
            self._stop_accepting()
            self.ctx.request_replacement(f"served {state.total} connections")

    async def _connection(self, conn: socket.socket) -> None:
        state = self._acceptor
        stream = trio.SocketStream(trio.socket.from_stdlib_socket(conn))  # (non-blocking now)
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
                    self.ctx.start_soon(self._report_closed)

    async def _report_closed(self) -> None:
        # One tell for all the connections closed since the last one went out.
        state = self._acceptor
        await trio.lowlevel.checkpoint()
        count, state.closed_unreported = state.closed_unreported, 0
        if state.listener is not None and count:
            try:
                await state.listener.tell(Closed(
                    acceptor=self.ctx.path, address=self.ctx.ref.wire(), count=count
                ))
            except ActorError as exc:  # the listener is going away: nobody needs the count
                log.debug("cannot report closed connections: %r", exc)

    def _in_flight(self) -> int | None:
        return self._acceptor.open

    async def drain(self) -> None:
        """Stop taking connections, then wait for the open ones to finish (the idle ones
        at once: see :meth:`receive`)."""
        state = self._acceptor
        self._stop_accepting()
        for stream in list(state.waiting):  # idle connections: nothing in progress to finish
            state.woken.add(stream)
            trio.lowlevel.notify_closing(stream.socket)
        await state.idle.wait()

    def _stop_accepting(self) -> None:
        state = self._acceptor
        state.draining = True
        for sock in state.listening:
            trio.lowlevel.notify_closing(sock)
            sock.close()
        state.listening.clear()
