"""Process actors: starting a worker process and watching it from the parent.

A worker is a clean interpreter running ``python -m actors._bootstrap``. The parent passes it
one end of a socketpair by fd number (named in ``ACTORS_CHANNEL_FD``, as Node passes
``NODE_CHANNEL_FD``); the worker says Hello (protocol version, pid), the parent answers Start
(class path, JSON arguments, where the main script is), and the worker answers Ready once
its actor's ``setup`` returned. Starting processes goes through the :class:`Spawner` seam, so
that a pre-imported fork server can replace the cold interpreter start.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

import trio

from protocol import PROTOCOL_VERSION, Message, VersionMismatch, open_channel, registry

from ._actor import Actor
from ._cell import crash_reason
from ._control import (
    EventReport,
    Failure,
    Heartbeat,
    Hello,
    NameRegistered,
    NameUnregistered,
    Ready,
    Release,
    Start,
    StartFailed,
    Stop,
    Stopping,
    Suicide,
)
from ._errors import ActorError, SpawnError
from ._events import (
    ActorExited,
    ActorReady,
    ActorStarted,
    ActorSuicided,
    Event,
    ExitKind,
    ExitReason,
)
from ._node import Link, Node
from ._ref import ActorRef

if TYPE_CHECKING:
    from ._cell import Parent

__all__ = [
    "CHANNEL_FD_ENV",
    "PARENT_PID_ENV",
    "ColdSpawner",
    "ProcessChild",
    "Spawner",
    "class_path",
    "main_script",
]

log = logging.getLogger("actors")

CHANNEL_FD_ENV = "ACTORS_CHANNEL_FD"
PARENT_PID_ENV = "ACTORS_PARENT_PID"
_GRACE_AFTER_EOF = 1.0  # a worker whose channel closed exits within this long
# A SIGKILLed worker is gone within milliseconds; its exit status comes from the fork server.
# If that report never comes (the server is stopped or stuck), the shutdown, which waits
# shielded, must still end.
_EXIT_AFTER_KILL = 5.0
_RUNTIME_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class WorkerProcess(Protocol):
    """What the parent needs of a started worker process (``trio.Process`` is one)."""

    @property
    def pid(self) -> int: ...

    @property
    def returncode(self) -> int | None: ...

    async def wait(self) -> int: ...

    def kill(self) -> None: ...


class Spawner(Protocol):
    """Starts a worker process whose channel is ``fd`` (to be passed by number)."""

    async def start(self, fd: int) -> WorkerProcess: ...


class ChildProcess:
    """A process this one started (a :class:`WorkerProcess`), watched through a pidfd.

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


def start_process(command: list[str], *, fd: int, extra_env: dict[str, str]) -> ChildProcess:
    """Start ``command`` with ``fd`` passed by number, in a process group of its own."""
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
        # Its own process group: a terminal's Ctrl-C reaches the master only (which
        # orchestrates shutdown), and a kill of the group reaches what the worker forked.
        process_group=0,
    )
    return ChildProcess(popen)


class ColdSpawner:
    """A fresh interpreter per worker: ``sys.executable -m actors._bootstrap``."""

    async def start(self, fd: int) -> WorkerProcess:
        process = start_process([sys.executable, "-m", "actors._bootstrap"], fd=fd, extra_env={})
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


class ProcessChild:
    """A worker process running one actor, seen from the process that started it.

    ``run`` (a task in the parent's nursery) starts the process, routes its frames until its
    channel ends, and always reaps it; ``wait_ready`` is what ``spawn`` awaits. Its exit
    reason is recorded exactly once, from the first thing that explains the exit.
    """

    def __init__(
        self,
        node: Node,
        actor_class: type[Actor],
        *,
        path: str,
        arguments: str,
        parent: Parent,
        shutdown_timeout: float,
        start_timeout: float,
        heartbeat_timeout: float | None = None,
        spawner: Spawner | None = None,
    ) -> None:
        self.node = node
        self.actor_class = actor_class
        self.class_path = class_path(actor_class)
        self.path = path
        self.arguments = arguments
        self.parent = parent
        self.shutdown_timeout = shutdown_timeout
        self.start_timeout = start_timeout
        self.heartbeat_timeout = heartbeat_timeout
        self.spawner: Spawner = spawner or node.spawner or ColdSpawner()
        self.node_id = node.next_child_node()
        self.process: WorkerProcess | None = None
        self.link: Link | None = None
        self.address: str | None = None
        self.pid: int | None = None
        self.ready = trio.Event()
        self.done = trio.Event()
        self.start_error: BaseException | None = None
        self.exit_reason: ExitReason | None = None
        self.returncode: int | None = None
        self.started_at = 0.0
        self.on_suicide: Callable[[ProcessChild], None] | None = None
        self._reason: ExitReason | None = None  # the first explanation of the exit
        self._stop_requested = False
        self._killed_after_grace = False
        self._hello = False

    @property
    def ref(self) -> ActorRef:
        if self.address is None:
            raise SpawnError(f"actor {self.path} is not ready")
        return ActorRef(self.node, address=self.address)

    def _explain(self, reason: ExitReason) -> None:
        if self._reason is None:
            self._reason = reason

    async def wait_ready(self) -> ActorRef:
        """The actor's ref once its worker is ready; SpawnError (after reaping) otherwise."""
        await self.ready.wait()
        if self.address is None:
            await self.done.wait()
            error = self.start_error
            if isinstance(error, ActorError):
                raise error
            raise SpawnError(f"actor {self.path} failed to start: {error!r}") from error
        return ActorRef(self.node, address=self.address)

    async def run(self) -> None:
        node = self.node
        self.started_at = trio.current_time()
        parent_sock, child_sock = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            try:
                self.process = await self.spawner.start(child_sock.fileno())
            finally:
                child_sock.close()
            self.pid = self.process.pid
            node.publish(ActorStarted(path=self.path, pid=self.pid))
            async with open_channel(parent_sock, max_frame_size=node.max_frame_size) as channel:
                link = self.link = Link(self.node_id, channel, is_parent=False)
                link.on_control = self._on_control
                node.children[self.node_id] = link
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._start_deadline, link)
                    if self.heartbeat_timeout is not None:
                        nursery.start_soon(self._watchdog, link, self.heartbeat_timeout)
                    await node.pump(link)
                    nursery.cancel_scope.cancel()
                if link.error is not None:
                    self._explain(crash_reason(link.error))
        except Exception as exc:
            if self.start_error is None:
                self.start_error = exc
            self._explain(crash_reason(exc))
            log.error("worker %s (%s) failed: %r", self.path, self.node_id, exc)
        finally:
            parent_sock.close()
            with trio.CancelScope(shield=True):
                await self._reap()
            if self.link is not None:
                node.link_down(self.link, "worker exited")
            if self.start_error is None and self.address is None:
                self.start_error = SpawnError(
                    f"worker for {self.path} exited (status {self.returncode}) before it was ready"
                )
            if self in self.parent.children:
                self.parent.children.remove(self)
            self.exit_reason = self._final_reason()
            node.publish(ActorExited(
                path=self.path, address=self.address, pid=self.pid, reason=self.exit_reason
            ))
            self.ready.set()
            self.done.set()

    def _final_reason(self) -> ExitReason:
        code = self.returncode
        signal_number = -code if code is not None and code < 0 else None
        exit_code = code if code is not None and code >= 0 else None
        reason = self._reason
        if reason is None:
            if self._killed_after_grace:
                reason = ExitReason(
                    kind="killed", detail=f"did not stop within {self.shutdown_timeout} s"
                )
            elif signal_number is not None:
                reason = ExitReason(kind="killed", detail="killed by a signal")
            elif code == 0:
                reason = ExitReason(kind="shutdown" if self._stop_requested else "normal")
            else:
                reason = ExitReason(kind="crashed", detail="the worker exited with an error")
        return reason.model_copy(update={"exit_code": exit_code, "signal": signal_number})

    async def _start_deadline(self, link: Link) -> None:
        with trio.move_on_after(self.start_timeout):
            await self.ready.wait()
            return
        self.start_error = SpawnError(
            f"actor {self.path} did not become ready within {self.start_timeout} s"
        )
        self._explain(ExitReason(
            kind="timeout", detail=f"not ready within {self.start_timeout} s"
        ))
        self.node.link_down(link, "start timeout")

    async def _watchdog(self, link: Link, limit: float) -> None:
        """Kill the worker if its event loop stops sending heartbeats for ``limit`` s."""
        await self.ready.wait()
        while not link.down:
            await trio.sleep(limit / 4)
            silent = trio.current_time() - link.last_heard
            if silent > limit and not link.delivering:
                log.error("worker %s (pid %s) sent nothing for %.1f s: killing it",
                          self.path, self.pid, silent)
                self._explain(ExitReason(
                    kind="unresponsive", detail=f"no heartbeat for {silent:.1f} s"
                ))
                self._kill()
                return

    def _on_control(self, message: Message) -> None:
        link = self.link
        assert link is not None
        if isinstance(message, Heartbeat):
            return  # the pump already noted that the worker is alive
        if isinstance(message, EventReport):
            if not link.owns(self.node_id):
                return
            event = registry.decode(message.tag, message.body.encode())
            if isinstance(event, Event):
                self.node.publish(event)
            return
        if isinstance(message, Hello) and not self._hello:
            self._hello = True
            if message.version != PROTOCOL_VERSION:
                raise VersionMismatch(PROTOCOL_VERSION, message.version)
            main_path, main_module = main_script()
            shutdown = self.shutdown_timeout if math.isfinite(self.shutdown_timeout) else 3600.0
            link.send_control(Start(
                version=PROTOCOL_VERSION, node=self.node_id, actor_class=self.class_path,
                arguments=self.arguments, path=self.path, main_path=main_path,
                main_module=main_module, sys_path=list(sys.path),
                max_frame_size=self.node.max_frame_size,
                heartbeat=self.heartbeat_timeout / 4 if self.heartbeat_timeout else 0.0,
                shutdown_timeout=shutdown,
            ))
        elif isinstance(message, Ready) and self._hello and self.address is None:
            if not link.owns(message.address.partition("/")[0]):
                raise SpawnError(f"worker {self.node_id} claims address {message.address}")
            self.address = message.address
            self.node.register_name(self.path, message.address)
            self.node.publish(ActorReady(path=self.path, address=message.address, pid=self.pid))
            self.ready.set()
        elif isinstance(message, StartFailed) and self.address is None:
            failure = message.failure
            text = f"actor {self.path} failed to start: {failure.type_name}: {failure.message}"
            if failure.traceback:
                text += "\n\nWorker traceback:\n" + failure.traceback.rstrip()
            self.start_error = SpawnError(text)
            self._explain(_failure_reason("crashed", failure))
        elif isinstance(message, NameRegistered | NameUnregistered):
            if not link.owns(message.address.partition("/")[0]):
                raise SpawnError(f"worker {self.node_id} registers foreign {message.address}")
            if isinstance(message, NameRegistered):
                if self.node.names.get(message.path, message.address) != message.address:
                    log.warning("name %r registered twice; keeping the first", message.path)
                else:
                    self.node.register_name(message.path, message.address)
            else:
                self.node.unregister_name(message.path, message.address)
        elif isinstance(message, Suicide):
            reason = _failure_reason("suicide", message.failure)
            self._explain(reason)
            self.node.publish(ActorSuicided(path=self.path, pid=self.pid, reason=reason))
            if self.address is not None:
                self.node.unregister_name(self.path, self.address)
            if self.on_suicide is not None:
                self.on_suicide(self)  # the supervisor releases it once replaced
            else:
                self.release()
        elif isinstance(message, Stopping):
            if message.failure is not None:
                self._explain(_failure_reason("crashed", message.failure))
        else:
            raise SpawnError(f"unexpected control message {type(message).__name__}")

    def release(self) -> None:
        """Tell a worker draining after a suicide that its replacement is up: it may go."""
        if self.link is not None:
            self.link.notify(Release())

    async def shutdown(self, grace: float) -> None:
        """Ask the worker to stop; after ``grace`` seconds, kill its process group."""
        self._stop_requested = True
        link = self.link
        if link is not None and grace > 0:
            link.notify(Stop())
        with trio.move_on_after(grace):
            await self.done.wait()
        if not self.done.is_set():
            if grace > 0:
                log.warning("worker %s did not stop within %s s: killing it", self.path, grace)
                self._killed_after_grace = True
            else:
                self._explain(ExitReason(kind="shutdown", detail="brutal_kill"))
            self._kill()
            await self.done.wait()

    def _kill(self) -> None:
        process = self.process
        if process is None or process.returncode is not None:
            return
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            process.kill()  # not (yet) the leader of its own group

    async def _reap(self) -> None:
        """Wait for the worker to exit (it does once its channel closed); kill it if not."""
        process = self.process
        if process is None:
            return
        link = self.link
        if link is not None and not link.down and process.returncode is None:
            # Cancelled while the worker runs: ask it to stop as a shutdown would.
            self._stop_requested = True
            link.notify(Stop())
            grace = self.shutdown_timeout
        else:
            grace = _GRACE_AFTER_EOF
        with trio.move_on_after(grace):
            await process.wait()
        if process.returncode is None:
            self._kill()
            with trio.move_on_after(_EXIT_AFTER_KILL):
                await process.wait()
            if process.returncode is None:
                log.error("worker %s (pid %s): no exit status %s s after SIGKILL; "
                          "going on without it", self.path, self.pid, _EXIT_AFTER_KILL)
                self._explain(ExitReason(
                    kind="killed", detail="SIGKILLed; its exit status never came"
                ))
        self.returncode = process.returncode


def _failure_reason(kind: ExitKind, failure: Failure) -> ExitReason:
    return ExitReason(
        kind=kind, error_type=failure.type_name, detail=failure.message,
        traceback=failure.traceback,
    )
