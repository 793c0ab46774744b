"""Listening sockets: binding one (the listener, or a ``reuseport`` acceptor)."""

from __future__ import annotations

import errno
import socket

import trio

from ._errors import BindError

__all__ = ["bind"]


async def bind(
    host: str, port: int, *, reuseport: bool, listen: bool, backlog: int = 1024
) -> socket.socket:
    """A non-blocking TCP socket bound to ``host:port`` (listening if ``listen``).

    The caller owns it. Any failure (a name that does not resolve, an address in use) is a
    :class:`BindError` naming the address.
    """
    try:
        infos = await trio.socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
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
