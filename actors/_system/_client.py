"""The CLI's side of the control socket: finding the systems of this user (a NAME is a
control socket, answering or not), asking one, and the one-line errors of the CLI.
"""


from __future__ import annotations

import socket
import struct
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import trio

from protocol import (
    Channel,
    Message,
    decode_message,
    open_channel,
)

from .._operations._protocol import (
    Request,
    SystemInfo,
    send_control,
)
from .._operations._server import control_directory

__all__ = [
    "RELOADTIMEOUT",
    "TIMEOUT",
    "CliError",
    "System",
    "alive",
    "answering",
    "ask",
    "attempt",
    "exchange",
    "info",
    "open_socket",
    "peer_pid",
    "pick",
    "replies",
    "split",
    "systems",
]


TIMEOUT = 10.0  # for an answer, unless --timeout says otherwise
RELOADTIMEOUT = 600.0  # a reload starts new workers one at a time


class CliError(Exception):
    """One line for stderr; ``status`` is the exit status."""

    def __init__(self, text: str, status: int = 1) -> None:
        super().__init__(text)
        self.status = status



@dataclass(frozen=True)
class System:
    """A system of this user, named by its control socket (``<name>.sock``) whether its
    master answers or not: a name is never guessed from which systems answered in time."""

    name: str
    path: Path

    def silent(self) -> CliError:
        return CliError(f"system {self.name!r} does not answer (its control socket is "
                        f"{self.path})")

    def gone(self) -> CliError:
        return CliError(f"no system named {self.name!r} is running (its control socket "
                        f"{self.path} was left by a master that is gone)")


def systems() -> list[System]:
    """Every control socket of this user, answering or not, stale or not."""
    directory = control_directory()
    if not directory.is_dir():
        return []
    return [System(path.name.removesuffix(".sock"), path)
            for path in sorted(directory.glob("*.sock"))]


def attempt(system: System) -> socket.socket | None:
    """One try at connecting (a Unix socket connects at once or not at all): the socket, or
    None while its backlog is full (its master accepts nothing: stopped, or swamped)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        sock.connect(str(system.path))
    except BlockingIOError:
        sock.close()
        return None
    except (ConnectionRefusedError, FileNotFoundError):
        sock.close()
        raise system.gone() from None
    except OSError as exc:
        sock.close()
        raise CliError(f"cannot reach system {system.name!r} at {system.path}: "
                       f"{exc.strerror or exc}") from exc
    return sock


def alive(system: System) -> bool:
    """True if a master listens on the socket (whether it answers is another matter)."""
    try:
        sock = attempt(system)
    except CliError:
        return False
    if sock is not None:
        sock.close()
    return True


async def open_socket(system: System) -> socket.socket:
    """A connection to ``system``'s control socket (bound it with a cancel scope: a full
    backlog is waited out); :meth:`System.gone` if nothing listens on it."""
    while True:
        sock = attempt(system)
        if sock is not None:
            return sock
        # Nothing announces room in another process's backlog: look again shortly.
        await trio.sleep(0.05)


@contextmanager
def answering(system: System, seconds: float) -> Iterator[None]:
    """:meth:`System.silent` if the block (talking to ``system``) takes over ``seconds``."""
    with trio.move_on_after(seconds) as scope:
        yield
    if scope.cancelled_caught:
        raise system.silent()


async def replies(channel: Channel) -> AsyncIterator[Message]:
    while True:
        try:
            frames = await channel.receive_some()
        except trio.EndOfChannel:
            return
        for frame in frames:
            yield decode_message(frame)


async def exchange(system: System, sock: socket.socket, request: Request) -> Message:
    """``request``'s answer on the connection ``sock`` (which this closes)."""
    async with open_channel(sock) as channel:
        await send_control(channel, request)
        async for answer in replies(channel):
            return answer
    raise CliError(f"system {system.name!r} closed the connection without answering")


async def ask(system: System, request: Request) -> Message:
    return await exchange(system, await open_socket(system), request)


def pick(name: str | None) -> System:
    """The system meant: ``name`` (its socket is there, whether it answers or not), or with
    none given, the only one whose socket is listened on."""
    known = systems()
    if name is not None:
        found = next((system for system in known if system.name == name), None)
        if found is None:
            running = ", ".join(s.name for s in known if alive(s)) or "none"
            raise CliError(f"no system named {name!r} is running (running: {running})")
        return found
    running_systems = [system for system in known if alive(system)]
    if not running_systems:
        raise CliError(f"no system is running (no control socket in {control_directory()} "
                       "is listened on)")
    if len(running_systems) > 1:
        names = ", ".join(system.name for system in running_systems)
        raise CliError(f"several systems are running ({names}): name one", status=2)
    return running_systems[0]


async def info(system: System) -> SystemInfo:
    info = await ask(system, Request(verb="info"))
    if not isinstance(info, SystemInfo):
        raise CliError(f"unexpected answer: {info!r}")
    return info


def peer_pid(sock: socket.socket) -> int | None:
    """The pid of the process that listens on the other end (known even if it answers
    nothing: the kernel says it)."""
    credentials = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid = int(struct.unpack("3i", credentials)[0])
    return pid or None


def split(arguments: Sequence[str], wanted: int) -> tuple[str | None, list[str]]:
    """(NAME, the rest) from ``[NAME] ARG...`` where ``wanted`` ARGs are required: one
    argument more than that, and the first is the NAME."""
    given = list(arguments)
    if len(given) == wanted + 1:
        return given[0], given[1:]
    if len(given) == wanted:
        return None, given
    raise CliError(f"expected {wanted} argument(s) after [NAME], got {given}", status=2)


