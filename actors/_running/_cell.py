"""``Cell``: one running actor in this process (its mailbox, its loop, its children)."""

from __future__ import annotations

import bisect
import logging
import math
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import trio

from protocol import Message

from .._base._actor import Actor, no_handler
from .._base._control import Failure, Probe, Probed
from .._base._errors import ActorGone, SpawnError
from .._base._events import ActorDrained, ActorReady, ActorStarted, ExitReason
from .._base._ref import ActorRef
from .._base._shared import State
from .._base._spec import ChildSpec
from .._base._tree import (
    Child,
    ChildBase,
    ChildKind,
    Lifecycle,
    Parent,
    SpawnChild,
    StopCause,
    stop_children,
)
from .._messaging._asks import Reply
from .._messaging._router import Router, current_actor

__all__ = ["ASK_BUCKETS", "Cell", "Retirement", "drain_budget"]

log = logging.getLogger("actors")

_FAIRNESS_BUDGET = 64  # messages handled back to back before the loop lets other tasks run

ASK_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
"""Upper bounds (seconds) of the ask-handling histogram every actor keeps."""


def drain_budget(shutdown: float) -> float:
    """The part of an actor's shutdown time its drain may use.

    The rest (a quarter, at most one second) is left for its children, ``cleanup()`` and the
    exit, so that a drain the deadline cuts short still ends in an orderly stop (and a
    worker process exits on its own) instead of being killed at the shutdown deadline.
    """
    return shutdown - min(shutdown / 4, 1.0)


@dataclass(frozen=True)
class Retirement:
    """A retiring cell wants a successor: its actor crashed (``failure``), or asked to be
    replaced (``reason`` says why)."""

    reason: str
    failure: BaseException | None = None


class Cell(ChildBase):
    """Runs one actor: setup, then one message at a time from its mailbox, then cleanup.

    ``run`` is started with ``nursery.start``: it returns the actor's ref once ``setup``
    succeeded; a failure before that (``setup`` raised, or a background task it started
    did) is raised from ``start`` instead. The actor stops when asked (:meth:`stop`: it
    finishes what is queued), when a handler raises (a crash: queued asks get ActorGone), or
    when its task is cancelled. Its children are stopped in reverse start order before
    ``cleanup`` runs.

    ``retirements`` (a worker's own actor, whose successor must be up before it goes): when
    the actor crashes or asks to be replaced, the cell says so there (a :class:`Retirement`)
    and retires: it goes on (a requested replacement) or drains (a crash) until it is
    relieved (:meth:`relieve`), and then stops.
    """

    kind: ChildKind = "actor"

    def __init__(
        self,
        router: Router,
        actor: Actor,
        *,
        path: str,
        parent: Parent,
        shutdown_timeout: float,
        spawn: SpawnChild,
        shared_state: State | None = None,
        start_timeout: float = math.inf,
        report_events: bool = True,
        register_name: bool = True,
        retirements: trio.MemorySendChannel[Retirement] | None = None,
    ) -> None:
        super().__init__(path, parent, shutdown_timeout)
        self.router = router
        self.actor = actor
        self.start_timeout = start_timeout
        self.spawn = spawn
        self.shared_state = shared_state
        self.register_name = register_name
        self.id = router.next_actor_id()
        self.address: str = f"{router.id}/{self.id}"
        self._ref = ActorRef(router, address=self.address)
        self.running: list[Child] = []  # what it spawned (ctx.spawn), running
        self.accepting = False
        self.failure: BaseException | None = None
        self._retirements = retirements
        self.drain_timeout = drain_budget(shutdown_timeout)
        self.pid = os.getpid()
        self._send, self._recv = trio.open_memory_channel[tuple[Message, "Reply | None"]](
            max(0, actor.mailbox_size)
        )
        self._current: Reply | None = None
        # Figures for status and metrics: messages handled, asks among them, and how long
        # the handlers of asks took (a histogram over ASK_BUCKETS).
        self.handled = 0
        self.asks = 0
        self.ask_seconds = 0.0
        self.ask_buckets = [0] * (len(ASK_BUCKETS) + 1)
        self._scope = trio.CancelScope()
        self._setup_scope = trio.CancelScope()
        self._teardown_scope = trio.CancelScope(shield=True)
        self._ready = False
        self._report_events = report_events
        self.nursery: trio.Nursery

    @property
    def ref(self) -> ActorRef:
        return self._ref

    @property
    def children(self) -> list[Child]:
        return self.running

    def _report(self, event: ActorStarted | ActorReady) -> None:
        if self._report_events:
            self.router.publish(event)

    def inline_handler(self, message: Message) -> Callable[[Message], Message | None] | None:
        """The runtime's synchronous handler for ``message`` on this actor, if it has one."""
        if type(message) is Probe:
            return self._probe
        name = type(self.actor).__inline_handlers__.get(type(message))
        if name is None or not self.accepting:
            return None
        handle: Callable[[Message], Message | None] = getattr(self.actor, name)
        return handle

    def _probe(self, message: Message) -> Probed:
        return Probed(
            pid=self.pid, mailbox=self._send.statistics().current_buffer_used,
            handled=self.handled, asks=self.asks, ask_seconds=round(self.ask_seconds, 6),
            ask_buckets=list(self.ask_buckets),
        )

    @property
    def mailbox_depth(self) -> int:
        return self._send.statistics().current_buffer_used

    async def deliver(self, message: Message, reply: Reply | None) -> None:
        """Put a message in the mailbox, waiting while it is full."""
        if not self.accepting:
            raise self._not_running()
        try:
            try:
                self._send.send_nowait((message, reply))
            except trio.WouldBlock:
                await self._send.send((message, reply))
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            raise self._not_running() from None

    def deliver_nowait(self, message: Message, reply: Reply | None) -> None:
        """Put a message in the mailbox now; trio.WouldBlock if it is full."""
        if not self.accepting:
            raise self._not_running()
        try:
            self._send.send_nowait((message, reply))
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            raise self._not_running() from None

    def _not_running(self) -> ActorGone:
        why = "it is not running"
        if self.failure is not None:
            why = f"it crashed ({type(self.failure).__name__}: {self.failure})"
        elif self._ready:
            why = "it stopped"
        return ActorGone(f"actor {self.path} ({self.address}): {why}")

    def fail(self, exc: BaseException) -> None:
        """Crash from outside a handler (a background task of the actor failed).

        Before the actor is ready this fails its start (``setup`` is cancelled)."""
        if self.failure is not None:
            return
        self.failure = exc
        if not self._ready:
            self._setup_scope.cancel()
            return
        log.error("actor %s (%s) crashed", self.path, self.address, exc_info=exc)
        self._close_mailbox()
        self._fail_queued()
        if self._retirements is None:
            self._stopping(None)
        else:  # its successor first: it drains meanwhile
            self._move(Lifecycle.RETIRING)
            self._retirements.send_nowait(Retirement(reason="it crashed", failure=exc))

    def request_replacement(self, reason: str) -> None:
        """Its actor asks for a successor: it serves on until relieved (then stops). With
        nothing to start a successor (not a worker's own actor), it stops now."""
        if self._retirements is None:
            log.info("actor %s asked to be replaced (%s): it stops", self.path, reason)
            self.stop("itself")
        elif self._move(Lifecycle.RETIRING):
            self._retirements.send_nowait(Retirement(reason=reason))

    def relieve(self) -> None:
        """Its successor is up (or none is coming): a retiring cell stops."""
        if self.state is Lifecycle.RETIRING:
            self.stop("itself")

    def stop(self, cause: StopCause | None = None) -> None:
        """Stop taking messages; the actor exits once its mailbox is empty."""
        self._close_mailbox()
        self._stopping(cause)

    def _close_mailbox(self) -> None:
        # Its name goes at once: senders by path wait for a successor rather than find an
        # actor that takes nothing more.
        if self.accepting and self.register_name:
            self.router.names.unregister(self.path, self.address)
        self.accepting = False
        self._send.close()

    async def shutdown(self, grace: float) -> None:
        """Stop, wait up to ``grace`` seconds for the queue to drain, then cancel."""
        self.stop("asked")
        with trio.move_on_after(grace):
            await self.done.wait()
        if not self.done.is_set():
            self._killed = f"did not stop within {self.shutdown_timeout} s"
            self._scope.cancel()
            self._teardown_scope.cancel()
        await self.done.wait()

    async def run(
        self, *, task_status: trio.TaskStatus[ActorRef] = trio.TASK_STATUS_IGNORED
    ) -> None:
        router = self.router
        router.mailboxes[self.id] = self
        current_actor.set(None)  # not its parent's handler any more (spawned from one)
        self.started_at = trio.current_time()
        self._report(ActorStarted(path=self.path, pid=self.pid))
        try:
            with self._scope:
                async with trio.open_nursery() as nursery:
                    self.nursery = nursery
                    self.actor._actor_context = _Context(self)
                    if await self._setup():
                        if self.register_name:
                            router.names.register(self.path, self.address)
                        self._ready = True
                        self._move(Lifecycle.RUNNING)
                        self.accepting = True
                        self._report(
                            ActorReady(path=self.path, address=self.address, pid=self.pid)
                        )
                        task_status.started(self.ref)
                        await self._serve_then_stop()
                    nursery.cancel_scope.cancel()
            if not self._ready and self.failure is not None:
                raise self.failure  # the start failed: whoever started us hears why
        finally:
            self.accepting = False
            if self._current is not None:
                self._current.fail(
                    _gone(self, "it was stopped while handling this request", in_doubt=True)
                )
                self._current = None
            self._fail_queued()
            router.mailboxes.pop(self.id, None)
            if self._ready and self.register_name:
                router.names.unregister(self.path, self.address)
            if self._retirements is not None:
                self._retirements.close()
            self._finish(router, failure=self.failure,
                         address=self.address if self._ready else None,
                         report=self._report_events)

    async def _setup(self) -> bool:
        """Run ``setup`` within the start timeout; False if it (or a task it started)
        failed, or did not return in time."""
        with self._setup_scope, trio.move_on_after(self.start_timeout) as deadline:
            try:
                await self.actor.setup()
            except Exception as exc:
                if self.failure is None:
                    self.failure = exc
        if deadline.cancelled_caught and self.failure is None:
            detail = f"not ready within {self.start_timeout} s"
            reason = ExitReason(kind="timeout", detail=detail)
            self._explain(reason)
            self.failure = SpawnError(f"actor {self.path} did not become ready: {detail}")
            self.failure.reason = reason
        return self.failure is None

    async def _serve_then_stop(self) -> None:
        try:
            await self._serve()
        except Exception as exc:
            self.fail(exc)
        finally:
            self._close_mailbox()
            self._fail_queued()
            with self._teardown_scope:
                if self.failure is None or self._retirements is not None:
                    await self._drain()
                self._stopping(None)
                await stop_children(self)
                await self._cleanup()

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
                if self.state is Lifecycle.RETIRING:  # it crashed: its successor first
                    await self._wait_for(Lifecycle.STOPPING)
        finally:
            if reports and not reported:  # the deadline, or a harder stop, cut it short
                self._drained(started, complete=False)

    def _drained(self, started: float, *, complete: bool) -> None:
        # Published whatever report_events says: a process actor's own cell leaves its
        # other events to the master, which cannot see a drain.
        self.router.publish(ActorDrained(
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
        # Set once for the loop (what a handler starts inherits it either way): an ask from
        # the actor's own handler to itself is refused, not left waiting forever.
        token = current_actor.set(self.address)
        try:
            await self._serve_messages()
        finally:
            current_actor.reset(token)

    async def _serve_messages(self) -> None:
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
                error = no_handler(cls, type(message))
                if reply is not None:
                    reply.fail(Failure.from_exception("remote", error, actor=self.path))
                else:
                    log.warning("actor %s dropped a message: %s", self.path, error)
                continue
            self._current = reply
            began = 0.0 if reply is None else trio.current_time()
            try:
                result = await getattr(actor, name)(message)
                if result is not None and not isinstance(result, Message):
                    raise TypeError(
                        f"handler {cls.__qualname__}.{name} returned {type(result).__name__},"
                        " not a Message or None"
                    )
            except ActorGone as exc:
                if not self.router.stopping:
                    self._handler_failed(reply, exc)
                    raise
                # Another actor stopped first in a shutdown: part of it, not a crash.
                log.info("actor %s: %s (the system is shutting down)", self.path, exc)
                if reply is not None:
                    reply.fail(_gone(self, "the system is shutting down", in_doubt=True))
                self._current = None
                self.stop()
                return
            except Exception as exc:
                self._handler_failed(reply, exc)
                raise
            finally:
                self.handled += 1
                if reply is not None:
                    self._count_ask(began)
            self._current = None
            if reply is not None:
                reply.send(result)

    def _count_ask(self, began: float) -> None:
        took = trio.current_time() - began
        self.asks += 1
        self.ask_seconds += took
        self.ask_buckets[bisect.bisect_left(ASK_BUCKETS, took)] += 1

    def _handler_failed(self, reply: Reply | None, exc: BaseException) -> None:
        if reply is not None:
            reply.fail(Failure.from_exception("remote", exc, actor=self.path))
        self._current = None

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


class _Context:
    """The :class:`ActorContext` of an actor running in a cell."""

    __slots__ = ("_cell",)

    def __init__(self, cell: Cell) -> None:
        self._cell = cell

    @property
    def ref(self) -> ActorRef:
        return self._cell.ref

    @property
    def path(self) -> str:
        return self._cell.path

    @property
    def node(self) -> str:
        return self._cell.router.id

    @property
    def state(self) -> State:
        state = self._cell.shared_state
        if state is None:
            raise RuntimeError("this actor runs without shared state")
        return state

    async def spawn(
        self,
        actor_class: type[Actor] | ChildSpec,
        *,
        name: str | None = None,
        process: bool = False,
        shutdown: float = 5.0,
        **kwargs: Any,
    ) -> ActorRef:
        cell = self._cell
        return await cell.spawn(
            cell, actor_class, name=name, process=process, shutdown=shutdown, kwargs=kwargs
        )

    def ref_to(self, path: str) -> ActorRef:
        return ActorRef(self._cell.router, path=path)

    def start_soon(
        self, function: Callable[..., Awaitable[object]], *args: object, name: str | None = None
    ) -> None:
        cell = self._cell

        async def guarded() -> None:
            current_actor.set(None)  # a task of the actor, not its handler: it may ask it
            try:
                await function(*args)
            except Exception as exc:
                cell.fail(exc)

        cell.nursery.start_soon(guarded, name=name or getattr(function, "__name__", None))

    def crash(self, exc: BaseException) -> None:
        self._cell.fail(exc)

    def stop(self) -> None:
        self._cell.stop("itself")

    def request_replacement(self, reason: str) -> None:
        self._cell.request_replacement(reason)


def _gone(cell: Cell, why: str, *, in_doubt: bool = False) -> Failure:
    return Failure(
        kind="gone", type_name="ActorGone",
        message=f"actor {cell.path} ({cell.address}): {why}", actor=cell.path,
        in_doubt=in_doubt,
    )
