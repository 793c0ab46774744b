"""``Cell``: one running actor in this process (its mailbox, its loop, its children)."""

from __future__ import annotations

import logging
import os
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Protocol

import trio

from protocol import Message

from ._actor import Actor
from ._context import ActorContext
from ._control import Failure
from ._errors import ActorGone, leaves
from ._events import ActorDrained, ActorExited, ActorReady, ActorStarted, ExitReason
from ._ref import ActorRef

if TYPE_CHECKING:
    from ._node import Node, Reply

__all__ = ["Cell", "Child", "Parent"]

log = logging.getLogger("actors")

_FAIRNESS_BUDGET = 64  # messages handled back to back before the loop lets other tasks run


class Child(Protocol):
    """What a parent knows of a child it started (an in-process cell or a worker process)."""

    path: str
    shutdown_timeout: float
    done: trio.Event
    started_at: float
    exit_reason: ExitReason | None

    @property
    def ref(self) -> ActorRef: ...

    async def shutdown(self, grace: float) -> None: ...


class Parent(Protocol):
    """Something that starts children and bounds their lifetime: a cell or the system root."""

    path: str
    nursery: trio.Nursery
    children: list[Child]


def drain_budget(shutdown: float) -> float:
    """The part of an actor's shutdown time its drain may use.

    The rest (a quarter, at most one second) is left for its children, ``cleanup()`` and the
    exit, so that a drain the deadline cuts short still ends in an orderly stop (and a
    worker process exits on its own) instead of being killed at the shutdown deadline.
    """
    return shutdown - min(shutdown / 4, 1.0)


class Cell:
    """Runs one actor: setup, then one message at a time from its mailbox, then cleanup.

    ``run`` is started with ``nursery.start``: it returns the actor's ref once ``setup``
    succeeded. The actor stops when asked (:meth:`stop`: it finishes what is queued), when a
    handler raises (a crash: queued asks get ActorGone), or when its task is cancelled. Its
    children are stopped in reverse start order before ``cleanup`` runs.
    """

    def __init__(
        self,
        node: Node,
        actor: Actor,
        *,
        path: str,
        parent: Parent,
        shutdown_timeout: float,
        report_events: bool = True,
    ) -> None:
        self.node = node
        self.actor = actor
        self.path = path
        self.parent = parent
        self.shutdown_timeout = shutdown_timeout
        self.id = node.next_actor_id()
        self.address = f"{node.id}/{self.id}"
        self._ref = ActorRef(node, address=self.address)
        self.children: list[Child] = []
        self.accepting = False
        self.done = trio.Event()
        self.failure: BaseException | None = None
        self.exit_reason: ExitReason | None = None
        self.on_crash: Callable[[BaseException], None] | None = None
        # After a suicide, the cell lingers (draining) until its replacement is ready.
        self.released = trio.Event()
        self.drain_timeout = drain_budget(shutdown_timeout)
        self.started_at = 0.0
        self.pid = os.getpid()
        self._send, self._recv = trio.open_memory_channel[tuple[Message, "Reply | None"]](
            max(0, actor.mailbox_size)
        )
        self._current: Reply | None = None
        self._scope = trio.CancelScope()
        self._teardown_scope = trio.CancelScope(shield=True)
        self._stop_requested = False
        self._killed = False
        self.stopped_itself = False
        self._report = node.publish if report_events else _ignore
        self.nursery: trio.Nursery

    @property
    def ref(self) -> ActorRef:
        return self._ref

    def inline_handler(self, message: Message) -> Callable[[Message], Message | None] | None:
        """The runtime's synchronous handler for ``message`` on this actor, if it has one."""
        name = type(self.actor).__inline_handlers__.get(type(message))
        if name is None or not self.accepting:
            return None
        handle: Callable[[Message], Message | None] = getattr(self.actor, name)
        return handle

    async def deliver(self, message: Message, reply: Reply | None) -> None:
        """Put a message in the mailbox, waiting while it is full."""
        if not self.accepting:
            raise ActorGone(f"actor {self.path} ({self.address}) is not running")
        try:
            try:
                self._send.send_nowait((message, reply))
            except trio.WouldBlock:
                await self._send.send((message, reply))
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            raise ActorGone(f"actor {self.path} ({self.address}) stopped") from None

    def fail(self, exc: BaseException) -> None:
        """Crash from outside a handler (a background task of the actor failed)."""
        if self.failure is None:
            self.failure = exc
            log.error("actor %s (%s) crashed", self.path, self.address, exc_info=exc)
            self.stop()
            self._fail_queued()
            if self.on_crash is not None:
                self.on_crash(exc)

    def stop(self) -> None:
        """Stop taking messages; the actor exits once its mailbox is empty."""
        self.accepting = False
        self._send.close()

    async def shutdown(self, grace: float) -> None:
        """Stop, wait up to ``grace`` seconds for the queue to drain, then cancel."""
        self._stop_requested = True
        self.stop()
        with trio.move_on_after(grace):
            await self.done.wait()
        if not self.done.is_set():
            self._killed = True
            self._scope.cancel()
            self._teardown_scope.cancel()
        await self.done.wait()

    async def run(
        self, *, task_status: trio.TaskStatus[ActorRef] = trio.TASK_STATUS_IGNORED
    ) -> None:
        node = self.node
        node.cells[self.id] = self
        started = False
        self.started_at = trio.current_time()
        self._report(ActorStarted(path=self.path, pid=self.pid))
        try:
            with self._scope, _unwrap_setup_failure(self):
                async with trio.open_nursery() as nursery:
                    self.nursery = nursery
                    self.actor._actor_context = ActorContext(self)
                    try:
                        await self.actor.setup()
                    except Exception as exc:
                        self.failure = exc
                        raise
                    node.register_name(self.path, self.address)
                    self.accepting = True
                    started = True
                    self._report(
                        ActorReady(path=self.path, address=self.address, pid=self.pid)
                    )
                    task_status.started(self.ref)
                    try:
                        await self._serve()
                    except Exception as exc:
                        self.fail(exc)
                    finally:
                        self.stop()
                        self._fail_queued()
                        with self._teardown_scope:
                            if self.failure is None or self.on_crash is not None:
                                await self._drain()
                            await stop_children(self)
                            await self._cleanup()
                        nursery.cancel_scope.cancel()
        finally:
            self.accepting = False
            if self._current is not None:
                self._current.fail(_gone(self, "it was stopped while handling this request"))
                self._current = None
            self._fail_queued()
            node.cells.pop(self.id, None)
            if started:
                node.unregister_name(self.path, self.address)
            if self in self.parent.children:
                self.parent.children.remove(self)
            self.exit_reason = self._reason()
            self._report(ActorExited(
                path=self.path, address=self.address if started else None, pid=self.pid,
                reason=self.exit_reason,
            ))
            self.done.set()

    def _reason(self) -> ExitReason:
        if self.failure is not None:
            return crash_reason(self.failure)
        if self._killed:
            return ExitReason(
                kind="killed", detail=f"did not stop within {self.shutdown_timeout} s"
            )
        if self.stopped_itself and not self._stop_requested:
            return ExitReason(kind="normal")
        # Asked to stop, or cancelled with whatever contains it (the system closing).
        return ExitReason(kind="shutdown")

    async def _drain(self) -> None:
        # Only an actor with a drain of its own reports how it went (the others have nothing
        # in flight to speak of).
        reports = type(self.actor).drain is not Actor.drain
        started = trio.current_time()
        reported = False
        try:
            with trio.move_on_after(self.drain_timeout):
                try:
                    await self.actor.drain()
                except Exception as exc:
                    log.error("drain of actor %s failed", self.path, exc_info=exc)
                if reports:
                    reported = True
                    self._drained(started, complete=True)
                if self.failure is not None and self.on_crash is not None:
                    await self.released.wait()  # the replacement takes over before we go
        finally:
            if reports and not reported:  # the deadline, or a harder stop, cut it short
                self._drained(started, complete=False)

    def _drained(self, started: float, *, complete: bool) -> None:
        # Published by the node itself: a process actor's root cell leaves its other events
        # to the master, which cannot see a drain.
        self.node.publish(ActorDrained(
            path=self.path, pid=self.pid, complete=complete,
            seconds=round(trio.current_time() - started, 6),
            in_flight=None if complete else self.actor._in_flight(),
        ))

    async def _cleanup(self) -> None:
        timeout = self.shutdown_timeout
        with trio.move_on_after(timeout) as scope:
            try:
                await self.actor.cleanup()
            except Exception as exc:
                log.error("cleanup of actor %s failed", self.path, exc_info=exc)
        if scope.cancelled_caught:
            log.error("cleanup of actor %s took longer than %s s", self.path, timeout)

    async def _serve(self) -> None:
        actor = self.actor
        cls = type(actor)
        receive = self._recv
        budget = _FAIRNESS_BUDGET
        while True:
            budget -= 1
            if budget <= 0:
                budget = _FAIRNESS_BUDGET
                await trio.lowlevel.checkpoint()
            try:
                message, reply = receive.receive_nowait()
            except trio.WouldBlock:
                budget = _FAIRNESS_BUDGET
                try:
                    message, reply = await receive.receive()
                except trio.EndOfChannel:
                    return
            except trio.EndOfChannel:
                return
            name = cls.handler_for(type(message))
            if name is None:
                error = TypeError(
                    f"{cls.__qualname__} has no handler for {type(message).__qualname__}"
                )
                if reply is not None:
                    reply.fail(Failure.from_exception("remote", error, actor=self.path))
                else:
                    log.warning("actor %s dropped a message: %s", self.path, error)
                continue
            self._current = reply
            try:
                result = await getattr(actor, name)(message)
                if result is not None and not isinstance(result, Message):
                    raise TypeError(
                        f"handler {cls.__qualname__}.{name} returned {type(result).__name__},"
                        " not a Message or None"
                    )
            except Exception as exc:
                if reply is not None:
                    reply.fail(Failure.from_exception("remote", exc, actor=self.path))
                self._current = None
                raise
            self._current = None
            if reply is not None:
                reply.send(result)

    def _fail_queued(self) -> None:
        dropped = 0
        while True:
            try:
                _, reply = self._recv.receive_nowait()
            except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                break
            if reply is not None:
                reply.fail(_gone(self, "it stopped before handling this request"))
            else:
                dropped += 1
        if dropped:
            log.warning("actor %s stopped with %d messages unread", self.path, dropped)


def _ignore(event: object) -> None:
    pass


@contextmanager
def _unwrap_setup_failure(cell: Cell) -> Iterator[None]:
    """A failed ``setup`` leaves the cell's nursery as an exception group of one: re-raise
    the original, so that the starter sees (and reports) what the actor raised."""
    try:
        yield
    except BaseExceptionGroup as group:
        failure = cell.failure
        if failure is not None and not cell.accepting and leaves(group) == [failure]:
            raise failure from None
        raise


def crash_reason(exc: BaseException) -> ExitReason:
    return ExitReason(
        kind="crashed",
        error_type=_qualified_name(type(exc)),
        detail=str(exc),
        traceback="".join(traceback.format_exception(exc)),
    )


def _qualified_name(cls: type) -> str:
    if cls.__module__ == "builtins":
        return cls.__qualname__
    return f"{cls.__module__}.{cls.__qualname__}"


def _gone(cell: Cell, why: str) -> Failure:
    return Failure(
        kind="gone", type_name="ActorGone",
        message=f"actor {cell.path} ({cell.address}): {why}", actor=cell.path,
    )


async def stop_children(parent: Parent) -> None:
    """Shut down ``parent``'s children, the last started first, each within its timeout."""
    while parent.children:
        child = parent.children[-1]
        await child.shutdown(child.shutdown_timeout)
        if parent.children and parent.children[-1] is child:
            parent.children.pop()

