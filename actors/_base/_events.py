"""Lifecycle events: what happened to which actor, as typed messages.

Every event is also logged (logger ``actors.events``). Subscribe with ``system.events()``;
events from supervisors running inside worker processes are forwarded to the master.
"""

from __future__ import annotations

import logging
import math
import time
import traceback
from collections import deque
from typing import Protocol

import trio
from pydantic import Field

from protocol import Message

from ._control import qualified_name
from ._exits import ExitKind as ExitKind  # (kept importable from here)
from ._exits import ExitReason
from ._ref import ActorRef

__all__ = [
    "ActorDown",
    "ActorExited",
    "ActorReady",
    "ActorRestarted",
    "ActorStarted",
    "ActorSuicided",
    "Demonitor",
    "Event",
    "EventBus",
    "EventSink",
    "ExitKind",
    "ExitReason",
    "Monitor",
    "Monitoring",
    "ReloadAborted",
    "StoreDisconnected",
    "StoreReconnected",
    "StoreReset",
    "SupervisorGaveUp",
    "SystemReloaded",
    "crash_reason",
    "exit_reason",
]

log = logging.getLogger("actors.events")

def crash_reason(exc: BaseException) -> ExitReason:
    """The exit reason of an instance that ``exc`` ended."""
    return ExitReason(
        kind="crashed",
        error_type=qualified_name(type(exc)),
        detail=str(exc),
        traceback="".join(traceback.format_exception(exc)),
    )


def exit_reason(
    *,
    explained: ExitReason | None = None,
    failure: BaseException | None = None,
    killed: str | None = None,
    returncode: int | None = None,
    stop_requested: bool = False,
    stopped_itself: bool = False,
) -> ExitReason:
    """Why an instance ended, from what is known of it; one rule for cells, workers and
    supervisors.

    The first explanation the runtime recorded wins (a suicide, a start timeout, an
    unresponsive worker, a failure its process reported); then an exception that ended it
    here; then our own kill after its grace (``killed``: the detail); then the exit status of
    its process (a signal is ``killed``, a non-zero status ``crashed``). An exit nobody
    explained is ``normal`` when the instance ended by itself and ``shutdown`` otherwise (it
    was asked to stop, or cancelled with whatever contains it).
    """
    signal_number = -returncode if returncode is not None and returncode < 0 else None
    exit_code = returncode if returncode is not None and returncode >= 0 else None
    if explained is not None:
        reason = explained
    elif failure is not None:
        reason = crash_reason(failure)
    elif killed is not None:
        reason = ExitReason(kind="killed", detail=killed)
    elif signal_number is not None:
        reason = ExitReason(kind="killed", detail="killed by a signal")
    elif exit_code:
        reason = ExitReason(kind="crashed", detail="the worker exited with an error")
    elif stopped_itself and not stop_requested:
        reason = ExitReason(kind="normal")
    else:
        reason = ExitReason(kind="shutdown")
    if returncode is None:
        return reason
    return reason.model_copy(update={"exit_code": exit_code, "signal": signal_number})


class Event(Message, tag="actors.Event"):
    """Base of lifecycle events."""

    path: str
    at: float = Field(default_factory=time.time)


class ActorStarted(Event, tag="actors.ActorStarted"):
    """An instance is starting (its process exists, if it has one)."""

    pid: int | None = None


class ActorReady(Event, tag="actors.ActorReady"):
    """An instance finished ``setup`` and takes messages; a supervisor: all its children
    are up (a plain supervisor takes no messages: its ``address`` is None)."""

    address: str | None = None
    pid: int | None = None


class ActorExited(Event, tag="actors.ActorExited"):
    """An instance ended; recorded exactly once per instance.

    ``node`` is set when the instance was a worker process's own actor: that process (the
    node of the process tree, and every process below it) ended with it."""

    address: str | None = None
    pid: int | None = None
    reason: ExitReason
    node: str | None = None


class ActorRestarted(Event, tag="actors.ActorRestarted"):
    """A supervisor is starting a new instance after an exit (after ``delay`` seconds)."""

    restarts: int
    delay: float = 0.0
    reason: ExitReason


class ActorSuicided(Event, tag="actors.ActorSuicided"):
    """A worker hit an unexpected exception: its replacement starts while it drains."""

    pid: int | None = None
    reason: ExitReason


class ActorDrained(Event, tag="actors.ActorDrained"):
    """An actor with a ``drain()`` of its own stopped taking work and finished draining.

    ``complete`` is False when the deadline (its shutdown time) cut the drain short;
    ``in_flight`` is the work still in hand then, when the actor counts it (an acceptor's
    open connections, which are closed), else None.
    """

    pid: int | None = None
    complete: bool
    seconds: float
    in_flight: int | None = None


class SupervisorGaveUp(Event, tag="actors.SupervisorGaveUp"):
    """A supervisor exceeded its restart intensity and stopped all its children."""

    restarts: int
    within: float
    reason: ExitReason


class StoreDisconnected(Event, tag="actors.StoreDisconnected"):
    """The shared-state store stopped answering: writes fail, reads come from replicas
    (``path`` is ``"state"``; ``store`` names it without credentials)."""

    store: str
    error: str


class StoreReconnected(Event, tag="actors.StoreReconnected"):
    """The store answers again; every replica was brought up to date (``down_for`` s)."""

    store: str
    down_for: float


class StoreReset(Event, tag="actors.StoreReset"):
    """The store came back without the data it held (a Redis restarted without persistence,
    a ``FLUSHDB``, a failover to a replica that lagged): its epoch changed. Every replica
    and watcher started over from what the store holds now (watchers got
    :class:`StateResynced`), and versions start again from the store's."""

    store: str
    detail: str


class SystemReloaded(Event, tag="actors.SystemReloaded"):
    """A reload finished: new code imported, ``replaced`` are the paths whose actors now
    run it (``path`` is what was reloaded: ``""`` for the whole system)."""

    replaced: list[str]


class ReloadAborted(Event, tag="actors.ReloadAborted"):
    """A reload stopped (``error`` says why); what it had not replaced keeps running."""

    error: str
    replaced: list[str]


class ActorDown(Message, tag="actors.ActorDown"):
    """A monitored actor ended, or could not be watched (``reason``: ``noproc``,
    ``nodedown``, or the kind of its exit reason)."""

    ref: ActorRef
    reason: str
    exit: ExitReason | None = None


class Monitor(Message, tag="actors.Monitor"):
    """``watcher`` asks to be told (:class:`ActorDown`) when ``target``'s instance ends."""

    watcher: ActorRef
    target: ActorRef


class Monitoring(Message, tag="actors.Monitoring"):
    """The answer to :class:`Monitor`: the monitor's id (for :class:`Demonitor`)."""

    id: str


class Demonitor(Message, tag="actors.Demonitor"):
    """Remove monitor ``id`` (nothing happens if it fired or was removed already)."""

    id: str


class EventSink(Protocol):
    """Where a process's runtime reports lifecycle events."""

    def publish(self, event: Event) -> None: ...


class EventBus:
    """Fans events out to every subscriber; never blocks the runtime.

    A subscriber that falls more than ``buffer`` events behind is unsubscribed (one warning
    says so; its iteration ends once it has read what it holds): the runtime never waits
    for an observer, and never keeps feeding one that stopped reading.
    """

    def __init__(self, buffer: int = 1024) -> None:
        self._buffer = buffer
        self._subscribers: list[trio.MemorySendChannel[Event]] = []
        self._history: deque[Event] = deque(maxlen=buffer)
        self.last_exits: dict[str, ExitReason] = {}  # by path: how its last instance ended
        self.exits: dict[str, int] = {}  # how many instances ended, by exit kind

    def subscribe(self, *, history: bool = False, unbounded: bool = False
                  ) -> trio.MemoryReceiveChannel[Event]:
        """A channel of the events from now on (``history``: the last ``buffer`` first).
        ``unbounded``: for the runtime's own reader, which must see every event (the
        monitors) and keeps up by itself; an observer's falls behind and is let go."""
        size = math.inf if unbounded else self._buffer
        send, receive = trio.open_memory_channel[Event](size)
        if history:
            for event in self._history:
                send.send_nowait(event)
        self._subscribers.append(send)
        return receive

    def publish(self, event: Event) -> None:
        _log(event)
        self._history.append(event)
        if isinstance(event, ActorExited):
            self.last_exits[event.path] = event.reason
            self.exits[event.reason.kind] = self.exits.get(event.reason.kind, 0) + 1
        for send in list(self._subscribers):
            try:
                send.send_nowait(event)
            except trio.WouldBlock:
                # Never wait for an observer, and never warn per event: it is let go once.
                log.warning("an events() subscriber fell %d events behind: it is "
                            "unsubscribed (its iteration ends after what it holds)",
                            self._buffer)
                self._subscribers.remove(send)
                send.close()
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self._subscribers.remove(send)

    def close(self) -> None:
        for send in self._subscribers:
            send.close()
        self._subscribers.clear()


def _log(event: Event) -> None:
    # One line per event; a crash's traceback is logged once, where it happened.
    if isinstance(event, ActorExited):
        # An instance that never became ready failed its start: whoever started it gets
        # the error (raised), so the log only notes it.
        level = logging.INFO if event.reason.normal or event.address is None else logging.WARNING
        log.log(level, "%s exited: %s", event.path, event.reason.describe())
    elif isinstance(event, SupervisorGaveUp):
        log.error(
            "%s gave up after %d restarts within %s s: %s",
            event.path, event.restarts, event.within, event.reason.describe(),
        )
    elif isinstance(event, ActorSuicided):
        log.warning("%s (pid %s) asked to be replaced: %s", event.path, event.pid,
                    event.reason.describe())
    elif isinstance(event, ActorDrained):
        if event.complete:
            log.info("%s drained in %.3f s", event.path, event.seconds)
        else:
            left = "" if event.in_flight is None else f" with {event.in_flight} in flight"
            log.warning("%s: drain cut short after %.3f s%s", event.path, event.seconds, left)
    elif isinstance(event, SystemReloaded):
        log.info("reloaded %s: %s", event.path or "the system",
                 ", ".join(event.replaced) or "nothing to replace")
    elif isinstance(event, ReloadAborted):
        log.error("reload of %s stopped: %s", event.path or "the system", event.error)
    elif isinstance(event, StoreDisconnected):
        log.error("the store %s is unreachable (%s): writes fail, reads are served from "
                  "replicas", event.store, event.error)
    elif isinstance(event, StoreReconnected):
        log.warning("the store %s is back after %.1f s", event.store, event.down_for)
    elif isinstance(event, StoreReset):
        log.error("the store %s lost its data (%s): every replica starts over from what it "
                  "holds now", event.store, event.detail)
    elif isinstance(event, ActorRestarted):
        log.info("%s restarting (restart %d, in %.3f s)", event.path, event.restarts, event.delay)
    else:
        log.debug("%s: %s", type(event).__name__, event)
