"""``trio-actors``: operate the running systems of this user from a shell.

    trio-actors ls                          the systems running (name, pid, state, uptime)
    trio-actors status [NAME]               one row per actor
    trio-actors top [NAME]                  the status, live (q or Ctrl-C quits)
    trio-actors reload [NAME] [PATH]        new code: workers replaced one at a time
    trio-actors restart [NAME] PATH         replace one supervised actor
    trio-actors scale [NAME] PATH N         a listener's number of acceptors
    trio-actors stop [NAME]                 stop it in order (as SIGTERM does)
    trio-actors events [NAME] [--follow]    the lifecycle events
    trio-actors logs [NAME] [--follow]      what the workers print, with path and pid

Every verb takes ``--json`` and ``--timeout S`` (how long to wait for an answer). NAME is
the name of a control socket (``NAME.sock`` in the control directory), whether its master
answers or not; with NAME left out and exactly one system running, that one is meant. A
failure is one line on stderr and a non-zero exit status: 1 when the operation failed
(the system does not answer, among others), 2 when the command line was wrong.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import struct
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import trio

from protocol import (
    Channel,
    Message,
    ProtocolError,
    decode_message,
    open_channel,
    registry,
)

from .._base._errors import leaves
from .._operations._protocol import (
    Answer,
    End,
    EventLine,
    LogLine,
    Note,
    Request,
    Status,
    SystemInfo,
    send_control,
)
from .._operations._server import control_directory

__all__ = ["main"]

_TIMEOUT = 10.0  # for an answer, unless --timeout says otherwise
_RELOAD_TIMEOUT = 600.0  # a reload starts new workers one at a time
L = TypeVar("L", EventLine, LogLine)


class CliError(Exception):
    """One line for stderr; ``status`` is the exit status."""

    def __init__(self, text: str, status: int = 1) -> None:
        super().__init__(text)
        self.status = status


# -- talking to a system ------------------------------------------------------------------------


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


def _systems() -> list[System]:
    """Every control socket of this user, answering or not, stale or not."""
    directory = control_directory()
    if not directory.is_dir():
        return []
    return [System(path.name.removesuffix(".sock"), path)
            for path in sorted(directory.glob("*.sock"))]


def _attempt(system: System) -> socket.socket | None:
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


def _alive(system: System) -> bool:
    """True if a master listens on the socket (whether it answers is another matter)."""
    try:
        sock = _attempt(system)
    except CliError:
        return False
    if sock is not None:
        sock.close()
    return True


async def _open(system: System) -> socket.socket:
    """A connection to ``system``'s control socket (bound it with a cancel scope: a full
    backlog is waited out); :meth:`System.gone` if nothing listens on it."""
    while True:
        sock = _attempt(system)
        if sock is not None:
            return sock
        # Nothing announces room in another process's backlog: look again shortly.
        await trio.sleep(0.05)


@contextmanager
def _answering(system: System, seconds: float) -> Iterator[None]:
    """:meth:`System.silent` if the block (talking to ``system``) takes over ``seconds``."""
    with trio.move_on_after(seconds) as scope:
        yield
    if scope.cancelled_caught:
        raise system.silent()


async def _replies(channel: Channel) -> AsyncIterator[Message]:
    while True:
        try:
            frames = await channel.receive_some()
        except trio.EndOfChannel:
            return
        for frame in frames:
            yield decode_message(frame)


async def _exchange(system: System, sock: socket.socket, request: Request) -> Message:
    """``request``'s answer on the connection ``sock`` (which this closes)."""
    async with open_channel(sock) as channel:
        await send_control(channel, request)
        async for answer in _replies(channel):
            return answer
    raise CliError(f"system {system.name!r} closed the connection without answering")


async def _ask(system: System, request: Request) -> Message:
    return await _exchange(system, await _open(system), request)


def _pick(name: str | None) -> System:
    """The system meant: ``name`` (its socket is there, whether it answers or not), or with
    none given, the only one whose socket is listened on."""
    systems = _systems()
    if name is not None:
        found = next((system for system in systems if system.name == name), None)
        if found is None:
            running = ", ".join(s.name for s in systems if _alive(s)) or "none"
            raise CliError(f"no system named {name!r} is running (running: {running})")
        return found
    running_systems = [system for system in systems if _alive(system)]
    if not running_systems:
        raise CliError(f"no system is running (no control socket in {control_directory()} "
                       "is listened on)")
    if len(running_systems) > 1:
        names = ", ".join(system.name for system in running_systems)
        raise CliError(f"several systems are running ({names}): name one", status=2)
    return running_systems[0]


async def _info(system: System) -> SystemInfo:
    info = await _ask(system, Request(verb="info"))
    if not isinstance(info, SystemInfo):
        raise CliError(f"unexpected answer: {info!r}")
    return info


def _peer_pid(sock: socket.socket) -> int | None:
    """The pid of the process that listens on the other end (known even if it answers
    nothing: the kernel says it)."""
    credentials = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid = int(struct.unpack("3i", credentials)[0])
    return pid or None


def _split(arguments: Sequence[str], wanted: int) -> tuple[str | None, list[str]]:
    """(NAME, the rest) from ``[NAME] ARG...`` where ``wanted`` ARGs are required: one
    argument more than that, and the first is the NAME."""
    given = list(arguments)
    if len(given) == wanted + 1:
        return given[0], given[1:]
    if len(given) == wanted:
        return None, given
    raise CliError(f"expected {wanted} argument(s) after [NAME], got {given}", status=2)


# -- output ---------------------------------------------------------------------------------


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=None, sort_keys=True), flush=True)


def _size(value: int | None) -> str:
    if value is None:
        return "-"
    return f"{value / 2**20:.0f}M" if value < 2**30 * 10 else f"{value / 2**30:.1f}G"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def status_table(status: Status) -> Any:
    """The status as a table that fits 100 columns (``--json`` has every figure)."""
    from rich import box
    from rich.table import Table

    info = status.system
    table = Table(title=f"{info.name}  (master {info.pid}, up {_duration(info.uptime)})",
                  title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    right = {"pid", "up", "restarts", "mbox", "rss", "cpu%"}
    for column in ("path", "kind", "pid", "state", "up", "restarts", "last exit", "mbox",
                   "rss", "cpu%", "conns"):
        table.add_column(column, no_wrap=True, justify="right" if column in right else "left")
    for row in status.actors:
        table.add_row(
            row.path, row.kind, "-" if row.pid is None else str(row.pid), row.state,
            _duration(row.uptime), str(row.restarts),
            row.last_exit.split(" - ")[0] if row.last_exit else "-",
            "-" if row.mailbox is None else str(row.mailbox), _size(row.rss),
            "-" if row.cpu is None else f"{row.cpu:.0f}",
            "-" if row.open is None else f"{row.open}/{row.total}",
        )
    return table


def _console() -> Any:
    from rich.console import Console

    console = Console()
    if not console.is_terminal:
        # Piped to a file or another program: no screen to fit (and COLUMNS, which some
        # parents export, describes theirs), so nothing is cut short; a table is as wide as
        # its widest row, not padded to this.
        console = Console(width=1000)
    return console


# -- the verbs ------------------------------------------------------------------------------


async def ls(arguments: argparse.Namespace) -> int:
    """Every system with a live control socket, those that do not answer included."""
    live = [system for system in _systems() if _alive(system)]
    seen: dict[str, tuple[SystemInfo | None, int | None]] = {}

    async def look(system: System) -> None:
        seen[system.name] = (None, None)
        with trio.move_on_after(arguments.timeout):
            try:
                sock = await _open(system)
            except CliError:
                return  # gone meanwhile
            pid = _peer_pid(sock)
            seen[system.name] = (None, pid)
            info: Message | None = None
            try:
                info = await _exchange(system, sock, Request(verb="info"))
            except* (CliError, trio.BrokenResourceError, ProtocolError, OSError):
                pass  # it went away while asked
            if isinstance(info, SystemInfo):
                seen[system.name] = (info, pid)

    async with trio.open_nursery() as nursery:  # at once: one silent master costs one wait
        for system in live:
            nursery.start_soon(look, system)
    if arguments.json:
        rows = []
        for system in live:
            info, pid = seen[system.name]
            if info is not None:
                rows.append({**info.model_dump(), "answering": True})
            else:
                rows.append({"name": system.name, "pid": pid, "started": None,
                             "uptime": None, "socket": str(system.path), "answering": False})
        _print_json(rows)
        return 0
    if not live:
        print(f"no system is running (control sockets live in {control_directory()})")
        return 0
    from rich.table import Table

    table = Table()
    for column in ("name", "pid", "state", "uptime", "socket"):
        table.add_column(column)
    for system in live:
        info, pid = seen[system.name]
        if info is not None:
            table.add_row(info.name, str(info.pid), "running", _duration(info.uptime),
                          str(system.path))
        else:
            table.add_row(system.name, "-" if pid is None else str(pid), "not answering", "-",
                          str(system.path))
    _console().print(table)
    return 0


async def _status(system: System, seconds: float) -> Status:
    with _answering(system, seconds):
        reply = await _ask(system, Request(verb="status"))
    if not isinstance(reply, Status):
        raise CliError(f"unexpected answer: {reply!r}")
    return reply


def _status_json(found: Status) -> dict[str, Any]:
    return {"system": found.system.model_dump(),
            "actors": [row.model_dump() for row in found.actors]}


async def status(arguments: argparse.Namespace) -> int:
    name, _ = _split(arguments.args, 0)
    found = await _status(_pick(name), arguments.timeout)
    if arguments.json:
        _print_json(_status_json(found))
    else:
        _console().print(status_table(found))
    return 0


async def top(arguments: argparse.Namespace) -> int:
    name, _ = _split(arguments.args, 0)
    system = _pick(name)
    if arguments.json:
        while True:
            _print_json(_status_json(await _status(system, arguments.timeout)))
            await trio.sleep(arguments.interval)
    from rich.live import Live

    terminal = sys.stdin.fileno() if sys.stdin is not None and sys.stdin.isatty() else None
    with _cbreak(terminal), Live(status_table(await _status(system, arguments.timeout)),
                                 console=_console(), screen=False, auto_refresh=False) as live:

        async def refresh() -> None:
            while True:
                await trio.sleep(arguments.interval)
                live.update(status_table(await _status(system, arguments.timeout)),
                            refresh=True)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(refresh)
            if terminal is not None:
                nursery.start_soon(_until_quit, terminal, nursery.cancel_scope)
    return 0


@contextmanager
def _cbreak(terminal: int | None) -> Iterator[None]:
    """The terminal ``terminal`` (if any) in cbreak mode for the block: each key as it is
    typed, not echoed (Ctrl-C still interrupts); restored as it was on the way out,
    however the block ends."""
    if terminal is None:
        yield
        return
    import termios
    import tty

    saved = termios.tcgetattr(terminal)
    tty.setcbreak(terminal)
    try:
        yield
    finally:
        termios.tcsetattr(terminal, termios.TCSADRAIN, saved)


async def _until_quit(terminal: int, scope: trio.CancelScope) -> None:
    """Cancel ``scope`` once ``q`` is typed on ``terminal`` (or the terminal is gone).

    The terminal is waited on as it is: made non-blocking, it would stay so for the shell
    that shares it after this program ends."""
    while True:
        await trio.lowlevel.wait_readable(terminal)
        typed = os.read(terminal, 64)
        if not typed or b"q" in typed.lower():
            scope.cancel()
            return


async def _operate(arguments: argparse.Namespace, request: Request, system: System) -> int:
    seconds = arguments.timeout
    if request.verb == "reload":
        # Once it answered, a reload may take its time (new code, then each worker ready
        # before the next is replaced).
        with _answering(system, seconds):
            await _info(system)
        seconds = max(seconds, _RELOAD_TIMEOUT)
    with _answering(system, seconds):
        reply = await _ask(system, request)
    if not isinstance(reply, Answer):
        raise CliError(f"unexpected answer: {reply!r}")
    if arguments.json:
        _print_json(reply.model_dump())
    elif reply.ok:
        done = {"reload": "reloaded", "restart": "restarted", "scale": "scaled",
                "stop": "stopping"}[request.verb]
        print(f"{done}" + (f": {', '.join(reply.detail)}" if reply.detail else ""))
    if not reply.ok:
        raise CliError(f"{request.verb} failed: {reply.error}")
    return 0


async def reload(arguments: argparse.Namespace) -> int:
    given = list(arguments.args)
    if len(given) > 2:
        raise CliError("reload takes [NAME] [PATH]", status=2)
    # A first argument that names a control socket is a NAME (answering or not); a path
    # otherwise. Paths have a "/" from their second level on; names never do.
    names = {system.name for system in _systems()}
    name = given.pop(0) if given and (len(given) == 2 or given[0] in names) else None
    system = _pick(name)
    return await _operate(arguments, Request(verb="reload", path=given[0] if given else None),
                          system)


async def restart(arguments: argparse.Namespace) -> int:
    try:
        name, rest = _split(arguments.args, 1)
    except CliError:
        raise CliError("restart takes [NAME] PATH", status=2) from None
    system = _pick(name)
    return await _operate(arguments, Request(verb="restart", path=rest[0]), system)


async def scale(arguments: argparse.Namespace) -> int:
    try:
        name, rest = _split(arguments.args, 2)
    except CliError:
        raise CliError("scale takes [NAME] PATH N", status=2) from None
    try:
        count = int(rest[1])
    except ValueError:
        raise CliError(f"N must be a number of acceptors, not {rest[1]!r}", status=2) from None
    if count < 1:
        raise CliError("N must be at least 1", status=2)
    system = _pick(name)
    return await _operate(arguments, Request(verb="scale", path=rest[0], count=count), system)


async def stop(arguments: argparse.Namespace) -> int:
    name, _ = _split(arguments.args, 0)
    system = _pick(name)
    return await _operate(arguments, Request(verb="stop"), system)


async def _follow(
    arguments: argparse.Namespace, verb: str, kind: type[L], show: Callable[[L], None]
) -> int:
    """The lines of a stream (``events``, ``logs``) shown one by one, until it ends (or,
    with ``--follow``, until interrupted). What the system says about the stream itself
    (lines left out) goes to stderr; a stream cut short is a failure, never a quiet end."""
    name, _ = _split(arguments.args, 0)
    system = _pick(name)
    with _answering(system, arguments.timeout):
        await _info(system)
        sock = await _open(system)
    async with open_channel(sock) as channel:
        await send_control(channel, Request(verb=verb, follow=arguments.follow))
        async for reply in _replies(channel):
            if isinstance(reply, End):
                return 0
            if isinstance(reply, Note):
                print(f"trio-actors: {reply.text}", file=sys.stderr, flush=True)
            elif isinstance(reply, kind):
                show(reply)
    if arguments.follow:
        print(f"trio-actors: system {system.name!r} ended the stream (it is stopping, or gone)",
              file=sys.stderr, flush=True)
        return 0
    raise CliError(f"system {system.name!r} closed the {verb} stream before its end")


async def events(arguments: argparse.Namespace) -> int:
    def show(line: EventLine) -> None:
        body = json.loads(line.body)
        if arguments.json:
            print(json.dumps({"type": line.tag, **body}), flush=True)
            return
        event = registry.decode(line.tag, line.body.encode())
        fields = {k: v for k, v in body.items() if k not in ("path", "at")}
        moment = time.strftime("%H:%M:%S", time.localtime(body["at"]))
        print(f"{moment} {type(event).__name__:16} {getattr(event, 'path', '')}  "
              f"{_brief(fields)}", flush=True)

    return await _follow(arguments, "events", EventLine, show)


def _brief(fields: dict[str, Any]) -> str:
    reason = fields.pop("reason", None)
    parts = [f"{k}={v}" for k, v in fields.items() if v not in (None, "", [], {})]
    if isinstance(reason, dict):
        parts.insert(0, f"reason={reason.get('kind')}"
                        + (f" ({reason.get('error_type') or reason.get('detail')})"
                           if reason.get("error_type") or reason.get("detail") else ""))
    return " ".join(parts)


async def logs(arguments: argparse.Namespace) -> int:
    def show(line: LogLine) -> None:
        if arguments.json:
            _print_json(line.model_dump())
        else:
            stream = sys.stdout if line.stream == "stdout" else sys.stderr
            print(f"[{line.path} {line.pid}] {line.text}", file=stream, flush=True)

    return await _follow(arguments, "logs", LogLine, show)


VERBS = {"ls": ls, "status": status, "top": top, "reload": reload, "restart": restart,
         "scale": scale, "stop": stop, "events": events, "logs": logs}


class _Parser(argparse.ArgumentParser):
    """argparse, but a wrong command line is one line too (its usage is one --help away)."""

    def error(self, message: str) -> NoReturn:
        _fail(f"{message} (see {self.prog} --help)", 2)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0 seconds, not {text}")
    return value


def parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="trio-actors", description="Operate the running actor systems of this user.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="With NAME left out and exactly one system running, that one is meant.",
    )
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    usage = {
        "ls": ("the systems running", ""),
        "status": ("one row per actor", "[NAME]"),
        "top": ("the status, refreshed (q or Ctrl-C quits)", "[NAME]"),
        "reload": ("new code, workers replaced one at a time", "[NAME] [PATH]"),
        "restart": ("replace one supervised actor", "[NAME] PATH"),
        "scale": ("set a listener's number of acceptors", "[NAME] PATH N"),
        "stop": ("stop it in order, as SIGTERM does", "[NAME]"),
        "events": ("the lifecycle events", "[NAME]"),
        "logs": ("the workers' output", "[NAME]"),
    }
    for verb, (summary, arguments) in usage.items():
        sub = verbs.add_parser(verb, help=summary, description=summary)
        sub.add_argument("--json", action="store_true", help="machine-readable output")
        sub.add_argument("--timeout", type=_seconds, default=_TIMEOUT, metavar="S",
                         help=f"seconds to wait for a system to answer (default {_TIMEOUT:g})")
        if arguments:
            sub.add_argument("args", nargs="*", metavar=arguments)
        else:
            sub.set_defaults(args=[])
        if verb in ("events", "logs"):
            sub.add_argument("--follow", "-f", action="store_true", help="keep following")
        if verb == "top":
            sub.add_argument("--interval", type=_seconds, default=1.0, help="seconds between")
    return parser


def _fail(text: str, status: int) -> NoReturn:
    # One line, whatever the error's text holds (a remote error's may span several).
    line = " ".join(part.strip() for part in text.splitlines() if part.strip())
    print(f"trio-actors: {line}", file=sys.stderr)
    sys.exit(status)


def main(argv: Sequence[str] | None = None) -> int:
    arguments = parser().parse_args(argv)
    try:
        return trio.run(VERBS[arguments.verb], arguments)
    except BaseException as exc:  # (as a group too: a verb runs inside nurseries)
        return _exit_status(arguments, exc)


def _quiet_stdout() -> None:
    """Point stdout at /dev/null: what is still buffered for the closed pipe would fail
    again, with a message, at the interpreter's last flush."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
    except OSError:
        return
    try:
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass  # no stdout to speak of
    finally:
        os.close(devnull)


def _exit_status(arguments: argparse.Namespace, exc: BaseException) -> int:
    """What the exception that ended a verb means: one line on stderr and 1 (2 for a wrong
    command line), or an exit status of its own (interrupted, output closed)."""
    found = [leaf for leaf in leaves(exc) if not isinstance(leaf, trio.Cancelled)] or [exc]
    first = next((leaf for leaf in found if isinstance(leaf, CliError)), found[0])
    if isinstance(first, CliError):
        _fail(str(first), first.status)
    if isinstance(first, KeyboardInterrupt):
        return 0 if arguments.verb in ("top", "events", "logs") else 130
    if isinstance(first, BrokenPipeError):
        _quiet_stdout()  # piped into something that stopped reading (head, less)
        return 0
    if isinstance(first, ProtocolError):
        _fail(f"the system did not answer properly: {first or type(first).__name__}", 1)
    if isinstance(first, trio.BrokenResourceError | trio.ClosedResourceError):
        _fail(f"the connection to the system broke: {first or type(first).__name__}", 1)
    if isinstance(first, Exception):
        _fail(f"unexpected {type(first).__name__}: {first}", 1)
    raise exc  # SystemExit and the like
