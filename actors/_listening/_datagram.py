"""``DatagramAcceptor``: the worker side of a UDP listener; it answers the datagrams it gets.

A UDP listener's acceptors receive on a socket the master passed them (in the
:class:`Attach` sent once each is ready): the listener's own socket (``shared``: the kernel
gives each datagram to one of the processes waiting on it) or the ``SO_REUSEPORT`` socket
the master keeps for this acceptor's place (``reuseport``: the kernel spreads the senders
over the sockets). Closing its copy as it drains loses nothing queued: the master's copy
keeps the socket, and what waits on it goes to the others (``shared``) or to its successor
(``reuseport``).
"""

from __future__ import annotations

import logging
import os
from typing import ClassVar, Literal

import trio

from protocol import Message

from .._base._actor import Actor, handler
from .._base._handoff import AcceptorStats, Attach, GetStats

__all__ = ["DatagramAcceptor"]

log = logging.getLogger("actors")

MAX_DATAGRAM = 65535
"""The largest UDP payload (IPv4: 65507 bytes; a larger buffer costs nothing more)."""


class _DatagramState:
    def __init__(self) -> None:
        self.in_flight = 0
        self.total = 0
        self.draining = False
        self.idle = trio.Event()
        self.idle.set()
        self.sockets: list[trio.socket.SocketType] = []


class DatagramAcceptor(Actor):
    """Base class of actors that answer UDP datagrams: override :meth:`handle_datagram`.

    They run as worker processes under a ``listener(..., transport="udp")``. Each datagram
    is handled in a task of its own, at most :attr:`max_in_flight` at once (then the next
    waits in the kernel's queue); a returned value is sent back to the sender's address.
    An exception escaping ``handle_datagram`` triggers the suicide signal by default
    (``on_error = "suicide"``: the worker asks for its replacement and drains); with
    ``on_error = "log"`` it is logged and the worker goes on. A subclass that overrides
    ``drain`` must await ``super().drain()``.
    """

    on_error: ClassVar[Literal["suicide", "log"]] = "suicide"
    max_in_flight: ClassVar[int] = 1024
    """Datagrams handled at once; the next wait in the socket's queue meanwhile."""

    async def handle_datagram(self, data: bytes, address: tuple[str, int]) -> bytes | None:
        """Answer one datagram from ``address``: the bytes to send back, or None."""
        raise NotImplementedError(f"{type(self).__qualname__} must define handle_datagram()")

    @property
    def _datagrams(self) -> _DatagramState:
        state = self.__dict__.get("_datagram_state")
        if state is None:
            state = self.__dict__["_datagram_state"] = _DatagramState()
        return state

    # Attach is taken by the task that reads the worker's channel (it only starts a task).
    _inline_handlers: ClassVar[dict[type[Message], str]] = {Attach: "_take_attach"}

    def _take_attach(self, msg: Attach) -> None:
        if msg.sock is None:
            log.error("%s: a datagram acceptor needs a socket to receive on", self.ctx.path)
            return
        sock = trio.socket.from_stdlib_socket(msg.sock.into_socket())
        state = self._datagrams
        if state.draining:
            sock.close()
            return
        state.sockets.append(sock)
        self.ctx.start_soon(self._receive_loop, sock)

    @handler
    async def _on_stats(self, msg: GetStats) -> AcceptorStats:
        state = self._datagrams
        return AcceptorStats(path=self.ctx.path, pid=os.getpid(), open=state.in_flight,
                             total=state.total)

    async def _receive_loop(self, sock: trio.socket.SocketType) -> None:
        state = self._datagrams
        limit = trio.Semaphore(max(1, self.max_in_flight))
        while not state.draining:
            await limit.acquire()
            try:
                data, address = await sock.recvfrom(MAX_DATAGRAM)
            except (trio.ClosedResourceError, OSError) as exc:
                limit.release()
                if state.draining or sock.fileno() < 0:
                    return  # our copy was closed: the drain
                log.debug("%s: recvfrom failed: %r", self.ctx.path, exc)
                continue  # (an ICMP error reported on the socket: the next datagram)
            state.in_flight += 1
            state.total += 1
            state.idle = trio.Event() if state.idle.is_set() else state.idle
            self.ctx.start_soon(self._datagram, sock, data, address, limit)

    async def _datagram(self, sock: trio.socket.SocketType, data: bytes,
                        address: tuple[str, int], limit: trio.Semaphore) -> None:
        state = self._datagrams
        try:
            answer = await self.handle_datagram(data, (str(address[0]), int(address[1])))
            if answer is not None:
                try:
                    await sock.sendto(answer, address)
                except (trio.ClosedResourceError, OSError) as exc:
                    # A datagram may be lost: UDP says so, and so does a drain that closed
                    # this copy of the socket meanwhile.
                    log.debug("%s: no answer sent to %s: %r", self.ctx.path, address, exc)
        except Exception as exc:
            if self.on_error == "suicide":
                self.ctx.crash(exc)
            else:
                log.error("datagram handler of %s raised", self.ctx.path, exc_info=exc)
        finally:
            limit.release()
            state.in_flight -= 1
            if state.in_flight == 0:
                state.idle.set()

    def _in_flight(self) -> int | None:
        return self._datagrams.in_flight

    async def drain(self) -> None:
        """Stop receiving (the master keeps the socket), then let the datagrams in hand be
        answered."""
        state = self._datagrams
        state.draining = True
        for sock in state.sockets:
            # Wakes the receive loop only: the answers still to go out use the socket,
            # which is closed once they are sent.
            trio.lowlevel.notify_closing(sock)
        await state.idle.wait()
        for sock in state.sockets:
            sock.close()
        state.sockets.clear()
