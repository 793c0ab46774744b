"""``trio-actors``: operate the running systems of this user from a shell.

    trio-actors ls                          the systems running (name, pid, uptime)
    trio-actors status [NAME]               one row per actor
    trio-actors top [NAME]                  the status, live
    trio-actors reload [NAME] [PATH]        new code: workers replaced one at a time
    trio-actors restart [NAME] PATH         replace one supervised actor
    trio-actors scale [NAME] PATH N         a listener's number of acceptors
    trio-actors stop [NAME]                 stop it in order (as SIGTERM does)
    trio-actors events [NAME] [--follow]    the lifecycle events
    trio-actors logs [NAME] [--follow]      what the workers print, with path and pid

Every verb takes ``--json``. With NAME left out and exactly one system running, that one
is meant. A failure is one line on stderr and a non-zero exit status: 1 when the operation
failed, 2 when the command line was wrong.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
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

from ._operations import (
    Answer,
    End,
    EventLine,
    LogLine,
    Request,
    Status,
    SystemInfo,
    control_directory,
    send_control,
)

__all__ = ["main"]

_TIMEOUT = 10.0
L = TypeVar("L", EventLine, LogLine)


class CliError(Exception):
    """One line for stderr; ``status`` is the exit status."""

    def __init__(self, text: str, status: int = 1) -> None:
        super().__init__(text)
        self.status = status


# -- talking to a system ------------------------------------------------------------------------


@asynccontextmanager
async def _connect(path: str) -> AsyncIterator[Channel]:
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        await sock.connect(path)
    except OSError as exc:
        sock.close()
        raise CliError(f"cannot reach the system at {path}: {exc.strerror or exc}") from exc
    raw = socket.socket(fileno=sock.detach())
    async with open_channel(raw) as channel:
        yield channel


async def _replies(channel: Channel) -> AsyncIterator[Message]:
    while True:
        try:
            frames = await channel.receive_some()
        except trio.EndOfChannel:
            return
        for frame in frames:
            yield decode_message(frame)


async def _ask(path: str, request: Request) -> Message:
    async with _connect(path) as channel:
        await send_control(channel, request)
        with trio.fail_after(_TIMEOUT if request.verb != "reload" else 600):
            async for reply in _replies(channel):
                return reply
    raise CliError(f"the system at {path} closed the connection without answering")


async def _running() -> list[tuple[SystemInfo, str]]:
    """The systems of this user that answer, with their sockets."""
    directory = control_directory()
    found = []
    for path in sorted(directory.glob("*.sock")) if directory.is_dir() else []:
        try:
            with trio.move_on_after(2):
                info = await _ask(str(path), Request(verb="info"))
                if isinstance(info, SystemInfo):
                    found.append((info, str(path)))
        except (CliError, OSError, ProtocolError):
            continue  # a stale socket (its master was killed): not running
    return found


async def _pick(
    name: str | None, running: list[tuple[SystemInfo, str]] | None = None
) -> tuple[SystemInfo, str]:
    if running is None:
        running = await _running()
    if name is not None:
        for info, path in running:
            if info.name == name:
                return info, path
        names = ", ".join(info.name for info, _ in running) or "none"
        raise CliError(f"no system named {name!r} is running (running: {names})")
    if not running:
        raise CliError(f"no system is running (no control socket answers in "
                       f"{control_directory()})")
    if len(running) > 1:
        names = ", ".join(info.name for info, _ in running)
        raise CliError(f"several systems are running ({names}): name one", status=2)
    return running[0]


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
    running = await _running()
    if arguments.json:
        _print_json([info.model_dump() for info, _ in running])
        return 0
    if not running:
        print(f"no system is running (control sockets live in {control_directory()})")
        return 0
    from rich.table import Table

    table = Table()
    for column in ("name", "pid", "uptime", "socket"):
        table.add_column(column)
    for info, path in running:
        table.add_row(info.name, str(info.pid), _duration(info.uptime), path)
    _console().print(table)
    return 0


async def _status(path: str) -> Status:
    reply = await _ask(path, Request(verb="status"))
    if not isinstance(reply, Status):
        raise CliError(f"unexpected answer: {reply!r}")
    return reply


def _status_json(found: Status) -> dict[str, Any]:
    return {"system": found.system.model_dump(),
            "actors": [row.model_dump() for row in found.actors]}


async def status(arguments: argparse.Namespace) -> int:
    name, _ = _split(arguments.args, 0)
    _, path = await _pick(name)
    found = await _status(path)
    if arguments.json:
        _print_json(_status_json(found))
    else:
        _console().print(status_table(found))
    return 0


async def top(arguments: argparse.Namespace) -> int:
    name, _ = _split(arguments.args, 0)
    _, path = await _pick(name)
    if arguments.json:
        while True:
            _print_json(_status_json(await _status(path)))
            await trio.sleep(arguments.interval)
    from rich.live import Live

    with Live(status_table(await _status(path)), console=_console(), screen=False,
              auto_refresh=False) as live:
        while True:
            await trio.sleep(arguments.interval)
            live.update(status_table(await _status(path)), refresh=True)


async def _operate(arguments: argparse.Namespace, request: Request, path: str) -> int:
    reply = await _ask(path, request)
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
    running = await _running()
    names = {info.name for info, _ in running}
    name = given.pop(0) if given and (len(given) == 2 or given[0] in names) else None
    _, path = await _pick(name, running)
    return await _operate(arguments, Request(verb="reload", path=given[0] if given else None),
                          path)


async def restart(arguments: argparse.Namespace) -> int:
    try:
        name, rest = _split(arguments.args, 1)
    except CliError:
        raise CliError("restart takes [NAME] PATH", status=2) from None
    _, path = await _pick(name)
    return await _operate(arguments, Request(verb="restart", path=rest[0]), path)


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
    _, path = await _pick(name)
    return await _operate(arguments, Request(verb="scale", path=rest[0], count=count), path)


async def stop(arguments: argparse.Namespace) -> int:
    name, _ = _split(arguments.args, 0)
    _, path = await _pick(name)
    return await _operate(arguments, Request(verb="stop"), path)


async def _follow(
    arguments: argparse.Namespace, verb: str, kind: type[L], show: Callable[[L], None]
) -> int:
    """The lines of a stream (``events``, ``logs``) shown one by one, until it ends (or,
    with ``--follow``, until interrupted)."""
    name, _ = _split(arguments.args, 0)
    _, path = await _pick(name)
    async with _connect(path) as channel:
        await send_control(channel, Request(verb=verb, follow=arguments.follow))
        async for reply in _replies(channel):
            if isinstance(reply, End):
                break
            if isinstance(reply, kind):
                show(reply)
    return 0


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


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trio-actors", description="Operate the running actor systems of this user.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="With NAME left out and exactly one system running, that one is meant.",
    )
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    usage = {
        "ls": ("the systems running", ""),
        "status": ("one row per actor", "[NAME]"),
        "top": ("the status, refreshed", "[NAME]"),
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
        if arguments:
            sub.add_argument("args", nargs="*", metavar=arguments)
        else:
            sub.set_defaults(args=[])
        if verb in ("events", "logs"):
            sub.add_argument("--follow", "-f", action="store_true", help="keep following")
        if verb == "top":
            sub.add_argument("--interval", type=float, default=1.0, help="seconds between")
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
    except CliError as exc:
        _fail(str(exc), exc.status)
    except KeyboardInterrupt:
        return 0 if arguments.verb in ("top", "events", "logs") else 130
    except (trio.TooSlowError, ProtocolError) as exc:
        _fail(f"the system did not answer properly: {exc or type(exc).__name__}", 1)
    except BrokenPipeError:
        return 0  # piped into something that stopped reading (head, less)
