"""Sockets for the tests to talk over."""

from __future__ import annotations

import socket


def socketpair() -> tuple[socket.socket, socket.socket]:
    """Two connected Unix stream sockets, as the runtime links a master and a worker (the
    caller closes both)."""
    return socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
