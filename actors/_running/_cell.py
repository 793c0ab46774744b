"""``Cell``: one running actor in this process, through its life: setup, serving its
mailbox (:mod:`._mailbox`), and stopping (drain, children, cleanup). Its actor reaches it
through its context (:mod:`._context`)."""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import trio

from .._base._actor import Actor
from .._base._errors import SpawnError
from .._base._events import ActorDrained, ActorReady, ActorStarted, ExitReason
from .._base._ref import ActorRef
from .._base._shared import State
from .._base._tree import (
    Child,
    ChildBase,
    ChildKind,
    Lifecycle,
    ManageChildren,
    Parent,
    SpawnChild,
    StopCause,
    stop_children,
)
from .._messaging._mailboxes import current_actor
from .._messaging._router import Router
from ._context import CellContext
from ._mailbox import ActorMailbox

__all__ = ["Cell", "Retirement", "drain_budget"]

log = logging.getLogger("actors")


def drain_budget(shutdown: float) -> float:
    """The part of an actor's shutdown time its drain may use.

    The rest (a quarter, at most one second) is left for its children, ``cleanup()`` and the
    exit, so that a drain the deadline cuts short still ends in an orderly stop (and a
    worker process exits on its own) instead of being killed at the shutdown deadline.
    """
    return shutdown - min(shutdown / 4, 1.0)


class _Host:
    """The nursery of what an actor starts (``ctx.start_soon``, ``ctx.spawn``), opened when
    it first starts something: most actors never do, and a nursery, its cancel scope and
    status and their sets were ~1 KB of every idle actor. It runs as a task beside the
    cell's, in the cell's parent's nursery, until the cell ends (:meth:`close`)."""

    __slots__ = ("_cancelled", "_ended", "_opened", "_pending", "nursery")

    def __init__(self, outer: trio.Nursery, name: str) -> None:
        self.nursery: trio.Nursery | None = None
        # What was started before the nursery opened (its task had not run yet).
        self._pending: list[tuple[Callable[[], Awaitable[object]], str | None]] = []
        self._opened = trio.Event()
        self._ended = trio.Event()
        self._cancelled = False
        outer.start_soon(self._run, name=name)

    async def _run(self) -> None:
        try:
            async with trio.open_nursery() as nursery:
                self.nursery = nursery
                if self._cancelled:
                    nursery.cancel_scope.cancel()
                pending, self._pending = self._pending, []
                for function, name in pending:
                    nursery.start_soon(function, name=name)
                self._opened.set()
                await trio.sleep_forever()  # (until the cell ends: close cancels it)
        finally:
            self._opened.set()
            self._ended.set()

    def start_soon(self, function: Callable[[], Awaitable[object]], name: str | None) -> None:
        if self.nursery is None:
            self._pending.append((function, name))
        else:
            self.nursery.start_soon(function, name=name)

    async def opened(self) -> trio.Nursery:
        await self._opened.wait()
        if self.nursery is None:
            raise RuntimeError("the actor's nursery did not open: its parent is stopping")
        return self.nursery

    def cancel(self) -> None:
        self._cancelled = True
        if self.nursery is not None:
            self.nursery.cancel_scope.cancel()

    async def close(self) -> None:
        """Cancel what runs in it, and wait until it all ended (as a nursery's exit does)."""
        self.cancel()
        with trio.CancelScope(shield=True):
            await self._ended.wait()


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
    ``cleanup`` runs. Its ``address`` is known once it is ready (its mailbox's, always).

    ``retirements`` (a worker's own actor, whose successor must be up before it goes): when
    the actor crashes or asks to be replaced, the cell says so there (a :class:`Retirement`)
    and retires: it goes on (a requested replacement) or drains (a crash) until it is
    relieved (:meth:`relieve`), and then stops.
    """

    __slots__ = ("_at_once", "_host", "_killed_now", "_ref", "_report_events", "_retirements",
                 "_setup_scope", "_teardown_scope", "actor", "address", "drain_timeout",
                 "failure", "mailbox", "manage_children", "pid", "register_name",
                 "restarts", "router", "running", "shared_state", "spawn", "start_timeout")

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
        manage_children: ManageChildren | None = None,
    ) -> None:
        super().__init__(path, parent, shutdown_timeout)
        self.address = None
        self.restarts = 0
        self.router = router
        self.actor = actor
        self.start_timeout = start_timeout
        self.spawn = spawn
        self.shared_state = shared_state
        self.manage_children = manage_children  # ctx.start_child & co. (None: not here)
        self.register_name = register_name
        self.mailbox = ActorMailbox(router, actor, path=path, owner=self)
        self._ref = ActorRef(router.outbox, address=self.mailbox.address)
        self.running: list[Child] = []  # what it spawned (ctx.spawn), running
        self.failure: BaseException | None = None
        self._retirements = retirements
        self.drain_timeout = drain_budget(shutdown_timeout)
        self.pid = os.getpid()
        # Cancel scopes are made when first needed: most actors never use the setup's or
        # the teardown's, and what cancels a handler is its mailbox's (ActorMailbox.kill).
        self._setup_scope: trio.CancelScope | None = None
        self._teardown_scope: trio.CancelScope | None = None
        self._killed_now = False  # its grace ran out: cancel it all, once it runs
        self._report_events = report_events
        self._at_once = False  # made ready by start_at_once, before its task ran
        self._host: _Host | None = None  # the nursery of what it starts, once it does

    @property
    def ref(self) -> ActorRef:
        return self._ref

    @property
    def children(self) -> list[Child]:
        return self.running

    @property
    def nursery(self) -> trio.Nursery:
        """Where what the actor starts runs, once it is open (:meth:`hosting`)."""
        host = self._host
        if host is None or host.nursery is None:
            raise RuntimeError(f"actor {self.path} has not opened its nursery")
        return host.nursery

    def _hosted(self) -> _Host:
        if self._host is None:
            self._host = _Host(self.parent.nursery, self.path)
        return self._host

    async def hosting(self) -> trio.Nursery:
        """Its nursery, opened now if it was not (before it starts children)."""
        return await self._hosted().opened()

    def start_task(self, function: Callable[[], Awaitable[object]], name: str | None) -> None:
        """Run ``function`` beside the actor (``ctx.start_soon``) until the actor ends."""
        self._hosted().start_soon(function, name)

    def _report(self, event: ActorStarted | ActorReady) -> None:
        if self._report_events:
            self.router.publish(event)

    def fail(self, exc: BaseException) -> None:
        """Crash from outside a handler (a background task of the actor failed).

        Before the actor is ready this fails its start (``setup`` is cancelled)."""
        if self.failure is not None:
            return
        self.failure = exc
        if self.address is None:
            self._scope_of_setup().cancel()
            return
        log.error("actor %s (%s) crashed", self.path, self.address, exc_info=exc)
        self._close_mailbox()
        self.mailbox.fail_queued()
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
        if self.mailbox.accepting and self.register_name:
            self.router.names.unregister(self.path, self.mailbox.address)
        self.mailbox.close()

    async def shutdown(self, grace: float) -> None:
        """Stop, wait up to ``grace`` seconds for the queue to drain, then cancel."""
        self.stop("asked")
        with trio.move_on_after(grace):
            await self.done.wait()
        if not self.done.is_set():
            self._killed = f"did not stop within {self.shutdown_timeout} s"
            self._killed_now = True
            self.mailbox.kill()
            if self._setup_scope is not None:
                self._setup_scope.cancel()
            if self._host is not None:
                self._host.cancel()
            self._scope_of_teardown().cancel()
        await self.done.wait()

    def _scope_of_setup(self) -> trio.CancelScope:
        if self._setup_scope is None:
            self._setup_scope = trio.CancelScope()
        return self._setup_scope

    def _scope_of_teardown(self) -> trio.CancelScope:
        if self._teardown_scope is None:
            self._teardown_scope = trio.CancelScope(shield=True)
        return self._teardown_scope

    @property
    def has_setup(self) -> bool:
        """Its actor has a ``setup`` of its own (else it is ready as soon as it exists)."""
        return type(self.actor).setup is not Actor.setup

    def start_at_once(self, nursery: trio.Nursery) -> ActorRef:
        """Start an actor without a setup of its own: it is ready now (its mailbox open, its
        name registered), and its task, started in ``nursery``, serves what arrives.

        What :meth:`run` with ``nursery.start`` does, without waiting for the new task to
        run: that wait is several scheduling passes, most of the cost of a spawn."""
        if self.has_setup:
            raise RuntimeError(f"actor {self.path} has a setup to wait for: use run")
        # (Raises, with nothing done, if the nursery is closed. Named by its path: a name
        # made from the function would be a new string per actor.)
        nursery.start_soon(self.run, name=self.path)
        self._at_once = True
        self._enter()
        self._open()
        return self.ref

    def _enter(self) -> None:
        self.router.mailboxes.add(self.mailbox.id, self.mailbox)
        self.started_at = trio.current_time()
        self._report(ActorStarted(path=self.path, pid=self.pid))

    def _open(self) -> None:
        mailbox = self.mailbox
        self.address = mailbox.address
        if self._move(Lifecycle.RUNNING):  # (not asked to stop meanwhile)
            if self.register_name:
                self.router.names.register(self.path, mailbox.address)
            mailbox.open()
        self._report(ActorReady(path=self.path, address=self.address, pid=self.pid))

    async def run(
        self, *, task_status: trio.TaskStatus[ActorRef] = trio.TASK_STATUS_IGNORED
    ) -> None:
        router = self.router
        mailbox = self.mailbox
        at_once = self._at_once
        if not at_once:
            self._enter()
        current_actor.set(None)  # not its parent's handler any more (spawned from one)
        try:
            # No nursery of its own (what it starts runs in its _Host), and no cancel scope
            # while it is idle: killed, its mailbox cancels the handler, and its setup's
            # and teardown's scopes the rest.
            self.actor._actor_context = CellContext(self)
            if at_once or await self._set_up():
                if not at_once:
                    self._open()
                task_status.started(self.ref)
                # Served here, not in a method of its own: an idle actor holds every frame
                # of its chain (~250 B each).
                try:
                    await mailbox.serve()
                    if self.failure is None:
                        self.stop()  # (its mailbox is closed, or the system is stopping)
                except Exception as exc:
                    self.fail(exc)
                finally:
                    await self._stop_serving()
            if self.address is None and self.failure is not None:
                raise self.failure  # the start failed: whoever started us hears why
        finally:
            if self._host is not None:  # what it started ends before it does
                await self._host.close()
            mailbox.abandon()
            router.mailboxes.remove(mailbox.id)
            if self.address is not None and self.register_name:
                router.names.unregister(self.path, self.address)
            if self._retirements is not None:
                self._retirements.close()
            self._finish(router, failure=self.failure, address=self.address,
                         report=self._report_events)

    async def _set_up(self) -> bool:
        """Run ``setup`` within the start timeout; False if it (or a task it started)
        failed, or did not return in time, or it was killed meanwhile."""
        if self._killed_now:  # (its grace ran out before its task ran)
            return False
        with self._scope_of_setup(), trio.move_on_after(self.start_timeout) as deadline:
            try:
                await self.actor.setup()
            except Exception as exc:
                if self.failure is None:
                    self.failure = exc
        self._setup_scope = None  # (done with: a later fail() finds the actor ready)
        if deadline.cancelled_caught and self.failure is None:
            detail = f"not ready within {self.start_timeout} s"
            reason = ExitReason(kind="timeout", detail=detail)
            self._explain(reason)
            self.failure = SpawnError(f"actor {self.path} did not become ready: {detail}")
            self.failure.reason = reason
        return self.failure is None and not self._killed_now

    async def _stop_serving(self) -> None:
        self._close_mailbox()
        self.mailbox.fail_queued()
        with self._scope_of_teardown():
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
