"""``CommandHandle``: an external program (any executable) as a supervised child.

The handle checks that the program can be run (a missing or non-executable one is a fatal
:class:`SpawnError`: no restart can fix it), starts it through the launcher (:mod:`._launch`:
it dies with this process, even one SIGKILLed, and gets its listening sockets by the
systemd socket-activation convention) in a process group of its own, relays its output
line by line with its path, and reaps it. It is ready once it is spawned: a program has no
handshake. Stopping it sends SIGTERM to its process group, then SIGKILL after its shutdown
time. The sockets it is given belong to the system (a listener's, :class:`ListeningSockets`):
this handle passes copies and closes nothing of theirs, so a restart never closes the port.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Mapping, Sequence
from typing import Protocol

import trio

from .._base._errors import SpawnError
from .._base._events import ActorReady, ActorStarted, ExitReason
from .._base._ref import ActorRef
from .._base._tree import ChildBase, ChildKind, Lifecycle, Parent, Witness
from ._processes import ChildProcess, OutputSink, output_pipes, relay_lines

__all__ = ["CommandHandle", "ListeningSockets", "find_program"]

log = logging.getLogger("actors")

_LAUNCHER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_launch.py")
_STOPPED_BY_TERM = (0, -signal.SIGTERM, 128 + signal.SIGTERM)
"""Exit statuses of a program that obeyed SIGTERM (by default, by exiting, or as a shell
reports a child it ended)."""
_EXIT_AFTER_KILL = 5.0  # a SIGKILLed process is gone within milliseconds; bound it anyway


class ListeningSockets(Protocol):
    """Where a command's ``sockets`` come from (the system's listeners): the listening
    socket(s) of the listener at ``path``, which outlive the command; :class:`SpawnError`
    (fatal) if there is no such listener or it serves its socket itself."""

    def passable(self, path: str) -> list[socket.socket]: ...


def _not_runnable(text: str) -> SpawnError:
    error = SpawnError(text)
    error.fatal = True  # the spec is wrong: a restart would fail the same way
    error.reason = ExitReason(kind="crashed", detail=text)
    return error


def find_program(argv0: str, *, path: str | None, cwd: str | None) -> str:
    """Where ``argv0`` is, looked up as ``execvp`` will (``path``: the ``PATH`` it uses),
    or a fatal :class:`SpawnError` saying why it cannot be run."""
    if cwd is not None and not os.path.isdir(cwd):
        raise _not_runnable(f"cannot run {argv0!r}: its directory {cwd!r} does not exist")
    if "/" in argv0:
        found = os.path.join(cwd or os.getcwd(), argv0)
        if not os.path.exists(found):
            raise _not_runnable(f"cannot run {argv0!r}: no such file")
    else:
        search = path if path is not None else os.defpath
        located = shutil.which(argv0, path=search)
        if located is None:
            if shutil.which(argv0, mode=os.F_OK, path=search) is None:
                raise _not_runnable(f"cannot run {argv0!r}: not found in PATH ({search})")
            raise _not_runnable(f"cannot run {argv0!r}: it is not executable")
        found = located
    if os.path.isdir(found) or not os.access(found, os.X_OK):
        raise _not_runnable(f"cannot run {argv0!r}: it is not executable")
    return found


class CommandHandle(ChildBase):
    """An external program, as its parent sees it (a :class:`Child`).

    Start it with ``await nursery.start(handle.run)``: that returns once the program is
    spawned (its state RUNNING), or raises :class:`SpawnError` (fatal when the program
    cannot be found or run). It takes no messages: its ``ref`` names its path, which no
    actor holds. Its exit reason is its exit status (``crashed`` with the code, ``killed``
    with the signal), ``normal`` for an exit 0 of its own, ``shutdown`` when it obeyed the
    SIGTERM of a stop."""

    kind: ChildKind = "command"

    def __init__(
        self,
        witness: Witness,
        sender: ActorRef,
        *,
        path: str,
        argv: Sequence[str],
        env: Mapping[str, str] | None,
        cwd: str | None,
        stdin: bytes | None,
        sockets: Sequence[str],
        listening: ListeningSockets | None,
        parent: Parent,
        shutdown_timeout: float,
        output: OutputSink | None,
        relays: trio.Nursery,
    ) -> None:
        super().__init__(path, parent, shutdown_timeout)
        self._witness = witness
        self._ref = sender
        self.argv = list(argv)
        self.env = env
        self.cwd = cwd
        self.stdin = stdin
        self.socket_paths = list(sockets)
        self._listening = listening
        self.output = output
        self._relays = relays
        self.process: ChildProcess | None = None
        self._term_sent_at: float | None = None

    @property
    def ref(self) -> ActorRef:
        return self._ref

    async def run(
        self, *, task_status: trio.TaskStatus[CommandHandle] = trio.TASK_STATUS_IGNORED
    ) -> None:
        self.started_at = trio.current_time()
        failure: BaseException | None = None
        try:
            stdin_pipe = self._spawn()
            self.pid = self.process.pid if self.process is not None else None
            self._witness.publish(ActorStarted(path=self.path, pid=self.pid))
            self._witness.publish(ActorReady(path=self.path, address=None, pid=self.pid))
            self._move(Lifecycle.RUNNING)
            task_status.started(self)
            async with trio.open_nursery() as nursery:
                if stdin_pipe is not None:
                    nursery.start_soon(self._feed, stdin_pipe)
                assert self.process is not None
                await self.process.wait()
                nursery.cancel_scope.cancel()
        except SpawnError as exc:
            self._explain(exc.reason or ExitReason(kind="crashed", detail=str(exc)))
            raise
        except OSError as exc:
            failure = exc
            self._explain(ExitReason(kind="crashed", detail=f"cannot start: {exc}"))
            raise SpawnError(f"command {self.path} failed to start: {exc}") from exc
        finally:
            with trio.CancelScope(shield=True):
                returncode = await self._reap()
            self._finish(self._witness, failure=failure, returncode=returncode)

    def _spawn(self) -> int | None:
        """Start the program through the launcher; our end of its stdin pipe, if it has
        one. Nothing is left open if it fails."""
        env = dict(os.environ)
        if self.env is not None:
            env.update(self.env)
        find_program(self.argv[0], path=env.get("PATH"), cwd=self.cwd)
        passed: list[tuple[str, socket.socket]] = []
        for name in self.socket_paths:
            if self._listening is None:
                raise _not_runnable(f"command {self.path}: no listener at {name!r} here")
            passed += [(name, sock) for sock in self._listening.passable(name)]
        fds = [sock.fileno() for _, sock in passed]
        launcher = [
            sys.executable, "-I", "-S", _LAUNCHER, str(os.getpid()),
            ",".join(map(str, fds)) or "-", ":".join(name for name, _ in passed) or "-",
            "--", *self.argv,
        ]
        stdin_pipe = os.pipe2(os.O_CLOEXEC) if self.stdin is not None else None
        pipes = None
        try:
            pipes = None if self.output is None else output_pipes()
            popen = subprocess.Popen(
                launcher, pass_fds=fds, env=env, cwd=self.cwd,
                stdin=subprocess.DEVNULL if stdin_pipe is None else stdin_pipe[0],
                stdout=None if pipes is None else pipes[0][1],
                stderr=None if pipes is None else pipes[1][1],
                # Its own group: a terminal's Ctrl-C reaches the master only, and a stop
                # reaches whatever the program started.
                process_group=0,
            )
            try:
                self.process = ChildProcess(popen)
            except OSError:
                popen.kill()  # nobody could watch it: it must not run on
                with contextlib.suppress(subprocess.TimeoutExpired):
                    popen.wait(timeout=_EXIT_AFTER_KILL)
                raise
        except BaseException:
            for pair in [stdin_pipe, *(pipes or ())]:
                if pair is not None:
                    os.close(pair[0])
                    os.close(pair[1])
            raise
        if pipes is not None:
            assert self.output is not None
            os.close(pipes[0][1])  # the program has its own copies
            os.close(pipes[1][1])
            self._relays.start_soon(relay_lines, pipes[0][0], self.output, self.path,
                                    popen.pid, "stdout")
            self._relays.start_soon(relay_lines, pipes[1][0], self.output, self.path,
                                    popen.pid, "stderr")
        if stdin_pipe is None:
            return None
        os.close(stdin_pipe[0])
        return stdin_pipe[1]

    async def _feed(self, fd: int) -> None:
        """Write ``stdin`` to the program, then close its input (or stop when it exits)."""
        assert self.stdin is not None
        async with trio.lowlevel.FdStream(fd) as pipe:
            try:
                await pipe.send_all(self.stdin)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return  # it closed its input, or exited: what it did not read is its choice

    def _signal(self, number: signal.Signals) -> None:
        """Send ``number`` to the program's process group (to it alone if that is gone)."""
        process = self.process
        if process is None or process.returncode is not None:
            return
        try:
            os.killpg(process.pid, number)
        except (ProcessLookupError, PermissionError):
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, number)

    async def _reap(self) -> int | None:
        """Wait for the program to exit (a cancelled run stops it as a shutdown would);
        then kill what is left of its process group. Its exit status."""
        process = self.process
        if process is None:
            return None
        if process.returncode is None:
            if self._stop_cause == "at_once":
                self._signal(signal.SIGKILL)
            else:
                self.begin_shutdown()
            grace = self.shutdown_timeout
            if self._term_sent_at is not None:
                grace = max(0.0, grace - (trio.current_time() - self._term_sent_at))
            with trio.move_on_after(grace):
                await process.wait()
            if process.returncode is None:
                self._kill_overdue()
                with trio.move_on_after(_EXIT_AFTER_KILL):
                    await process.wait()
        code = process.returncode
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)  # what it started and left behind
        if (code in _STOPPED_BY_TERM and self._term_sent_at is not None
                and self._killed is None):
            self._explain(ExitReason(kind="shutdown", detail="it obeyed SIGTERM"))
        elif code == 0:
            self._note_stop("itself")
        elif code is not None and code > 0:
            self._explain(ExitReason(
                kind="crashed", detail=f"{self.argv[0]} exited with status {code}"
            ))
        return code

    def _kill_overdue(self) -> None:
        log.warning("command %s (pid %s) did not stop within %s s: killing it", self.path,
                    self.pid, self.shutdown_timeout)
        if self._killed is None and self._explained is None:
            self._killed = f"did not stop within {self.shutdown_timeout} s of SIGTERM"
        self._signal(signal.SIGKILL)

    def begin_shutdown(self) -> None:
        """SIGTERM to its process group now; :meth:`shutdown` then waits what is left of
        its grace (so that siblings stop at the same time)."""
        if self._term_sent_at is None and self.process is not None:
            self._stopping("asked")
            self._term_sent_at = trio.current_time()
            self._signal(signal.SIGTERM)

    def kill_now(self) -> None:
        """Stop at once: SIGKILL to its process group, no grace."""
        self._stopping("at_once")
        self._signal(signal.SIGKILL)

    async def shutdown(self, grace: float) -> None:
        """SIGTERM to its process group; after ``grace`` seconds, SIGKILL."""
        self._stopping("asked")
        if grace <= 0:
            self._explain(ExitReason(kind="shutdown", detail="brutal_kill"))
            self._signal(signal.SIGKILL)
        else:
            self.begin_shutdown()
            if self._term_sent_at is not None:
                grace = max(0.0, grace - (trio.current_time() - self._term_sent_at))
            with trio.move_on_after(grace):
                await self.done.wait()
            if not self.done.is_set():
                self._kill_overdue()
        await self.done.wait()
