"""``Acceptor``: the worker side of a listener; it serves the connections it gets.

Depending on the listener's policy, an acceptor is handed connections one at a time by the
master (``round_robin``, ``least_busy``: each :class:`Handoff` is answered :class:`Taken` or
:class:`Refused`), accepts on the listening socket the master passed it (``shared``), or binds
a ``SO_REUSEPORT`` socket of its own (``reuseport``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from typing import ClassVar, Literal

import trio

from protocol import Message

from ._actor import Actor, handler
from ._errors import ActorError
from ._handoff import AcceptorStats, Attach, Closed, GetStats, Handoff, Policy, Refused, Taken
from ._ref import ActorRef
from ._sockets import accept_failure, bind

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
        self.recycle_after: int | None = None


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

    async def receive(self, stream: trio.SocketStream, max_bytes: int | None = None
                      ) -> bytes | None:
        """Wait for the client's next request: its first bytes, or None once the client
        closed the connection *or this acceptor drains* (then close it at once).

        Use it where the connection is idle (between requests), as HTTP servers close
        idle keep-alive connections when they shut down: a drain then waits only for
        the requests in progress, not for clients that are merely connected. Reads in the
        middle of a request should use ``stream.receive_some`` as usual.
        """
        state = self._acceptor
        if state.draining:
            return None
        # A drain shuts the reading side of the waiting streams down: their reads end as
        # if the client had closed (a set entry costs far less than a cancel scope per read).
        state.waiting.add(stream)
        try:
            data = await stream.receive_some(max_bytes)
        finally:
            state.waiting.discard(stream)
        return data or None

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
        state.recycle_after = msg.recycle_after
        if msg.policy == "shared" and msg.sock is not None:
            sock = msg.sock.into_socket()
            state.listening.append(sock)
            self.ctx.start_soon(self._accept_loop, sock)
        elif msg.policy == "reuseport":
            self.ctx.start_soon(self._bind_and_accept, msg.host, msg.port)

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

    async def _bind_and_accept(self, host: str, port: int) -> None:
        state = self._acceptor
        if state.draining:
            return
        sock = await bind(host, port, reuseport=True, listen=True)
        state.listening.append(sock)
        await self._accept_loop(sock)

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
                    failure = accept_failure(exc)
                    if failure == "closed":
                        return  # by drain
                    if failure == "starved":
                        log.error("acceptor %s cannot accept: %s", self.ctx.path, exc)
                        await trio.sleep(0.1)
                        break
                    continue
                self._serve(conn)
            if state.open >= self.max_connections:
                await state.idle.wait()

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
        """Stop taking connections, then wait for the open ones to finish."""
        state = self._acceptor
        self._stop_accepting()
        for stream in list(state.waiting):  # idle connections: nothing in progress to finish
            with contextlib.suppress(OSError):
                stream.socket.shutdown(socket.SHUT_RD)
        await state.idle.wait()

    def _stop_accepting(self) -> None:
        state = self._acceptor
        state.draining = True
        for sock in state.listening:
            trio.lowlevel.notify_closing(sock)
            sock.close()
        state.listening.clear()
