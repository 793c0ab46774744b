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
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Protocol

import trio

from protocol import (
    Channel,
    FrameTooLarge,
    Message,
    ProtocolError,
    open_channel,
)

from .._base._children import ChildInfo
from .._base._errors import ActorError, SystemNameTaken
from .._base._events import Event
from .._listening._sockets import AcceptBackoff, accept_failure, runtime_directory
from .._running._processes import LINE_LIMIT
from ._output import OutputLog
from ._protocol import (
    ActorStatus,
    Answer,
    Children,
    End,
    EventLine,
    LogLine,
    Note,
    Request,
    Status,
    SystemInfo,
    receive_request,
    send_control,
)
from ._status import cut

__all__ = [
    "ControlServer",
    "Operable",
    "control_directory",
    "open_control_server",
    "socket_path",
]

log = logging.getLogger("actors")
output_log = logging.getLogger("actors.output")

# -- the control socket -------------------------------------------------------------------------


class Operable(Protocol):
    """What the control server asks of the system (``ActorSystem`` is one)."""

    def info(self) -> SystemInfo: ...

    async def status(self) -> list[ActorStatus]: ...

    async def reload(self, path: str | None = None) -> list[str]: ...

    async def restart(self, path: str) -> None: ...

    async def scale(self, path: str, count: int) -> None: ...

    async def terminate_child(self, path: str) -> None: ...

    async def delete_child(self, path: str) -> None: ...

    async def which_children(self, supervisor_path: str) -> list[ChildInfo]: ...

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
                request = await receive_request(channel)
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
                elif verb == "terminate":
                    await system.terminate_child(_path(request))
                elif verb == "delete":
                    await system.delete_child(_path(request))
                elif verb == "children":
                    rows = await system.which_children(_path(request))
                    await send_control(channel, Children(rows=rows))
                    return
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
    bound = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listening = trio.socket.from_stdlib_socket(bound)
    try:
        # Bound here, as the checks above are made: a quick call on a local file system.
        # trio's bind would make it in a helper thread, which then lingers for seconds and
        # keeps the master from being forked into its fork server.
        bound.bind(str(path))
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

