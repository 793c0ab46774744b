"""Operating a running system: its status, its workers' output, and its control socket.

Every system opens a control socket: a Unix socket in a directory only its user can enter
(``$XDG_RUNTIME_DIR/trio-actors/`` or ``/tmp/trio-actors-<uid>/``, mode 0700; the socket
0600), named after the system. A peer of another uid is refused (``SO_PEERCRED``). The
protocol is the runtime's own framing and typed messages: a request, then its answer (or,
for ``events`` and ``logs``, a stream of them until the client goes). The console script
``trio-actors`` (``_cli``) is its client.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import socket
import struct
import sys
import time
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Literal, Protocol

import trio

from protocol import (
    Channel,
    FrameKind,
    FrameTooLarge,
    Message,
    ProtocolError,
    decode_message,
    encode_message,
    open_channel,
)

from .._base._control import Probe, Probed
from .._base._errors import ActorError, SystemNameTaken
from .._base._events import Event, ExitReason
from .._base._tree import Child
from .._listening._listener import Listener
from .._listening._sockets import AcceptBackoff, accept_failure, runtime_directory
from .._messaging._router import Router
from .._running._cell import Cell
from .._running._processes import LINE_LIMIT
from .._running._worker import WorkerHandle
from .._supervision._supervisor import Supervisor

__all__ = [
    "ActorStatus",
    "ControlServer",
    "LogFollower",
    "Note",
    "Operable",
    "OutputLog",
    "SystemInfo",
    "collect_status",
    "control_directory",
    "cut",
    "open_control_server",
    "send_control",
    "socket_path",
]

log = logging.getLogger("actors")
output_log = logging.getLogger("actors.output")

_LOG_LINES = 2000  # lines of workers' output kept for `trio-actors logs`
_FOLLOW_BUFFER = 4096
_STATUS_TEXT = 4096  # characters of a status row's last exit (its first line, cut)


# -- what the control socket carries -----------------------------------------------------------


class SystemInfo(Message, tag="actors.ops.SystemInfo"):
    """A running system: its name, its master's pid, since when it runs."""

    name: str
    pid: int
    started: float  # time.time() when it started
    uptime: float
    socket: str


class ActorStatus(Message, tag="actors.ops.ActorStatus"):
    """One row of ``trio-actors status``."""

    path: str
    kind: Literal["supervisor", "listener", "acceptor", "worker", "actor"]
    pid: int | None = None
    node: str = "0"
    state: Literal["running", "starting", "stopping"] = "running"
    uptime: float | None = None
    restarts: int = 0
    last_exit: str | None = None
    mailbox: int | None = None
    rss: int | None = None
    cpu: float | None = None
    open: int | None = None
    total: int | None = None
    handled: int | None = None
    asks: int | None = None
    ask_seconds: float | None = None  # the time its handlers took on asks, in all
    ask_buckets: list[int] | None = None  # how many took at most each of ASK_BUCKETS


class Status(Message, tag="actors.ops.Status"):
    system: SystemInfo
    actors: list[ActorStatus]


class Request(Message, tag="actors.ops.Request"):
    """What a client wants (``verb``), with its arguments."""

    verb: Literal["info", "status", "reload", "restart", "scale", "stop", "events", "logs"]
    path: str | None = None
    count: int | None = None
    follow: bool = False


class Answer(Message, tag="actors.ops.Answer"):
    """The outcome of a request that does not stream: ``error`` set if it failed."""

    ok: bool
    error: str | None = None
    detail: list[str] = []


class EventLine(Message, tag="actors.ops.EventLine"):
    tag: str
    body: str


class LogLine(Message, tag="actors.ops.LogLine"):
    """One line of a worker's output."""

    at: float
    path: str
    pid: int
    stream: Literal["stdout", "stderr"]
    text: str


class End(Message, tag="actors.ops.End"):
    """The end of a stream (``logs`` without ``--follow``)."""


class Note(Message, tag="actors.ops.Note"):
    """Said in a stream where something could not be: lines a slow reader missed, an item
    too large to carry. The stream goes on after it."""

    text: str


# -- what runs ----------------------------------------------------------------------------------


class _Processes:
    """psutil views of the workers, kept so that CPU% compares with the last look."""

    def __init__(self) -> None:
        self._seen: dict[int, object] = {}

    def figures(self, pid: int | None) -> tuple[int | None, float | None]:
        import psutil

        if pid is None:
            return None, None
        process = self._seen.get(pid)
        try:
            if process is None:
                process = self._seen[pid] = psutil.Process(pid)
                # The first look only starts the measure (psutil answers 0.0, which would
                # read as idle): no figure until there is an interval to measure over.
                process.cpu_percent(None)
                return process.memory_info().rss, None
            assert isinstance(process, psutil.Process)
            return process.memory_info().rss, round(process.cpu_percent(None), 1)
        except psutil.Error:
            self._seen.pop(pid, None)
            return None, None
        except OSError:
            return None, None  # out of fds to read /proc with: figures unknown this time


PROCESSES = _Processes()


def _described(reason: ExitReason | None) -> str | None:
    """An exit reason in a status row: one line, cut (an exception's message has no bound,
    a status must still fit in a frame)."""
    return None if reason is None else cut(reason.describe(), _STATUS_TEXT)


def cut(text: str, limit: int) -> str:
    """``text``, or its first ``limit`` characters and a marker saying how many were cut."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]} … [cut: {len(text) - limit} more characters]"


def _figures(probed: Probed | None) -> dict[str, Any]:
    """A probed actor's own figures, as ActorStatus fields (none if it did not answer)."""
    if probed is None:
        return {}
    return {"mailbox": probed.mailbox, "handled": probed.handled, "asks": probed.asks,
            "ask_seconds": probed.ask_seconds, "ask_buckets": probed.ask_buckets}


async def collect_status(
    router: Router,
    children: list[Child],
    last_exits: dict[str, ExitReason],
) -> list[ActorStatus]:
    """One row per actor: the supervision tree walked from ``children``, then the actors
    registered by worker processes (their own children)."""
    rows: list[ActorStatus] = []
    now = trio.current_time()
    pids: dict[str, int] = {}  # worker node -> pid

    async def probe(address: str | None) -> Probed | None:
        if address is None:
            return None
        from .._base._ref import ActorRef

        with trio.move_on_after(1):
            try:
                reply = await ActorRef(router, address=address).ask(Probe())
            except ActorError:
                return None
            return reply if isinstance(reply, Probed) else None
        return None

    async def walk(child: Child, restarts: int, acceptor: bool) -> None:
        last = last_exits.get(child.path)
        common = {"path": child.path, "uptime": round(now - child.started_at, 3),
                  "restarts": restarts, "last_exit": _described(last)}
        if isinstance(child, Listener):
            rows.append(ActorStatus(kind="listener", pid=os.getpid(), **common))
            sup = child._supervisor
            if sup is not None:
                stats = {s.path: s for s in await child.stats()}
                for name, instance in sorted(sup.instances().items()):
                    await walk(instance, sup.restart_counts.get(name, 0), True)
                    if rows[-1].path in stats:
                        figures = stats[rows[-1].path]
                        rows[-1] = rows[-1].model_copy(
                            update={"open": figures.open, "total": figures.total})
        elif isinstance(child, Supervisor):
            rows.append(ActorStatus(kind="supervisor", pid=os.getpid(), **common))
            for name, instance in sorted(child.instances().items(),
                                         key=lambda item: child.child_names().index(item[0])):
                await walk(instance, child.restart_counts.get(name, 0), False)
        elif isinstance(child, WorkerHandle):
            rss, cpu = PROCESSES.figures(child.pid)
            probed = await probe(child.address)
            if child.pid is not None:
                pids[child.node_id] = child.pid
            state = "running" if child.address is not None else "starting"
            if child._stop_requested or (child.link is not None and child.link.closing):
                state = "stopping"
            rows.append(ActorStatus(
                kind="acceptor" if acceptor else "worker", pid=child.pid, node=child.node_id,
                state=state, rss=rss, cpu=cpu, **_figures(probed), **common,
            ))
        elif isinstance(child, Cell):
            rows.append(ActorStatus(
                kind="actor", pid=os.getpid(), node=router.id,
                state="running" if child.accepting else "stopping",
                mailbox=child.mailbox_depth, handled=child.handled, asks=child.asks,
                ask_seconds=round(child.ask_seconds, 6), ask_buckets=list(child.ask_buckets),
                **common,
            ))
            for grandchild in list(child.children):
                await walk(grandchild, 0, False)

    for child in list(children):
        await walk(child, 0, False)
    known = {row.path for row in rows}
    for path, address in sorted(router.names.names.items()):
        if path in known:
            continue
        node = address.partition("/")[0]
        pid = next((p for n, p in pids.items() if node == n or node.startswith(n + ".")), None)
        probed = await probe(address)
        last = last_exits.get(path)
        rows.append(ActorStatus(
            path=path, kind="actor", node=node,
            pid=probed.pid if probed is not None else pid, **_figures(probed),
            last_exit=_described(last),
        ))
    return rows


# -- workers' output ----------------------------------------------------------------------------


class LogFollower:
    """One reader of ``logs --follow``: the lines queued for it (:attr:`receive`), and how
    many it missed since its queue was last full (:attr:`missed`). A reader too slow for
    the output misses lines, and is told so (a :class:`Note` where they were), rather than
    being let go: its stream never ends silently."""

    def __init__(self) -> None:
        self.send, self.receive = trio.open_memory_channel[LogLine | Note](_FOLLOW_BUFFER)
        self.missed = 0

    def offer(self, line: LogLine) -> bool:
        """Queue ``line``, after the note of what was missed before it; False once the
        reader is gone."""
        try:
            if self.missed:
                self.send.send_nowait(self.note())
                self.missed = 0  # (counted from here again, if the line misses its turn)
            self.send.send_nowait(line)
        except trio.WouldBlock:
            self.missed += 1
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return False
        return True

    def note(self) -> Note:
        """The note of the lines missed so far."""
        return Note(text=f"{self.missed} line(s) of output left out here: this reader fell "
                         f"{_FOLLOW_BUFFER} lines behind")

    def __enter__(self) -> LogFollower:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.receive.close()


class OutputLog:
    """What the system's workers print, line by line (a long line cut: see
    ``_processes.OutputLines``): echoed to the master's own stdout and stderr as printed (so a
    terminal still shows it), sent to the ``actors.output`` logger (DEBUG) with the
    worker's path and pid, and kept (the last lines) for ``logs``."""

    def __init__(self, keep: int = _LOG_LINES) -> None:
        self.lines: deque[LogLine] = deque(maxlen=keep)
        self._followers: list[LogFollower] = []

    def line(self, path: str, pid: int, stream: Literal["stdout", "stderr"], text: str) -> None:
        entry = LogLine(at=time.time(), path=path, pid=pid, stream=stream, text=text)
        self.lines.append(entry)
        target = sys.stdout if stream == "stdout" else sys.stderr
        try:
            target.write(text + "\n")
            target.flush()
        except (OSError, ValueError):
            pass  # our own stdout is gone (closed, a broken pipe): keep the rest working
        output_log.debug("[%s %d] %s", path, pid, text)
        for follower in list(self._followers):
            if not follower.offer(entry):
                self._followers.remove(follower)  # gone

    def follow(self) -> LogFollower:
        """A reader of the lines from now on (use it as a context manager: leaving it
        unsubscribes)."""
        follower = LogFollower()
        self._followers.append(follower)
        return follower


# -- the control socket -------------------------------------------------------------------------


class Operable(Protocol):
    """What the control server asks of the system (``ActorSystem`` is one)."""

    def info(self) -> SystemInfo: ...

    async def status(self) -> list[ActorStatus]: ...

    async def reload(self, path: str | None = None) -> list[str]: ...

    async def restart(self, path: str) -> None: ...

    async def scale(self, path: str, count: int) -> None: ...

    def request_stop(self) -> None: ...

    def events(self, *, history: bool = False) -> trio.MemoryReceiveChannel[Event]: ...

    @property
    def output(self) -> OutputLog: ...


def control_directory() -> Path:
    """Where this user's systems put their control sockets."""
    return runtime_directory()


def socket_path(name: str) -> Path:
    return control_directory() / f"{name}.sock"


def _private_directory(directory: Path) -> None:
    """Make ``directory`` (0700) or check that it is ours and private."""
    try:
        directory.mkdir(mode=0o700, parents=False, exist_ok=False)
    except FileExistsError:
        pass
    info = directory.lstat()
    if not directory.is_dir() or directory.is_symlink() or info.st_uid != os.getuid():
        raise SystemNameTaken(f"{directory} is not a directory of this user: refusing to use it")
    if info.st_mode & 0o077:
        os.chmod(directory, 0o700)


def _peer_uid(sock: socket.socket) -> int:
    credentials = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", credentials)
    return int(uid)


class ControlServer:
    """Serves the control socket of one system (see :func:`open_control_server`)."""

    def __init__(self, system: Operable, listening: trio.socket.SocketType, path: Path) -> None:
        self.system = system
        self.path = path
        self._listening = listening

    async def serve(self) -> None:
        # Out of fds (idle clients by the thousand), the master backs off as its listeners
        # do: what it serves already goes on, and the clients queued wait for their turn.
        backoff = AcceptBackoff(f"control socket {self.path}")
        async with trio.open_nursery() as nursery:
            while True:
                try:
                    conn, _ = await self._listening.accept()
                except OSError as exc:
                    failure = accept_failure(exc)
                    if failure == "closed":
                        return
                    if failure == "starved":
                        await backoff.starved_by(exc)
                    continue
                backoff.accepted()
                raw = socket.socket(fileno=conn.detach())
                try:
                    uid = _peer_uid(raw)
                except OSError:
                    uid = -1  # gone before it was looked at
                if uid != os.getuid():
                    if uid >= 0:
                        log.warning("control socket %s: refused a client of another user",
                                    self.path)
                    raw.close()
                    continue
                nursery.start_soon(self._client, raw)

    async def _client(self, raw: socket.socket) -> None:
        """One client: its request, answered. Whatever the client does (goes away, sends
        garbage), the system is not affected."""
        try:
            async with open_channel(raw) as channel:
                request = await _receive(channel)
                if isinstance(request, str):
                    await send_control(channel, Answer(ok=False, error=request))
                elif isinstance(request, Request):
                    await self._serve(channel, request)
                # Closing drops what is still queued: the end of a long answer or stream
                # (a status, the logs) would be cut mid-frame.
                await channel.flush()
        except* (ProtocolError, trio.BrokenResourceError, trio.ClosedResourceError,
                 trio.EndOfChannel, OSError) as gone:
            log.debug("control client went away: %r", gone.exceptions[0])
        except* Exception as failed:
            log.error("serving a control client failed", exc_info=failed.exceptions[0])

    async def _serve(self, channel: Channel, request: Request) -> None:
        system = self.system
        verb = request.verb
        if verb == "info":
            await send_control(channel, system.info())
        elif verb == "status":
            await send_control(channel, Status(system=system.info(), actors=await system.status()))
        elif verb == "events":
            await self._stream_events(channel, request.follow)
        elif verb == "logs":
            await self._stream_logs(channel, request.follow)
        else:
            try:
                detail: list[str] = []
                if verb == "reload":
                    detail = await system.reload(request.path)
                elif verb == "restart":
                    await system.restart(_path(request))
                elif verb == "scale":
                    if request.count is None:
                        raise ValueError("scale needs a count")
                    await system.scale(_path(request), request.count)
                elif verb == "stop":
                    system.request_stop()
                await send_control(channel, Answer(ok=True, detail=detail))
            except (ActorError, ValueError, KeyError) as exc:
                await send_control(channel, Answer(ok=False, error=str(exc) or type(exc).__name__))
            except Exception as exc:
                # Not one of the failures an operation may have (a bug, the OS refusing):
                # logged in full, and the client still gets an answer, not a closed socket.
                log.error("%s failed", verb, exc_info=exc)
                await send_control(channel, Answer(ok=False, error=f"{type(exc).__name__}: {exc}"))

    async def _stream_events(self, channel: Channel, follow: bool) -> None:
        events = self.system.events(history=True)
        try:
            if not follow:
                while True:
                    try:
                        event = events.receive_nowait()
                    except (trio.WouldBlock, trio.EndOfChannel):
                        break
                    await _send_event(channel, event)
                await send_control(channel, End())
                return
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_until_closed, channel, nursery.cancel_scope)
                while True:
                    async for event in events:
                        await _send_event(channel, event)
                    # The bus let this reader go (it fell behind, and the runtime waits for
                    # no observer): say so, and follow on from now.
                    events.close()
                    events = self.system.events()
                    await send_control(channel, Note(
                        text="events left out here: this reader fell too far behind"))
        finally:
            events.close()

    async def _stream_logs(self, channel: Channel, follow: bool) -> None:
        output = self.system.output
        following = output.follow() if follow else None
        for line in list(output.lines):
            await _send_line(channel, line)
        if following is None:
            await send_control(channel, End())
            return
        with following:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_until_closed, channel, nursery.cancel_scope)
                async for item in following.receive:
                    if isinstance(item, LogLine):
                        await _send_line(channel, item)
                    else:
                        await send_control(channel, item)
                    if following.missed and not following.receive.statistics(
                    ).current_buffer_used:
                        # Caught up with what it missed: say so now, not at the next line.
                        note, following.missed = following.note(), 0
                        await send_control(channel, note)


def _path(request: Request) -> str:
    if not request.path:
        raise ValueError(f"{request.verb} needs a path")
    return request.path


async def _until_closed(channel: Channel, scope: trio.CancelScope) -> None:
    """The client of a stream says nothing more: return once it goes. Whatever it sends
    meanwhile is dropped, fds included (else a client could fill the master's fd table)."""
    with contextlib.suppress(Exception):
        while True:
            for frame in await channel.receive_some():
                frame.close_fds()
    scope.cancel()


async def _send_line(channel: Channel, line: LogLine) -> None:
    """One line of a ``logs`` stream: cut, or left out with a note, if it is too large to
    send (the stream goes on either way)."""
    try:
        await send_control(channel, line)
    except FrameTooLarge:
        shorter = line.model_copy(update={"text": cut(line.text, LINE_LIMIT)})
        await _send_or_note(channel, shorter, f"a line of {line.path} ({len(line.text)} "
                                              "characters)")


async def _send_event(channel: Channel, event: Event) -> None:
    """One event of an ``events`` stream: its long texts cut, or left out with a note, if
    it is too large to send (an exception's message has no bound)."""
    line = EventLine(tag=event.message_tag, body=event.model_dump_json())
    try:
        await send_control(channel, line)
    except FrameTooLarge:
        body = json.dumps(_cut_texts(event.model_dump(mode="json")))
        await _send_or_note(channel, EventLine(tag=event.message_tag, body=body),
                            f"a {type(event).__name__} event ({len(line.body)} bytes)")


async def _send_or_note(channel: Channel, message: Message, what: str) -> None:
    try:
        await send_control(channel, message)
    except FrameTooLarge as exc:
        await send_control(channel, Note(
            text=f"{what} left out here: too large to send ({exc.length} bytes)"))


def _cut_texts(value: object) -> object:
    """``value`` (JSON data) with every string cut to :data:`LINE_LIMIT` characters."""
    if isinstance(value, str):
        return cut(value, LINE_LIMIT)
    if isinstance(value, list):
        return [_cut_texts(item) for item in value]
    if isinstance(value, dict):
        return {key: _cut_texts(item) for key, item in value.items()}
    return value


async def send_control(channel: Channel, message: Message) -> None:
    """Send one message on a control connection (either side)."""
    data, fds = encode_message(FrameKind.SYSTEM, message, max_frame_size=channel.max_frame_size)
    await channel.send(data, fds)


async def _receive(channel: Channel) -> Message | str:
    """A client's request, or why it is refused. A request is one frame and carries no fds:
    fds that come with it, or with any frame after it, are closed at once."""
    first, *rest = await channel.receive_some()
    for frame in rest:
        frame.close_fds()
    if first.nfds or first.fds:
        first.close_fds()
        return "a control request carries no file descriptors: refused"
    return decode_message(first)


@asynccontextmanager
async def open_control_server(
    system: Operable, name: str
) -> AsyncIterator[ControlServer]:
    """Serve ``system``'s control socket for the duration of the block (then remove it).

    A socket left by a master that was killed is replaced; a live system with the same
    name is :class:`SystemNameTaken`."""
    directory = control_directory()
    _private_directory(directory)
    path = directory / f"{name}.sock"
    if path.exists() or path.is_symlink():
        if await _answers(path):
            raise SystemNameTaken(
                f"a system named {name!r} is already running (its control socket is {path}); "
                "give this one another name: open_system(name=...)"
            )
        path.unlink(missing_ok=True)  # a master that died left it behind
    listening = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        await listening.bind(str(path))
        os.chmod(path, 0o600)
        listening.listen(64)
        server = ControlServer(system, listening, path)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server.serve)
            try:
                yield server
            finally:
                nursery.cancel_scope.cancel()
    finally:
        listening.close()
        with contextlib.suppress(FileNotFoundError):
            if path.exists():
                path.unlink()


async def _answers(path: Path) -> bool:
    """True if a system listens on the socket at ``path``."""
    probe = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        with trio.move_on_after(2):
            await probe.connect(str(path))
            return True
        return True  # it accepted nothing in time, but it is there
    except OSError as exc:
        if exc.errno in (errno.ECONNREFUSED, errno.ENOENT):
            return False
        raise
    finally:
        probe.close()

