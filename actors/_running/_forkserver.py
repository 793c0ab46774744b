"""A fork server: a pre-imported process that forks workers on request.

A cold worker pays for a fresh interpreter and the imports of trio, pydantic, the runtime and
the user's script (hundreds of milliseconds); a fork of a process that has done all that is
ready in a few. The master starts one fork server (``python -m actors._system._zygote``) per
system. It imports everything a worker needs, loads the main script as ``__mp_main__`` and
then waits, single-threaded and with no event loop, for requests on its control socket: a
``ForkRequest`` frame carrying the new worker's channel fd. It forks; the child becomes a
worker exactly as ``actors._system._bootstrap`` would (own process group, dies with its parent, own
trio loop). The server reaps its children and reports each exit status to the master, which
sees these workers through :class:`ForkedProcess`.

Ownership: the master owns the server and closes its control socket to stop it; the server
dies with the master (``PR_SET_PDEATHSIG`` and the socket's EOF), and its workers die with it.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Literal

import trio

from protocol import (
    Channel,
    FdHandle,
    Frame,
    FrameKind,
    Message,
    decode_message,
    encode_message,
    open_channel,
)

from .._base._errors import SpawnError
from ._processes import (
    OutputSink,
    ServerFork,
    SpawnedProcess,
    main_script,
    output_pipes,
    relay_lines,
    start_process,
)

__all__ = [
    "SERVER_PATH",
    "ForkServer",
    "ForkedProcess",
    "open_fork_server",
]

log = logging.getLogger("actors")

SERVER_PATH = "@forkserver"
"""The path the fork server's own output is logged under (``trio-actors logs``)."""


class Preload(Message, tag="actors.forkserver.Preload"):
    """What the server imports before its first fork."""

    main_path: str | None = None
    main_module: str | None = None
    sys_path: list[str]
    modules: list[str]


class ForkRequest(Message, tag="actors.forkserver.ForkRequest"):
    """Fork a worker on this channel (with its stdout and stderr, if given)."""

    request: int
    channel: FdHandle
    stdout: FdHandle | None = None
    stderr: FdHandle | None = None


class Forked(Message, tag="actors.forkserver.Forked"):
    request: int
    pid: int


class ForkFailed(Message, tag="actors.forkserver.ForkFailed"):
    request: int
    error: str


class Preloaded(Message, tag="actors.forkserver.Preloaded"):
    """The server imported what it was asked to (``error``: what failed to import)."""

    error: str | None = None


class ChildExited(Message, tag="actors.forkserver.ChildExited"):
    pid: int
    status: int  # as waitpid returns it


class ForkedProcess:
    """A worker forked by the server, as the master sees it (see ``SpawnedProcess``).

    Its exit status comes from the server's report. If the server dies first, the worker
    lives on (an orphan); the master then learns of its exit through a pidfd, without a
    status (``status_unknown``).
    """

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self.status_unknown = False
        self._exited = trio.Event()
        self._news = trio.Event()
        self._orphan = False
        self._pidfd = -1

    def _set_status(self, status: int) -> None:
        if not self._exited.is_set():
            self.returncode = os.waitstatus_to_exitcode(status)
            self._done()

    def _orphaned(self) -> None:
        """The fork server is gone: watch the process itself from now on."""
        if self._exited.is_set():
            return
        try:
            self._pidfd = os.pidfd_open(self.pid)
        except OSError:
            self._abandon()  # already gone (and reaped by whoever adopted it)
            return
        self._orphan = True
        self._news.set()

    def _abandon(self) -> None:
        """Nobody will tell its exit status any more: make sure it is gone, then forget it."""
        if not self._exited.is_set():
            self.kill()  # (alive or not, nothing may outlive the system without a watcher)
            self.status_unknown = True
            self._done()

    def _done(self) -> None:
        self._exited.set()
        self._news.set()
        if self._pidfd >= 0:
            trio.lowlevel.notify_closing(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = -1

    async def wait(self) -> int | None:
        while not self._exited.is_set():
            if self._orphan:
                if self._pidfd >= 0:
                    try:
                        await trio.lowlevel.wait_readable(self._pidfd)  # readable once it exited
                    except trio.ClosedResourceError:
                        continue
                if not self._exited.is_set():
                    self.status_unknown = True
                    self._done()
            else:
                self._news = trio.Event()
                await self._news.wait()
        return self.returncode

    def kill(self) -> None:
        if not self._exited.is_set():
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


class ForkServer:
    """The master's handle on its fork server: a :class:`Spawner`."""

    def __init__(self) -> None:
        self._requests = 0
        self._waiting: dict[int, trio.Event] = {}
        self._answers: dict[int, Message] = {}
        self._children: dict[int, ForkedProcess] = {}
        self._early_exits: dict[int, int] = {}
        self.broken: BaseException | None = None
        self.gone = trio.Event()  # set once the server can fork no more
        self.preloaded = trio.Event()
        self.preload_error: str | None = None
        self.done_with = trio.Event()  # retired, and its last worker is gone
        self._retired = False
        self._channel: Channel
        # The task reading the server's reports is shielded: when the block using the server
        # is cancelled, the system's shutdown still reaps its workers, and learns of their
        # exits through that task. open_fork_server ends it once the block is over.
        self._serve_scope = trio.CancelScope(shield=True)
        self._closing = False
        self._output: _LastWords | None = None  # its stdout and stderr, when captured

    async def start(self, fd: int, output: tuple[int, int] | None = None) -> ForkedProcess:
        if self.broken is not None:
            raise SpawnError(f"the fork server is gone: {self.broken}")
        channel = self._channel
        self._requests += 1
        request = self._requests
        done = self._waiting[request] = trio.Event()
        data, fds = encode_message(FrameKind.SYSTEM, ForkRequest(
            request=request, channel=FdHandle(fd),
            stdout=None if output is None else FdHandle(output[0]),
            stderr=None if output is None else FdHandle(output[1]),
        ))
        try:
            channel.send_nowait(data, fds)
            await done.wait()
        finally:
            self._waiting.pop(request, None)
        answer = self._answers.pop(request, None)
        if isinstance(answer, Forked):
            process = self._children[answer.pid] = ForkedProcess(answer.pid)
            status = self._early_exits.pop(answer.pid, None)
            if status is not None:
                process._set_status(status)
            return process
        if isinstance(answer, ForkFailed):
            raise SpawnError(f"the fork server could not fork: {answer.error}")
        raise SpawnError(f"the fork server is gone: {self.broken}")

    async def _serve(self, process: SpawnedProcess) -> None:
        with self._serve_scope:
            try:
                while True:
                    for frame in await self._channel.receive_some():
                        self._on_frame(frame)
            except (trio.EndOfChannel, trio.BrokenResourceError, trio.ClosedResourceError):
                if not self._closing:
                    with trio.move_on_after(1):
                        await process.wait()
                        if self._output is not None:
                            await self._output.closed.wait()  # what it said last, complete
                    log.error("the fork server is gone (exit status %s)", process.returncode)
                    said = self._output.last if self._output is not None else None
                    self._fail(RuntimeError(
                        f"the fork server exited with status {process.returncode}"
                        + (f" (it said last: {said})" if said else "")
                    ))
            except Exception as exc:
                log.error("the fork server spoke garbage: %r", exc)
                self._fail(exc)
                raise
        self._fail(RuntimeError("the fork server was closed"))

    @property
    def children(self) -> int:
        """Workers it forked that have not exited yet."""
        return len(self._children)

    def retire(self) -> None:
        """Fork nothing more; end once the workers it forked have exited."""
        self._retired = True
        if not self._children:
            self.done_with.set()

    def _on_frame(self, frame: Frame) -> None:
        message = decode_message(frame)
        if isinstance(message, Preloaded):
            self.preload_error = message.error
            self.preloaded.set()
        elif isinstance(message, Forked | ForkFailed):
            self._answers[message.request] = message
            event = self._waiting.get(message.request)
            if event is not None:
                event.set()
        elif isinstance(message, ChildExited):
            child = self._children.pop(message.pid, None)
            if child is None:
                self._early_exits[message.pid] = message.status
            else:
                child._set_status(message.status)
            if self._retired and not self._children:
                self.done_with.set()

    def _fail(self, exc: BaseException) -> None:
        if self.broken is None:
            self.broken = exc
        self.gone.set()
        if not self.preloaded.is_set():
            self.preload_error = f"the fork server went away while importing: {exc}"
            self.preloaded.set()
        for event in self._waiting.values():
            event.set()
        # Its workers outlive it (they die with the master, not with it): from now on they
        # are watched through their pidfds; once the system closes, nobody waits for them.
        for child in self._children.values():
            if self._closing:
                child._abandon()
            else:
                child._orphaned()
        self._children.clear()


class _LastWords:
    """The fork server's output on its way to the system's output sink; keeps the last
    line it wrote to stderr (the end of a traceback, say) for the error of its death."""

    def __init__(self, sink: OutputSink) -> None:
        self.sink = sink
        self.last: str | None = None
        self.closed = trio.Event()  # its stderr reached its end

    def line(self, path: str, pid: int, stream: Literal["stdout", "stderr"], text: str
             ) -> None:
        if stream == "stderr" and text.strip():
            self.last = text.strip()
        self.sink.line(path, pid, stream, text)

    async def relay(self, fd: int, pid: int, stream: Literal["stdout", "stderr"]) -> None:
        try:
            await relay_lines(fd, self, SERVER_PATH, pid, stream)
        finally:
            if stream == "stderr":
                self.closed.set()


@asynccontextmanager
async def open_fork_server(
    preload: list[str] | None = None,
    *,
    output: OutputSink | None = None,
    fork: ServerFork | None = None,
) -> AsyncIterator[ForkServer]:
    """Run a fork server for the duration of the block (it is reaped on exit).

    With ``output``, what the server itself prints (the traceback of an import that
    failed, say) goes there line by line, under the path ``@forkserver``; otherwise it
    writes where this process writes. With ``fork``, the server is a fork of this process
    if it can be (see :class:`ServerFork`), else a fresh interpreter."""
    async with trio.open_nursery() as relays:
        async with _run_fork_server(preload, output, relays, fork) as server:
            yield server
        relays.cancel_scope.cancel()  # (bounded: its output ended, or it is not coming)


@asynccontextmanager
async def _run_fork_server(
    preload: list[str] | None,
    output: OutputSink | None,
    relays: trio.Nursery,
    fork: ServerFork | None,
) -> AsyncIterator[ForkServer]:
    server = ForkServer()
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    pipes = None if output is None else output_pipes()
    try:
        its_output = None if pipes is None else (pipes[0][1], pipes[1][1])
        process = None if fork is None else fork(theirs.fileno(), its_output)
        if process is None:
            process = start_process(
                [sys.executable, "-m", "actors._system._zygote"], fd=theirs.fileno(),
                extra_env={}, output=its_output,
            )
    except BaseException:
        ours.close()
        for read_end, _ in pipes or ():
            os.close(read_end)
        raise
    finally:
        theirs.close()
        for _, write_end in pipes or ():  # the server has its own copies now
            os.close(write_end)
    if output is not None and pipes is not None:
        words = server._output = _LastWords(output)
        relays.start_soon(words.relay, pipes[0][0], process.pid, "stdout")
        relays.start_soon(words.relay, pipes[1][0], process.pid, "stderr")
    try:
        async with open_channel(ours) as channel, trio.open_nursery() as nursery:
            server._channel = channel
            main_path, main_module = main_script()
            data, fds = encode_message(FrameKind.SYSTEM, Preload(
                main_path=main_path, main_module=main_module, sys_path=list(sys.path),
                modules=list(preload or []),
            ))
            channel.send_nowait(data, fds)
            nursery.start_soon(server._serve, process)
            try:
                yield server
            finally:
                server._closing = True
                channel.close()
                server._serve_scope.cancel()
    finally:
        with trio.CancelScope(shield=True):
            with trio.move_on_after(2):
                await process.wait()
            if process.returncode is None:
                process.kill()
                await process.wait()
            if server._output is not None:
                with trio.move_on_after(1):  # the end of what it printed, before we go
                    await server._output.closed.wait()
        if server.broken is not None and process.returncode != 0:
            log.error("the fork server exited with status %s", process.returncode)
