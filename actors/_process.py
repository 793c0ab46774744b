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
import os
import signal
import socket
import subprocess
import sys
from typing import TYPE_CHECKING, Protocol

import trio

from protocol import PROTOCOL_VERSION, Message, VersionMismatch, open_channel

from ._actor import Actor
from ._control import (
    Hello,
    NameRegistered,
    NameUnregistered,
    Ready,
    Start,
    StartFailed,
    Stop,
    Stopping,
)
from ._errors import ActorError, SpawnError
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
_RUNTIME_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Spawner(Protocol):
    """Starts a worker process whose channel is ``fd`` (to be passed by number)."""

    async def start(self, fd: int) -> trio.Process: ...


class ColdSpawner:
    """A fresh interpreter per worker: ``sys.executable -m actors._bootstrap``."""

    async def start(self, fd: int) -> trio.Process:
        env = dict(os.environ)
        env[CHANNEL_FD_ENV] = str(fd)
        env[PARENT_PID_ENV] = str(os.getpid())
        # The worker must import this very copy of the runtime, installed or not.
        env["PYTHONPATH"] = os.pathsep.join(
            [_RUNTIME_ROOT, *(p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p)]
        )
        return await trio.lowlevel.open_process(
            [sys.executable, "-m", "actors._bootstrap"],
            pass_fds=(fd,),
            env=env,
            stdin=subprocess.DEVNULL,
            # Its own process group: a terminal's Ctrl-C reaches the master only (which
            # orchestrates shutdown), and a kill of the group reaches what the worker forked.
            process_group=0,
        )


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
    channel ends, and always reaps it; ``wait_ready`` is what ``spawn`` awaits.
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
        self.spawner: Spawner = spawner or ColdSpawner()
        self.node_id = node.next_child_node()
        self.process: trio.Process | None = None
        self.link: Link | None = None
        self.address: str | None = None
        self.pid: int | None = None
        self.ready = trio.Event()
        self.done = trio.Event()
        self.start_error: BaseException | None = None
        self.failure: Message | None = None
        self.returncode: int | None = None
        self._hello = False

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
        parent_sock, child_sock = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            try:
                self.process = await self.spawner.start(child_sock.fileno())
            finally:
                child_sock.close()
            self.pid = self.process.pid
            async with open_channel(parent_sock, max_frame_size=node.max_frame_size) as channel:
                link = self.link = Link(self.node_id, channel, is_parent=False)
                link.on_control = self._on_control
                node.children[self.node_id] = link
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._start_deadline, link)
                    await node.pump(link)
                    nursery.cancel_scope.cancel()
        except Exception as exc:
            if self.start_error is None:
                self.start_error = exc
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
            self.ready.set()
            self.done.set()

    async def _start_deadline(self, link: Link) -> None:
        with trio.move_on_after(self.start_timeout):
            await self.ready.wait()
            return
        self.start_error = SpawnError(
            f"actor {self.path} did not become ready within {self.start_timeout} s"
        )
        self.node.link_down(link, "start timeout")

    def _on_control(self, message: Message) -> None:
        link = self.link
        assert link is not None
        if isinstance(message, Hello) and not self._hello:
            self._hello = True
            if message.version != PROTOCOL_VERSION:
                raise VersionMismatch(PROTOCOL_VERSION, message.version)
            main_path, main_module = main_script()
            link.send_control(Start(
                version=PROTOCOL_VERSION, node=self.node_id, actor_class=self.class_path,
                arguments=self.arguments, path=self.path, main_path=main_path,
                main_module=main_module, sys_path=list(sys.path),
                max_frame_size=self.node.max_frame_size,
            ))
        elif isinstance(message, Ready) and self._hello and self.address is None:
            if not link.owns(message.address.partition("/")[0]):
                raise SpawnError(f"worker {self.node_id} claims address {message.address}")
            self.address = message.address
            self.node.register_name(self.path, message.address)
            self.ready.set()
        elif isinstance(message, StartFailed) and self.address is None:
            failure = message.failure
            text = f"actor {self.path} failed to start: {failure.type_name}: {failure.message}"
            if failure.traceback:
                text += "\n\nWorker traceback:\n" + failure.traceback.rstrip()
            self.start_error = SpawnError(text)
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
        elif isinstance(message, Stopping):
            self.failure = message.failure
        else:
            raise SpawnError(f"unexpected control message {type(message).__name__}")

    async def shutdown(self, grace: float) -> None:
        """Ask the worker to stop; after ``grace`` seconds, kill its process group."""
        link = self.link
        if link is not None and not link.down:
            try:
                link.send_control(Stop())
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass
        with trio.move_on_after(grace):
            await self.done.wait()
        if not self.done.is_set():
            log.warning("worker %s did not stop within %s s: killing it", self.path, grace)
            self._kill()
            await self.done.wait()

    def _kill(self) -> None:
        process = self.process
        if process is None or process.returncode is not None:
            return
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        except PermissionError:
            process.kill()

    async def _reap(self) -> None:
        """Wait for the worker to exit (it does once its channel closed); kill it if not."""
        process = self.process
        if process is None:
            return
        link = self.link
        if link is not None and not link.down and process.returncode is None:
            # Cancelled while the worker runs: ask it to stop as a shutdown would.
            try:
                link.send_control(Stop())
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass
            grace = self.shutdown_timeout
        else:
            grace = _GRACE_AFTER_EOF
        with trio.move_on_after(grace):
            await process.wait()
        if process.returncode is None:
            self._kill()
            await process.wait()
        self.returncode = process.returncode

