"""Accepting connections: one loop for the listener (``round_robin``, ``least_busy``) and
the acceptors (``shared``, ``reuseport``), which differ only in how many they take at a time
and what they do with them."""

from __future__ import annotations

import logging
import socket
from collections.abc import Awaitable, Callable

import trio

from ._sockets import AcceptBackoff, accept_failure

__all__ = [
    "accept_all",
    "accept_loop",
    "accept_some",
]

log = logging.getLogger("actors")


def accept_some(sock: socket.socket, most: int
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


def accept_all(sock: socket.socket, path: str) -> list[socket.socket]:
    """Every connection queued on a socket about to be closed (which would reset them)."""
    conns, failure = accept_some(sock, 1 << 30)
    if failure is not None and accept_failure(failure) == "starved":
        log.error("%s: out of file descriptors while taking over a socket's queue", path)
    return conns


async def accept_loop(
    sock: socket.socket,
    *,
    room: Callable[[], int],
    wait_for_room: Callable[[], Awaitable[object]],
    take: Callable[[list[socket.socket]], None],
    backoff: AcceptBackoff,
) -> None:
    """Accept on ``sock`` until it is closed (or ``room()`` is negative): each wake-up takes
    up to ``room()`` of the connections queued, without yielding, and gives them to ``take``
    together. With no room, it waits for ``wait_for_room()`` (the kernel queues meanwhile);
    out of fds or memory, it backs off (and logs once per episode)."""
    while True:
        most = room()
        if most < 0:
            return
        if most == 0:
            await wait_for_room()
            continue
        try:
            await trio.lowlevel.wait_readable(sock)
        except trio.ClosedResourceError:
            return
        conns, failure = accept_some(sock, most)
        if conns:
            backoff.accepted()
            take(conns)
        if failure is None:
            continue
        if accept_failure(failure) == "closed":
            return
        await backoff.starved_by(failure)
