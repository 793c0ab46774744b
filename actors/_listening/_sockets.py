"""Sockets: binding a listening one, and what the kernel says of a connection."""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import socket
import struct
import termios
from pathlib import Path
from typing import Literal

import trio

from .._base._errors import BindError

__all__ = [
    "AcceptBackoff",
    "LockedSocket",
    "accept_failure",
    "bind",
    "bound_address",
    "claim_address",
    "hold_out_of_spread",
    "runtime_directory",
    "unread_bytes",
    "untouched",
]

log = logging.getLogger("actors")

_RESOURCE_ERRNOS = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)


def accept_failure(exc: OSError) -> Literal["closed", "starved", "aborted"]:
    """What a failed ``accept()`` means: ``"closed"`` (the socket was closed: stop),
    ``"starved"`` (out of fds or memory: back off, the connection stays queued) or
    ``"aborted"`` (that one client gave up: take the next)."""
    if exc.errno in (errno.EBADF, errno.EINVAL):
        return "closed"
    if exc.errno in _RESOURCE_ERRNOS:
        return "starved"
    return "aborted"


# struct tcp_info (linux/tcp.h): tcpi_bytes_received is a __u64 at byte 128 (Linux >= 4.1),
# tcpi_bytes_sent a __u64 at byte 200 (Linux >= 4.19).
_TCPI_BYTES_RECEIVED = 128
_TCPI_BYTES_SENT = 200
_TCP_INFO_NEEDED = _TCPI_BYTES_SENT + 8
_ESTABLISHED, _CLOSE_WAIT = 1, 8  # tcpi_state (the first byte)


def unread_bytes(fd: int) -> int:
    """Bytes waiting in a connected socket's receive queue (``SIOCINQ``)."""
    return int(struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"))[0])


def untouched(conn: socket.socket) -> bool:
    """True when nobody ever read from or wrote to the TCP connection ``conn``: every byte
    it received is still unread, and it never sent one (nor has one waiting to go).

    Only meaningful once ``conn`` is the last reference to the connection (the process it
    was handed to is gone): then such a connection can be served by another as if it had
    just been accepted. False whenever the kernel cannot say (not TCP, a kernel older than
    4.19): when in doubt, a connection is not served twice."""
    try:
        info = conn.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
        if len(info) < _TCP_INFO_NEEDED:
            return False
        state = info[0]
        if state not in (_ESTABLISHED, _CLOSE_WAIT):
            return False  # this side closed or reset it: nothing to hand on
        (received,) = struct.unpack_from("Q", info, _TCPI_BYTES_RECEIVED)
        (sent,) = struct.unpack_from("Q", info, _TCPI_BYTES_SENT)
        unsent = struct.unpack("i", fcntl.ioctl(conn.fileno(), termios.TIOCOUTQ,
                                                 b"\0\0\0\0"))[0]
        if state == _CLOSE_WAIT:
            received -= 1  # the peer's FIN takes one sequence number, and is no data
        return bool(sent == 0 and unsent == 0 and received == unread_bytes(conn.fileno()))
    except OSError:
        return False


class AcceptBackoff:
    """How an accept loop waits out a ``"starved"`` failure: it sleeps ``delay`` and tries
    again (the connection stays queued in the kernel meanwhile).

    A full fd table can last (a thousand idle clients), and a line every ``delay`` would
    flood the log: the first failure of an episode is logged, and its end, once."""

    def __init__(self, what: str, delay: float = 0.1) -> None:
        self.what = what
        self.delay = delay
        self.starved = False

    async def starved_by(self, exc: OSError) -> None:
        if not self.starved:
            self.starved = True
            log.error("%s: cannot accept (%s); backing off until it can", self.what,
                      exc.strerror or exc)
        await trio.sleep(self.delay)

    def accepted(self) -> None:
        """A connection was accepted: an episode of starvation, if any, is over."""
        if self.starved:
            self.starved = False
            log.warning("%s: accepting again", self.what)


def runtime_directory() -> Path:
    """This user's directory for the runtime's sockets and locks (not made here)."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and os.path.isdir(runtime):
        return Path(runtime) / "trio-actors"
    return Path(f"/tmp/trio-actors-{os.getuid()}")


class LockedSocket(socket.socket):
    """A listening socket that also holds a lock naming its address (see
    :func:`claim_address`); closing it releases the lock and removes its file."""

    lock_fd: int = -1
    lock_path: Path | None = None
    bound: tuple[str, int] | None = None  # its address, if connecting it changed its name

    def close(self) -> None:
        if self.lock_fd >= 0:
            if self.lock_path is not None and _same_file(self.lock_fd, self.lock_path):
                # Removed while held: whoever opens the name next makes a new file (and
                # one that opened this one before re-checks after locking: see below).
                self.lock_path.unlink(missing_ok=True)
            os.close(self.lock_fd)
            self.lock_fd = -1
        super().close()


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.path.samestat(os.fstat(fd), os.stat(path))
    except OSError:
        return False


def claim_address(sock: socket.socket, host: str, port: int, *, udp: bool = False
                  ) -> LockedSocket:
    """Hold a lock that names ``host:port`` (of TCP, or of UDP) for as long as ``sock``
    lives.

    ``SO_REUSEPORT`` lets every socket of one user bind the same port: a second system would
    silently share the traffic. The lock makes it fail to bind instead, as it would under
    any other policy."""
    directory = runtime_directory()
    directory.mkdir(mode=0o700, exist_ok=True)
    lock_path = directory / f"port-{'udp-' if udp else ''}{host}-{port}.lock"
    while True:
        lock_fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(lock_fd)
            sock.close()
            raise BindError(
                f"cannot listen on {host}:{port}: address already in use (by another system,"
                f" with SO_REUSEPORT: {lock_path} is held)"
            ) from None
        if _same_file(lock_fd, lock_path):
            break
        os.close(lock_fd)  # its holder removed it as we opened it: the name is free again
    claimed = LockedSocket(sock.family, sock.type, sock.proto, fileno=sock.detach())
    claimed.lock_fd = lock_fd
    claimed.lock_path = lock_path
    return claimed


def bound_address(sock: socket.socket) -> tuple[str, int]:
    """The address ``sock`` was bound to (host, port)."""
    bound = getattr(sock, "bound", None)
    if bound is not None:
        return bound  # type: ignore[no-any-return]
    host, port = sock.getsockname()[:2]
    return str(host), int(port)


def hold_out_of_spread(sock: LockedSocket) -> None:
    """Keep the master's own ``SO_REUSEPORT`` UDP socket out of the kernel's spread.

    Every bound UDP socket of a reuseport group gets its share of the datagrams, and this
    one (it holds the address and its lock for the listener's life) is read by nobody. A
    connected UDP socket is skipped by the group's selection and matches only datagrams
    from the address it is connected to: it is connected to its own address, which sends
    nothing."""
    host, port = sock.bound = bound_address(sock)
    loopback = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
    sock.connect((loopback, port))


async def bind(
    host: str, port: int, *, reuseport: bool, listen: bool, backlog: int = 1024,
    udp: bool = False,
) -> socket.socket:
    """A non-blocking TCP socket bound to ``host:port`` (listening if ``listen``), or a UDP
    one (``udp``).

    The caller owns it. Any failure (a name that does not resolve, an address in use) is a
    :class:`BindError` naming the address.
    """
    try:
        infos = await trio.socket.getaddrinfo(
            host, port, type=socket.SOCK_DGRAM if udp else socket.SOCK_STREAM,
            flags=socket.AI_PASSIVE,
        )
    except socket.gaierror as exc:
        raise BindError(f"cannot listen on {host}:{port}: {exc}") from exc
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        if not udp:
            # (For UDP, SO_REUSEADDR would let a second socket bind the same address and
            # take its datagrams: no second instance may share it that way.)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuseport:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
        if listen and not udp:
            sock.listen(backlog)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        reason = "address already in use" if exc.errno == errno.EADDRINUSE else exc.strerror
        raise BindError(f"cannot listen on {host}:{port}: {reason}") from exc
    return sock
