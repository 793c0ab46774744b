"""OS processes: starting a worker's interpreter, watching it, and finding the main script.

A worker is a clean interpreter running ``python -m actors._system._bootstrap`` (or a fork of the
fork server). The parent passes it one end of a socketpair by fd number (named in
``ACTORS_CHANNEL_FD``, as Node passes ``NODE_CHANNEL_FD``). Starting processes goes through
the :class:`Spawner` seam, so that a pre-imported fork server can replace the cold start.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from typing import Literal, Protocol

import trio

from .._base._errors import SpawnError

__all__ = [
    "CHANNEL_FD_ENV",
    "LINE_LIMIT",
    "LOADING_MAIN_ENV",
    "PARENT_PID_ENV",
    "ChildProcess",
    "ColdSpawner",
    "ForkedChild",
    "OutputLines",
    "OutputSink",
    "ServerFork",
    "SpawnedProcess",
    "Spawner",
    "class_path",
    "main_script",
    "output_pipes",
    "relay_lines",
    "start_process",
    "unguarded_main",
]

CHANNEL_FD_ENV = "ACTORS_CHANNEL_FD"
PARENT_PID_ENV = "ACTORS_PARENT_PID"
LOADING_MAIN_ENV = "ACTORS_LOADING_MAIN"
"""Set (to the script's path) while a worker or the fork server imports the main script."""


def unguarded_main(path: str) -> str:
    """What to tell a user whose main script starts a system when it is imported."""
    return (
        f"the main script {path} starts the actor system when it is imported, and worker "
        "processes import it to find the actors it defines: put the code that starts the "
        "system under `if __name__ == \"__main__\":` (as with multiprocessing)"
    )
# The directory that holds the actors package (this file is actors/_running/_processes.py).
_RUNTIME_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class SpawnedProcess(Protocol):
    """What the parent needs of a started worker process (``trio.Process`` is one)."""

    @property
    def pid(self) -> int: ...

    @property
    def returncode(self) -> int | None: ...

    async def wait(self) -> int | None:
        """Return once the process exited: its exit status (None if it is unknown)."""
        ...

    def kill(self) -> None: ...


class Spawner(Protocol):
    """Starts a worker process whose channel is ``fd`` (to be passed by number); with
    ``output``, its stdout and stderr are those two fds (the caller keeps its copies)."""

    async def start(self, fd: int, output: tuple[int, int] | None = None) -> SpawnedProcess: ...


class OutputSink(Protocol):
    """Where the lines a worker prints go (the master's output log)."""

    def line(self, path: str, pid: int, stream: Literal["stdout", "stderr"], text: str
             ) -> None: ...


def output_pipes() -> tuple[tuple[int, int], tuple[int, int]]:
    """Two pipes, (read end, write end) each, for a child's stdout and stderr (the first
    closed again if the second cannot be made)."""
    stdout = os.pipe2(os.O_CLOEXEC)
    try:
        return stdout, os.pipe2(os.O_CLOEXEC)
    except OSError:
        os.close(stdout[0])
        os.close(stdout[1])
        raise


LINE_LIMIT = 64 * 1024
"""Bytes of one line of a worker's output that are kept (the rest is counted, not kept)."""


class OutputLines:
    """A worker's output (bytes as they come) cut into lines, sans-IO: :meth:`feed` returns
    the lines a chunk completed, :meth:`end` the last one when the output closes.

    A line longer than ``limit`` bytes keeps its first ``limit`` and ends with a marker,
    `` … [cut: N more bytes]``; what is cut is counted, never held, so a worker printing
    megabytes without a newline costs this process ``limit`` bytes, and what it prints
    after that line is not lost (nor is the line dropped as too large to carry).
    """

    def __init__(self, limit: int = LINE_LIMIT) -> None:
        self.limit = limit
        self._kept = bytearray()
        self._cut = 0

    @property
    def buffered(self) -> int:
        """Bytes held for the line not finished yet (at most ``limit``)."""
        return len(self._kept)

    def feed(self, chunk: bytes) -> list[str]:
        lines = []
        view = memoryview(chunk)
        start = 0
        while (end := chunk.find(b"\n", start)) >= 0:
            self._take(view[start:end])
            lines.append(self._line())
            start = end + 1
        self._take(view[start:])
        return lines

    def end(self) -> list[str]:
        """The line the output closed in the middle of, if any."""
        return [self._line()] if self._kept or self._cut else []

    def _take(self, piece: memoryview) -> None:
        room = max(0, self.limit - len(self._kept))
        self._kept += piece[:room]
        self._cut += max(0, len(piece) - room)

    def _line(self) -> str:
        text = self._kept.decode(errors="replace")
        if self._cut:
            text += f" … [cut: {self._cut} more bytes]"
        self._kept = bytearray()
        self._cut = 0
        return text


async def relay_lines(
    fd: int, sink: OutputSink, path: str, pid: int, stream: Literal["stdout", "stderr"]
) -> None:
    """What a child writes to the pipe ``fd``, line by line, to ``sink`` as ``path``'s,
    until every writer closed it; ``fd`` is closed then (or when cancelled). Long lines are
    cut (:class:`OutputLines`): what this holds is bounded."""
    lines = OutputLines()
    source = trio.lowlevel.FdStream(fd)
    async with source:
        while True:
            try:
                chunk = await source.receive_some(65536)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                chunk = b""
            if not chunk:
                break
            for line in lines.feed(chunk):
                sink.line(path, pid, stream, line)
    for line in lines.end():
        sink.line(path, pid, stream, line)


class ChildProcess:
    """A process this one started (a :class:`SpawnedProcess`), watched through a pidfd.

    Workers are started from the event loop's own thread, not a helper thread as
    ``trio.lowlevel.open_process`` does: ``PR_SET_PDEATHSIG`` fires when the *thread* that
    forked a process exits, and trio retires idle helper threads after a few seconds, which
    would take every worker started from one with it.
    """

    def __init__(self, popen: subprocess.Popen[bytes]) -> None:
        self._popen = popen
        self.pid = popen.pid
        self._pidfd = os.pidfd_open(popen.pid)

    @property
    def returncode(self) -> int | None:
        return self._popen.returncode

    async def wait(self) -> int:
        while self._popen.poll() is None:
            try:
                await trio.lowlevel.wait_readable(self._pidfd)  # readable once it exited
            except trio.ClosedResourceError:
                break
        code = self._popen.wait()
        self._close()
        return code

    def kill(self) -> None:
        if self._popen.returncode is None:
            self._popen.kill()

    def _close(self) -> None:
        if self._pidfd >= 0:
            trio.lowlevel.notify_closing(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = -1


def start_process(
    command: list[str],
    *,
    fd: int,
    extra_env: dict[str, str],
    output: tuple[int, int] | None = None,
) -> ChildProcess:
    """Start ``command`` with ``fd`` passed by number, in a process group of its own (with
    ``output``: its stdout and stderr)."""
    env = dict(os.environ)
    env.update(extra_env)
    env[CHANNEL_FD_ENV] = str(fd)
    env[PARENT_PID_ENV] = str(os.getpid())
    # The child must import this very copy of the runtime, installed or not.
    env["PYTHONPATH"] = os.pathsep.join(
        [_RUNTIME_ROOT, *(p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p)]
    )
    popen = subprocess.Popen(
        command,
        pass_fds=(fd,),
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=None if output is None else output[0],
        stderr=None if output is None else output[1],
        # Its own process group: a terminal's Ctrl-C reaches the master only (which
        # orchestrates shutdown), and a kill of the group reaches what the worker forked.
        process_group=0,
    )
    try:
        return ChildProcess(popen)
    except OSError:
        # No pidfd to watch it by (out of fds): a process nobody watches must not run on.
        popen.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            popen.wait(timeout=1)  # SIGKILLed: a matter of milliseconds
        raise


class ForkedChild:
    """A child this process forked itself, without exec (a :class:`SpawnedProcess`):
    watched through a pidfd, reaped with ``waitpid``. See :class:`ServerFork`."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self._pidfd = -1
        try:
            self._pidfd = os.pidfd_open(pid)
        except OSError:
            self.kill()  # (nobody could watch it: it must not run on)
            self._reap(0)
            raise

    async def wait(self) -> int:
        while self.returncode is None and self._pidfd >= 0:
            try:
                await trio.lowlevel.wait_readable(self._pidfd)  # readable once it exited
            except trio.ClosedResourceError:
                break
            self._reap(os.WNOHANG)
        if self.returncode is None:
            self._reap(0)
        assert self.returncode is not None
        return self.returncode

    def kill(self) -> None:
        if self.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, 9)

    def _reap(self, flags: int) -> None:
        try:
            pid, status = os.waitpid(self.pid, flags)
        except ChildProcessError:  # (reaped already: nothing more to learn)
            pid, status = self.pid, 0
        if pid == 0:
            return
        self.returncode = os.waitstatus_to_exitcode(status)
        if self._pidfd >= 0:
            trio.lowlevel.notify_closing(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = -1


class ServerFork(Protocol):
    """Makes a fork server by forking this very process (whose code, imported already, the
    server and its workers then share), with ``fd`` as its end of the control socket and
    ``output`` as its stdout and stderr; None if this process cannot be forked now (a
    thread runs beside the event loop): the server then starts as a fresh interpreter."""

    def __call__(self, fd: int, output: tuple[int, int] | None) -> SpawnedProcess | None: ...


class ColdSpawner:
    """A fresh interpreter per worker: ``sys.executable -m actors._system._bootstrap``."""

    async def start(self, fd: int, output: tuple[int, int] | None = None) -> SpawnedProcess:
        process = start_process([sys.executable, "-m", "actors._system._bootstrap"], fd=fd,
                                extra_env={}, output=output)
        await trio.lowlevel.checkpoint()
        return process


def class_path(cls: type) -> str:
    """``module:QualName`` of a class a worker can import, or SpawnError."""
    if "<locals>" in cls.__qualname__:
        raise SpawnError(
            f"{cls.__qualname__} is defined inside a function: a process actor's class must "
            "be importable (define it at module level)"
        )
    module = cls.__module__
    if module in ("__main__", "__mp_main__"):
        main_path, main_module = main_script()
        if main_path is None and main_module is None:
            raise SpawnError(
                f"{cls.__qualname__} is defined in an interactive session: a process actor's "
                "class must live in a file"
            )
        module = "__main__"
    return f"{module}:{cls.__qualname__}"


def main_script() -> tuple[str | None, str | None]:
    """How a worker finds this process's main script: (file path, module name)."""
    main = sys.modules.get("__main__")
    if main is None:
        return None, None
    spec = getattr(main, "__spec__", None)
    name = getattr(spec, "name", None)
    if name and name != "__main__":
        if name.endswith(".__main__"):  # python -m package: the package is importable as is
            return None, None
        return None, name
    path = getattr(main, "__file__", None)
    if path is None:
        return None, None
    return os.path.abspath(path), None
