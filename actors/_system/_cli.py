"""``trio-actors``: operate the running systems of this user from a shell.

    trio-actors ls                          the systems running (name, pid, state, uptime)
    trio-actors status [NAME]               one row per actor
    trio-actors top [NAME]                  the status, live (q or Ctrl-C quits)
    trio-actors reload [NAME] [PATH]        new code: workers replaced one at a time
    trio-actors restart [NAME] PATH         replace one supervised actor (start a terminated one)
    trio-actors children [NAME] PATH        a supervisor's children (which_children)
    trio-actors terminate [NAME] PATH       stop a supervised child; it is not restarted
    trio-actors delete [NAME] PATH          forget a terminated child's spec
    trio-actors scale [NAME] PATH N         a listener's acceptors, a pool's members
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
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Literal, NoReturn, TypeVar

import trio

from protocol import (
    Message,
    ProtocolError,
    open_channel,
    registry,
)

from .._base._errors import leaves
from .._operations._protocol import (
    Answer,
    Children,
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
from ._client import (
    RELOADTIMEOUT,
    TIMEOUT,
    CliError,
    System,
    alive,
    answering,
    ask,
    exchange,
    info,
    open_socket,
    peer_pid,
    pick,
    replies,
    split,
    systems,
)
from ._tables import children_table, console, duration, print_json, status_table

__all__ = ["main"]

L = TypeVar("L", EventLine, LogLine)


# -- the verbs ------------------------------------------------------------------------------


async def ls(arguments: argparse.Namespace) -> int:
    """Every system with a live control socket, those that do not answer included."""
    live = [system for system in systems() if alive(system)]
    seen: dict[str, tuple[SystemInfo | None, int | None]] = {}

    async def look(system: System) -> None:
        seen[system.name] = (None, None)
        with trio.move_on_after(arguments.timeout):
            try:
                sock = await open_socket(system)
            except CliError:
                return  # gone meanwhile
            pid = peer_pid(sock)
            seen[system.name] = (None, pid)
            info: Message | None = None
            try:
                info = await exchange(system, sock, Request(verb="info"))
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
        print_json(rows)
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
            table.add_row(info.name, str(info.pid), "running", duration(info.uptime),
                          str(system.path))
        else:
            table.add_row(system.name, "-" if pid is None else str(pid), "not answering", "-",
                          str(system.path))
    console().print(table)
    return 0


async def _status(system: System, seconds: float) -> Status:
    with answering(system, seconds):
        reply = await ask(system, Request(verb="status"))
    if not isinstance(reply, Status):
        raise CliError(f"unexpected answer: {reply!r}")
    return reply


def _status_json(found: Status) -> dict[str, Any]:
    return {"system": found.system.model_dump(),
            "actors": [row.model_dump() for row in found.actors]}


async def status(arguments: argparse.Namespace) -> int:
    name, _ = split(arguments.args, 0)
    found = await _status(pick(name), arguments.timeout)
    if arguments.json:
        print_json(_status_json(found))
    else:
        console().print(status_table(found))
    return 0


async def top(arguments: argparse.Namespace) -> int:
    name, _ = split(arguments.args, 0)
    system = pick(name)
    if arguments.json:
        while True:
            print_json(_status_json(await _status(system, arguments.timeout)))
            await trio.sleep(arguments.interval)
    from rich.live import Live

    terminal = sys.stdin.fileno() if sys.stdin is not None and sys.stdin.isatty() else None
    with _cbreak(terminal), Live(status_table(await _status(system, arguments.timeout)),
                                 console=console(), screen=False, auto_refresh=False) as live:

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
        with answering(system, seconds):
            await info(system)
        seconds = max(seconds, RELOADTIMEOUT)
    with answering(system, seconds):
        reply = await ask(system, request)
    if not isinstance(reply, Answer):
        raise CliError(f"unexpected answer: {reply!r}")
    if arguments.json:
        print_json(reply.model_dump())
    elif reply.ok:
        done = {"reload": "reloaded", "restart": "restarted", "scale": "scaled",
                "stop": "stopping", "terminate": "terminated", "delete": "deleted",
                }[request.verb]
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
    names = {system.name for system in systems()}
    name = given.pop(0) if given and (len(given) == 2 or given[0] in names) else None
    system = pick(name)
    return await _operate(arguments, Request(verb="reload", path=given[0] if given else None),
                          system)


async def restart(arguments: argparse.Namespace) -> int:
    try:
        name, rest = split(arguments.args, 1)
    except CliError:
        raise CliError("restart takes [NAME] PATH", status=2) from None
    system = pick(name)
    return await _operate(arguments, Request(verb="restart", path=rest[0]), system)


async def terminate(arguments: argparse.Namespace) -> int:
    return await _on_child(arguments, "terminate")


async def delete(arguments: argparse.Namespace) -> int:
    return await _on_child(arguments, "delete")


async def _on_child(arguments: argparse.Namespace, verb: Literal["terminate", "delete"]
                    ) -> int:
    try:
        name, rest = split(arguments.args, 1)
    except CliError:
        raise CliError(f"{verb} takes [NAME] PATH", status=2) from None
    request = Request(verb=verb, path=rest[0])
    return await _operate(arguments, request, pick(name))


async def children(arguments: argparse.Namespace) -> int:
    try:
        name, rest = split(arguments.args, 1)
    except CliError:
        raise CliError("children takes [NAME] PATH", status=2) from None
    system = pick(name)
    with answering(system, arguments.timeout):
        reply = await ask(system, Request(verb="children", path=rest[0]))
    if isinstance(reply, Answer):
        raise CliError(f"children failed: {reply.error}")
    if not isinstance(reply, Children):
        raise CliError(f"unexpected answer: {reply!r}")
    if arguments.json:
        print_json([row.model_dump() for row in reply.rows])
    else:
        console().print(children_table(reply.rows))
    return 0


async def scale(arguments: argparse.Namespace) -> int:
    try:
        name, rest = split(arguments.args, 2)
    except CliError:
        raise CliError("scale takes [NAME] PATH N", status=2) from None
    try:
        count = int(rest[1])
    except ValueError:
        raise CliError(f"N must be a number of acceptors, not {rest[1]!r}", status=2) from None
    if count < 1:
        raise CliError("N must be at least 1", status=2)
    system = pick(name)
    return await _operate(arguments, Request(verb="scale", path=rest[0], count=count), system)


async def stop(arguments: argparse.Namespace) -> int:
    name, _ = split(arguments.args, 0)
    system = pick(name)
    return await _operate(arguments, Request(verb="stop"), system)


async def _follow(
    arguments: argparse.Namespace, verb: str, kind: type[L], show: Callable[[L], None]
) -> int:
    """The lines of a stream (``events``, ``logs``) shown one by one, until it ends (or,
    with ``--follow``, until interrupted). What the system says about the stream itself
    (lines left out) goes to stderr; a stream cut short is a failure, never a quiet end."""
    name, _ = split(arguments.args, 0)
    system = pick(name)
    with answering(system, arguments.timeout):
        await info(system)
        sock = await open_socket(system)
    async with open_channel(sock) as channel:
        await send_control(channel, Request(verb=verb, follow=arguments.follow))
        async for reply in replies(channel):
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
            print_json(line.model_dump())
        else:
            stream = sys.stdout if line.stream == "stdout" else sys.stderr
            print(f"[{line.path} {line.pid}] {line.text}", file=stream, flush=True)

    return await _follow(arguments, "logs", LogLine, show)


VERBS = {"ls": ls, "status": status, "top": top, "reload": reload, "restart": restart,
         "children": children, "terminate": terminate, "delete": delete,
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
        "restart": ("replace one supervised actor (or start a terminated one)",
                    "[NAME] PATH"),
        "children": ("a supervisor's children", "[NAME] PATH"),
        "terminate": ("stop a supervised child; it is not restarted", "[NAME] PATH"),
        "delete": ("forget a terminated child", "[NAME] PATH"),
        "scale": ("set a listener's number of acceptors (a pool's of members)",
                  "[NAME] PATH N"),
        "stop": ("stop it in order, as SIGTERM does", "[NAME]"),
        "events": ("the lifecycle events", "[NAME]"),
        "logs": ("the workers' output", "[NAME]"),
    }
    for verb, (summary, arguments) in usage.items():
        sub = verbs.add_parser(verb, help=summary, description=summary)
        sub.add_argument("--json", action="store_true", help="machine-readable output")
        sub.add_argument("--timeout", type=_seconds, default=TIMEOUT, metavar="S",
                         help=f"seconds to wait for a system to answer (default {TIMEOUT:g})")
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
