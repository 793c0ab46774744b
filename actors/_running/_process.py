"""``ProcessHandle``: a process actor, seen from the process that started it.

The handle starts the worker and waits for its actor to be ready (:mod:`._spawning`); from
then on the router carries the worker's frames, and the handle reads the control messages
the router leaves for it (a suicide, a request to be replaced, a stop report) until the
channel ends, while watchers look at its heartbeats and its memory (:mod:`._watchers`);
then it reaps the process (:mod:`._reaping`) and the handle ends (:meth:`ChildBase._finish`).
"""

from __future__ import annotations

import logging
import math
import socket
import sys

import trio

from protocol import PROTOCOL_VERSION, ProtocolError, open_channel

from .._base._actor import Actor
from .._base._control import Failure, Relieve, Retire, Start, Stop, Stopping, Suicide
from .._base._errors import SpawnError
from .._base._events import ActorReady, ActorStarted, ActorSuicided, ExitReason, crash_reason
from .._base._ref import ActorRef
from .._base._tree import Child, ChildBase, ChildKind, Lifecycle, Notice, Parent
from .._messaging._link import Link
from .._messaging._router import Router
from ._processes import OutputSink, SpawnedProcess, Spawner, class_path, main_script
from ._reaping import GRACE_AFTER_EOF, end_channel, kill, reap
from ._spawning import failure_reason, handshake, spawn
from ._watchers import memory_over, silence

__all__ = ["ProcessHandle"]

log = logging.getLogger("actors")


class ProcessHandle(ChildBase):
    """A worker process running one actor, as its parent sees it (a :class:`Child`).

    Start it with ``await nursery.start(handle.run)``: that returns once the worker's actor
    is ready, or raises :class:`SpawnError` once the worker is gone (a failed start: its
    ``exit_reason`` says why). Its exit reason is recorded exactly once, from the first thing
    that explains the exit. ``notices`` (its supervisor's) receives its request to be
    replaced when it reports an unexpected exception, asks to be replaced, or grows past
    ``max_memory``; it is RETIRING until its supervisor relieves it.
    """

    kind: ChildKind = "worker"

    def __init__(
        self,
        router: Router,
        actor_class: type[Actor],
        *,
        path: str,
        arguments: str,
        parent: Parent,
        spawner: Spawner,
        shutdown_timeout: float,
        start_timeout: float,
        heartbeat_timeout: float | None = None,
        notices: trio.MemorySendChannel[Notice] | None = None,
        state_service: str | None = None,
        max_memory: int | None = None,
        output: OutputSink | None = None,
    ) -> None:
        super().__init__(path, parent, shutdown_timeout)
        self.router = router
        self.output = output
        self.state_service = state_service
        self.max_memory = max_memory
        self.actor_class = actor_class
        self.class_path = class_path(actor_class)
        self.arguments = arguments
        self.spawner = spawner
        self.start_timeout = start_timeout
        self.heartbeat_timeout = heartbeat_timeout
        self.notices = notices
        self.node: str = router.next_child_node()  # its process, in the process tree
        self.process: SpawnedProcess | None = None
        self.link: Link | None = None
        self.returncode: int | None = None
        self._stop_sent_at: float | None = None  # when it was sent Stop
        self._last_word: Stopping | None = None  # what it said as it stopped, if it did
        # What relieves it once its successor is up: Relieve (it drains and goes), or Stop
        # when the master replaces it (over its memory limit: nothing lets it go on).
        self._relief: Relieve | Stop = Relieve()
        # Once relieved, it has its shutdown time to go: this scope's deadline is then set,
        # and when it passes, the worker is killed (see _kill_when_overdue).
        self._overdue = trio.CancelScope()

    @property
    def ref(self) -> ActorRef:
        if self.address is None:
            raise SpawnError(f"actor {self.path} is not ready")
        return ActorRef(self.router.outbox, address=self.address)

    async def run(
        self, *, task_status: trio.TaskStatus[ProcessHandle] = trio.TASK_STATUS_IGNORED
    ) -> None:
        router = self.router
        self.started_at = trio.current_time()
        deadline = self.started_at + self.start_timeout
        parent_sock: socket.socket | None = None
        failed: SpawnError | None = None
        try:
            # Out of fds (EMFILE), a start fails like any other: a SpawnError once the
            # handle is done, never a bare OSError up the supervisor.
            self.process, parent_sock = await spawn(
                self.spawner, path=self.path, deadline=deadline,
                start_timeout=self.start_timeout, output=self.output, relays=router.nursery,
            )
            self.pid = self.process.pid
            router.publish(ActorStarted(path=self.path, pid=self.pid))
            async with open_channel(parent_sock, max_frame_size=router.max_frame_size) as channel:
                link = self.link = Link(self.node, channel, is_parent=False,
                                        subtree=self.path)
                router.add_child(link)
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(router.pump, link)
                    ready = await handshake(link, self._start_message(), deadline=deadline,
                                            start_timeout=self.start_timeout)
                    if not isinstance(ready, SpawnError):
                        ready = self._check_name(ready)
                    if isinstance(ready, SpawnError):
                        failed = ready
                        router.link_down(link, "its start failed")
                    else:
                        self._ready(ready)
                        task_status.started(self)
                        if self.heartbeat_timeout is not None:
                            nursery.start_soon(self._watch_heartbeats, link,
                                               self.heartbeat_timeout)
                        if self.max_memory is not None:
                            nursery.start_soon(self._watch_memory, self.max_memory)
                        nursery.start_soon(self._kill_when_overdue)
                        await self._serve_control(link)
                    nursery.cancel_scope.cancel()
            if failed is not None:
                raise failed  # out of the nurseries: the starter sees it as itself
            if isinstance(link.error, ProtocolError):
                self._explain(crash_reason(link.error))
        except SpawnError as exc:
            self._explain(exc.reason or crash_reason(exc))
            raise
        except Exception as exc:
            self._explain(crash_reason(exc))
            why = str(exc) if isinstance(exc, OSError) else repr(exc)  # "[Errno 24] Too many..."
            raise SpawnError(f"actor {self.path} failed to start: {why}") from exc
        finally:
            if parent_sock is not None:
                parent_sock.close()
            with trio.CancelScope(shield=True):
                await self._reap()
            if self.link is not None:
                router.link_down(self.link, "worker exited")
            if self.returncode == 0:
                self._note_stop("itself")  # it exited in order, whether it said so or not
            self._finish(router, returncode=self.returncode, address=self.address,
                         node=self.node)

    def _start_message(self) -> Start:
        main_path, main_module = main_script()
        shutdown = self.shutdown_timeout if math.isfinite(self.shutdown_timeout) else 3600.0
        return Start(
            version=PROTOCOL_VERSION, node=self.node, actor_class=self.class_path,
            arguments=self.arguments, path=self.path, main_path=main_path,
            main_module=main_module, sys_path=list(sys.path),
            max_frame_size=self.router.max_frame_size,
            heartbeat=self.heartbeat_timeout / 4 if self.heartbeat_timeout else 0.0,
            shutdown_timeout=shutdown, state_service=self.state_service,
        )

    def _check_name(self, address: str) -> str | SpawnError:
        """The worker's actor registered its name before it said Ready (NameRegistered comes
        first on the channel, and the router handles it as it reads it): nothing to register
        here, only a name held by another to refuse."""
        owner = self.router.names.get(self.path)
        if owner is not None and owner != address:
            return SpawnError(f"actor {self.path} failed to start: the name {self.path!r} is "
                              f"already taken by {owner}")
        return address

    def _ready(self, address: str) -> None:
        self.address = address
        self.router.publish(ActorReady(path=self.path, address=address, pid=self.pid))
        self._move(Lifecycle.RUNNING)

    async def _serve_control(self, link: Link) -> None:
        """The worker's control messages, until its channel ends."""
        async for message in link.control_received:
            if isinstance(message, Suicide):
                self._on_suicide(message.failure)
            elif isinstance(message, Retire):
                self._replace(ExitReason(kind="recycled", detail=message.reason))
            elif isinstance(message, Stopping):
                self._last_word = message
                self._stopping("itself")
                if message.failure is not None:
                    self._explain(failure_reason("crashed", message.failure))
                await end_channel(self.router, link)
            else:
                log.error("worker %s sent an unexpected %s: closing its channel",
                          self.path, type(message).__name__)
                self.router.link_down(
                    link, f"unexpected control message {type(message).__name__}"
                )

    def _replace(self, reason: ExitReason) -> None:
        """Have the supervisor start this actor's successor; this one then drains and
        stops (a requested replacement, or one over its memory limit)."""
        self._explain(reason)
        log.warning("%s (pid %s) is being replaced: %s", self.path, self.pid, reason.why())
        self._hand_over(reason)

    def _hand_over(self, reason: ExitReason) -> None:
        """Ask the supervisor for a successor, which takes the names of this subtree; this
        one retires, and is relieved (it drains and goes) once the successor is up."""
        self._move(Lifecycle.RETIRING)
        if self.link is not None:
            self.link.retiring = True
        if self.address is not None:
            self.router.names.unregister(self.path, self.address)
        if self.notices is not None:
            try:
                self.notices.send_nowait(Notice(self, reason))
                return
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass  # its supervisor is stopping
        self.relieve()  # nothing will replace it: it just stops

    async def _watch_memory(self, limit: int) -> None:
        """Replace the worker once its resident memory stays above ``limit``."""
        assert self.pid is not None
        rss = await memory_over(self.pid, limit)
        if rss is not None:
            self._relief = Stop()
            self._replace(ExitReason(
                kind="memory", detail=f"resident memory {rss} bytes over {limit}"
            ))

    async def _watch_heartbeats(self, link: Link, limit: float) -> None:
        """Kill the worker if its event loop stops sending heartbeats for ``limit`` s."""
        silent = await silence(link, limit, self.path)
        if silent is not None:
            log.error("worker %s (pid %s) sent nothing for %.1f s: killing it",
                      self.path, self.pid, silent)
            self._explain(ExitReason(
                kind="unresponsive", detail=f"no heartbeat for {silent:.1f} s"
            ))
            kill(self.process)

    def _on_suicide(self, failure: Failure) -> None:
        if self.notices is None:
            # Nothing supervises it: nothing will replace it. It crashed, and stops.
            reason = failure_reason("crashed", failure)
            self._explain(reason)
            log.warning("actor %s crashed (%s); nothing supervises it, so it stops",
                        self.path, reason.describe())
            if self.address is not None:
                self.router.names.unregister(self.path, self.address)
                self.router.departed(self.address, self.path, reason)
            self.relieve()
            return
        reason = failure_reason("suicide", failure)
        self._explain(reason)
        self.router.publish(ActorSuicided(path=self.path, pid=self.pid, reason=reason))
        if self.address is not None:
            self.router.departed(self.address, self.path, reason)  # it takes nothing more
        self._hand_over(reason)

    def relieve(self) -> None:
        """Tell a worker waiting for its replacement that the replacement is up (or that
        none is coming): it goes, within its shutdown time (see :meth:`_kill_when_overdue`)."""
        if self.link is not None:
            self.link.notify(self._relief)
        self._stopping(None)
        self._overdue.deadline = min(
            self._overdue.deadline, trio.current_time() + self.shutdown_timeout
        )

    async def _kill_when_overdue(self) -> None:
        """A relieved worker has its shutdown time to drain and exit, as a stopped one has;
        then its process group is killed.

        The worker bounds its own drain, but it cannot bound a handler that never returns
        (the one that grew past ``max_memory`` may still be running), a cleanup that
        shields itself, or an event loop that a blocking call holds: without this bound such
        a worker would live on beside its successor (and, over its memory limit, keep
        growing) until the system stops. Its exit reason stays why it was replaced: the
        first explanation wins over the kill. Cancelled once its channel ends (it exited,
        or :meth:`_reap` takes over)."""
        with self._overdue:
            await trio.sleep_forever()
        log.warning("worker %s (pid %s) did not exit within %s s of its release: killing it",
                    self.path, self.pid, self.shutdown_timeout)
        self._killed = f"did not stop within {self.shutdown_timeout} s"
        kill(self.process)

    def begin_shutdown(self) -> None:
        """Ask the worker to stop now; :meth:`shutdown` then waits what is left of its
        grace (so that siblings drain at the same time)."""
        if self._stop_sent_at is None and self.link is not None:
            self._stopping("asked")
            self._stop_sent_at = trio.current_time()
            self.link.notify(Stop())

    def kill_now(self) -> None:
        """Stop at once: SIGKILL, and no grace for anything that follows."""
        self._stopping("at_once")
        kill(self.process)

    async def shutdown(self, grace: float) -> None:
        """Ask the worker to stop; after ``grace`` seconds, kill its process group."""
        self._stopping("asked")
        if self._stop_sent_at is not None:  # asked already (begin_shutdown)
            grace = max(0.0, grace - (trio.current_time() - self._stop_sent_at))
        elif grace > 0:
            self.begin_shutdown()
        with trio.move_on_after(grace):
            await self.done.wait()
        if not self.done.is_set():
            if grace > 0:
                log.warning("worker %s did not stop within %s s: killing it", self.path, grace)
                self._killed = f"did not stop within {self.shutdown_timeout} s"
            else:
                self._explain(ExitReason(kind="shutdown", detail="brutal_kill"))
            kill(self.process)
            await self.done.wait()

    async def _reap(self) -> None:
        """Wait for the worker to exit (it does once its channel closed); kill it if not."""
        process = self.process
        if process is None:
            return
        link = self.link
        if self._stop_cause == "at_once":
            kill(process)
            grace = 0.0
        elif link is not None and not link.down and process.returncode is None:
            # Cancelled while the worker runs: ask it to stop as a shutdown would.
            self._stopping("asked")
            link.notify(Stop())
            grace = self.shutdown_timeout
        else:
            grace = GRACE_AFTER_EOF
        odd = await reap(process, grace, path=self.path, said_a_word=self._last_word is not None)
        if odd is not None:
            self._explain(odd)
        self.returncode = process.returncode


def _is_child(handle: ProcessHandle) -> Child:
    return handle  # a ProcessHandle is a Child (checked by mypy here)
