"""The supervision tree as interfaces: what a parent knows of its children, and back.

A child is an in-process cell, a worker process, an external command, a supervisor or a
listener; a parent is a
cell, a supervisor, a listener, or the system's root. Starting children is a capability
injected into whoever needs it (:class:`StartChild`, :class:`SpawnChild`), so that the layers
that run actors never import the layers that compose them. :func:`walk` is the one walk of
the tree (status, reload, restart): it asks each child for its children, never its type.
"""

from __future__ import annotations

import abc
import enum
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol

import trio

from ._children import ChildCount, ChildInfo, ChildKind
from ._errors import RestartLimitExceeded
from ._events import ActorExited, Event, ExitReason, exit_reason
from ._ref import ActorRef
from ._spec import ChildSpec

if TYPE_CHECKING:
    from ._actor import Actor

__all__ = [
    "Child",
    "ChildBase",
    "ChildKind",
    "Lifecycle",
    "ManageChildren",
    "Notice",
    "Parent",
    "Replacement",
    "Root",
    "SpawnChild",
    "StartChild",
    "StopCause",
    "Witness",
    "stop_children",
    "walk",
]



class Lifecycle(enum.Enum):
    """Where an instance is in its life: one state per child, as OTP keeps one pid field.

    An instance only moves forward, STARTING to EXITED, and may skip states (a failed start
    goes straight to EXITED, a crash from RUNNING to STOPPING). RESTARTING is the one state
    no instance is ever in: it is the state of a supervisor's stand-in for a child between
    two instances (the old one gone or going, the new one not ready yet), as OTP's pid
    field holds ``restarting``.
    """

    STARTING = "starting"
    """Started, not ready yet: a worker's process handshakes, an actor's ``setup`` runs."""
    RUNNING = "running"
    """Ready, and taking work."""
    RETIRING = "retiring"
    """It asked for a successor (it crashed in a worker, asked to be replaced, or grew past
    its memory limit) and waits to be relieved (:meth:`Child.relieve`) before it stops."""
    STOPPING = "stopping"
    """It takes no new work: it drains, stops its children and exits."""
    EXITED = "exited"
    """Gone: ``exit_reason`` says why, ``done`` is set."""
    RESTARTING = "restarting"
    """A supervisor's stand-in for a child between two instances (never an instance's)."""


_ORDER = {
    Lifecycle.RESTARTING: -1,  # a stand-in never moves
    Lifecycle.STARTING: 0,
    Lifecycle.RUNNING: 1,
    Lifecycle.RETIRING: 2,
    Lifecycle.STOPPING: 3,
    Lifecycle.EXITED: 4,
}

StopCause = Literal["itself", "asked", "at_once"]
"""Who began a child's stop: the child itself (its actor stopped, or its successor relieved
it), its parent (a shutdown), or its parent at once (no grace for anything)."""

_CAUSE_RANK: dict[StopCause | None, int] = {None: 0, "itself": 1, "asked": 2, "at_once": 3}

Replacement = Literal["on_request", "on_reload"]
"""How a parent replaces one of its children: when asked (``trio-actors restart``), or also
by every reload (a listener's acceptors, a worker with ``reload=True``)."""


class Child(Protocol):
    """What a parent, and whoever walks the tree, may use of a child it started (a cell, a
    worker, a supervisor, a listener).

    Every kind answers every question (with :class:`ChildBase`'s defaults where it has
    nothing to say), so that a parent asks the child, never its type.
    """

    path: str
    shutdown_timeout: float
    done: trio.Event
    started_at: float
    exit_reason: ExitReason | None
    restarts: int  # how often its supervisor had restarted its place when it started

    @property
    def kind(self) -> ChildKind: ...

    @property
    def state(self) -> Lifecycle: ...

    @property
    def ref(self) -> ActorRef: ...

    @property
    def address(self) -> str | None:
        """Where messages to it go (``node/id``) once it is ready; None before, and for a
        child that takes none (a plain supervisor)."""
        ...

    @property
    def pid(self) -> int | None:
        """The process it runs in (None while a worker's process is not started)."""
        ...

    @property
    def node(self) -> str | None:
        """The node of the process tree it runs as, when that is not its parent's (a
        worker's process); None: its parent's."""
        ...

    @property
    def children(self) -> Sequence[Child]:
        """What runs below it, for whoever walks the tree, in the order it shows them: a
        supervisor's children in the order of its spec, each a running instance or, between
        two instances, a stand-in in state RESTARTING. Empty for a worker: the actors in its
        process report themselves."""
        ...

    @property
    def rolling(self) -> bool:
        """Restarting it replaces its children one at a time, and it stays (a listener: its
        socket and its router stay, its acceptors are replaced); else its parent replaces
        it whole."""
        ...

    def replaces(self, child: Child) -> Replacement | None:
        """How it replaces ``child``, one of its :attr:`children`: None if it does not
        (it supervises nothing)."""
        ...

    async def replace_child(self, child: Child) -> bool:
        """Replace whatever holds ``child``'s place now: start its successor and, once that
        is ready, stop the old one (it drains). False if the successor did not start (the
        old one goes on)."""
        ...

    @property
    def gave_up(self) -> RestartLimitExceeded | None:
        """Why it gave up, if it is a supervisor that did (too many restarts)."""
        ...

    def begin_shutdown(self) -> None:
        """Ask it to stop now, without waiting: :meth:`shutdown` then waits what is left of
        its grace, so that siblings stopped together drain at the same time."""
        ...

    async def shutdown(self, grace: float) -> None:
        """Stop it: what it has in hand gets up to ``grace`` seconds, then it is killed."""
        ...

    def relieve(self) -> None:
        """It asked for a successor (a :class:`Notice`), and may go now: the successor is
        up, or none is coming. It finishes what it has in hand and exits."""
        ...


class Witness(Protocol):
    """Who hears of an instance's end (the router): sends to its address fail saying why,
    and the system's events get its :class:`ActorExited`."""

    def departed(self, address: str, path: str, reason: ExitReason) -> None: ...

    def publish(self, event: Event) -> None: ...


class ChildBase(abc.ABC):
    """What every kind of child shares: its lifecycle, kept as one state, and the one way
    it ends (:meth:`_finish`); and the answers of a kind that has nothing to say.

    A base class rather than defaults in :class:`Child` itself: parents and test doubles
    see the Protocol (what they may use), and only the kinds of this package inherit how
    a life is kept and ended.

    Why an instance ended is gathered as it happens and turned into one
    :class:`ExitReason` once, when it ends: the first explanation the runtime recorded
    (:meth:`_explain`), else what ended it (a failure, our kill after its grace, its
    process's exit status), else who began its stop (:data:`StopCause`).
    """

    # Slots for what every instance sets (a kind with many instances, the cell, slots its
    # own too: a full instance dict was ~1.5 KB of each idle actor). The class defaults below
    # are not slotted here; a kind that sets one gives it a slot, or keeps a dict.
    __slots__ = ("_explained", "_killed", "_moved", "_stop_cause", "done", "exit_reason",
                 "parent", "path", "shutdown_timeout", "started_at", "state")

    kind: ChildKind
    address: str | None = None
    pid: int | None = None
    node: str | None = None
    gave_up: RestartLimitExceeded | None = None
    restarts = 0
    rolling = False

    def __init__(self, path: str, parent: Parent, shutdown_timeout: float) -> None:
        self.path = path
        self.parent = parent
        self.shutdown_timeout = shutdown_timeout
        self.state = Lifecycle.STARTING
        self.started_at = 0.0
        self.done = trio.Event()  # set as it reaches EXITED
        self.exit_reason: ExitReason | None = None  # set once, as it reaches EXITED
        self._moved: trio.Event | None = None  # made by a wait; set (and dropped) by a move
        self._explained: ExitReason | None = None
        self._stop_cause: StopCause | None = None
        self._killed: str | None = None  # we killed it after its grace: the detail

    @property
    @abc.abstractmethod
    def ref(self) -> ActorRef: ...

    def begin_shutdown(self) -> None:
        """Nothing to start early: :meth:`shutdown` does it all."""
        return  # (a default, not a method left to fill in)

    @abc.abstractmethod
    async def shutdown(self, grace: float) -> None: ...

    def relieve(self) -> None:
        """Nothing waits for a successor here."""
        return  # (a default, not a method left to fill in)

    @property
    def children(self) -> Sequence[Child]:
        return ()

    def replaces(self, child: Child) -> Replacement | None:
        return None

    async def replace_child(self, child: Child) -> bool:
        return False

    # -- the lifecycle ----------------------------------------------------------------------

    def _move(self, state: Lifecycle) -> bool:
        """Move on to ``state``; False (and nothing changes) if it is there or past it."""
        if _ORDER[state] <= _ORDER[self.state]:
            return False
        self.state = state
        if self._moved is not None:
            self._moved.set()
            self._moved = None
        return True

    def _reached(self, state: Lifecycle) -> bool:
        return _ORDER[self.state] >= _ORDER[state]

    async def _wait_for(self, state: Lifecycle) -> None:
        """Return once it reached ``state`` (or a later one)."""
        while not self._reached(state):
            if self._moved is None:
                self._moved = trio.Event()
            await self._moved.wait()

    def _stopping(self, cause: StopCause | None) -> bool:
        """Move on to STOPPING, noting who began the stop; False if it was stopping already
        (or gone). A stop its parent asked for is a shutdown even if the child was stopping
        by itself too: the parent's stop is what a supervisor must not answer with a
        restart, so it outranks the child's own."""
        self._note_stop(cause)
        return self._move(Lifecycle.STOPPING)

    def _note_stop(self, cause: StopCause | None) -> None:
        if _CAUSE_RANK[cause] > _CAUSE_RANK[self._stop_cause]:
            self._stop_cause = cause

    def _explain(self, reason: ExitReason) -> None:
        """Record why it ends, if nothing explained it yet (the first explanation wins)."""
        if self._explained is None:
            self._explained = reason

    def _finish(
        self,
        witness: Witness | None,
        *,
        failure: BaseException | None = None,
        returncode: int | None = None,
        address: str | None = None,
        node: str | None = None,
        report: bool = True,
    ) -> ExitReason:
        """The one way an instance ends: its exit reason is recorded (once), it leaves its
        parent's children, ``witness`` hears of it (``address``: sends there fail saying
        why; ``report``: the system's events get its :class:`ActorExited`), and it reaches
        EXITED (``done`` is set)."""
        assert self.exit_reason is None, f"{self.path} ended twice"
        reason = self.exit_reason = exit_reason(
            explained=self._explained,
            failure=failure,
            killed=self._killed,
            returncode=returncode,
            stop_requested=self._stop_cause in ("asked", "at_once"),
            stopped_itself=self._stop_cause == "itself",
        )
        _leave(self.parent.running, self)
        if witness is not None:
            if address is not None:
                witness.departed(address, self.path, reason)
            if report:
                witness.publish(ActorExited(
                    path=self.path, address=address, pid=self.pid, reason=reason, node=node,
                ))
        self._move(Lifecycle.EXITED)
        self.done.set()
        return reason


def _leave(running: list[Child], child: object) -> None:
    """Take ``child`` off its parent's list, searching from the end: children end the last
    started first (:func:`stop_children`), so stopping N of them costs N steps, not the
    N² of ``list.remove`` (which made stopping 10 000 actors take seconds)."""
    for i in range(len(running) - 1, -1, -1):
        if running[i] is child:
            del running[i]
            return


class Parent(Protocol):
    """Something that starts children and bounds their lifetime.

    ``running``: its children that run (started, not yet exited), in start order; each
    takes itself off as it ends, and :func:`stop_children` stops them the last first."""

    path: str
    running: list[Child]

    @property
    def nursery(self) -> trio.Nursery:
        """Where its children run (a cell opens one when it first starts something)."""
        ...


class Root:
    """A parent that is nothing but a nursery: of a worker's own actor, or of the master's
    runtime actors (which outlive every actor of the system)."""

    __slots__ = ("nursery", "path", "running")

    def __init__(self, path: str, nursery: trio.Nursery) -> None:
        self.path = path
        self.nursery = nursery
        self.running: list[Child] = []


@dataclass(frozen=True)
class Notice:
    """A running child asks its supervisor to replace it now (it drains meanwhile).

    Sent by a worker handle when its process reported an unexpected exception (the suicide
    signal), asked to be replaced, or grew past its memory limit; the supervisor answers by
    starting the replacement and then relieving the old instance (:meth:`Child.relieve`),
    which exits once it has drained.
    """

    child: Child
    reason: ExitReason


class StartChild(Protocol):
    """Start what ``spec`` describes under ``parent``; return it once it is ready.

    Raises ``SpawnError`` (with ``reason`` set) once whatever it started is gone.
    ``notices`` receives the child's requests to be replaced.
    """

    async def __call__(
        self,
        parent: Parent,
        spec: ChildSpec,
        *,
        notices: trio.MemorySendChannel[Notice] | None = None,
    ) -> Child: ...


class SpawnChild(Protocol):
    """``system.spawn``/``ctx.spawn``: an unsupervised (temporary) child, or a given spec."""

    async def __call__(
        self,
        parent: Parent,
        actor_class: type[Actor] | ChildSpec,
        *,
        name: str | None,
        process: bool,
        shutdown: float,
        kwargs: dict[str, Any],
        start_timeout: float = 30.0,
    ) -> ActorRef: ...


class ManageChildren(Protocol):
    """OTP's supervisor API on any supervisor of the system, wherever it runs (given to
    actor contexts; the system's own is :class:`ActorSystem`'s)."""

    async def start_child(self, supervisor_path: str, spec: ChildSpec) -> ActorRef: ...

    async def terminate_child(self, path: str) -> None: ...

    async def restart_child(self, path: str) -> ActorRef: ...

    async def delete_child(self, path: str) -> None: ...

    async def which_children(self, supervisor_path: str) -> list[ChildInfo]: ...

    async def count_children(self, supervisor_path: str) -> ChildCount: ...


async def stop_children(parent: Parent) -> None:
    """Shut down ``parent``'s children, the last started first, each within its timeout.

    Worker processes are all asked to stop first, so that they drain at the same time
    (the stop is bounded by the longest drain, not the sum); then each child is stopped,
    the last started first, as OTP does."""
    for child in reversed(parent.running):
        child.begin_shutdown()
    while parent.running:
        child = parent.running[-1]
        await child.shutdown(child.shutdown_timeout)
        if parent.running and parent.running[-1] is child:
            parent.running.pop()


def walk(
    children: Sequence[Child], parent: Child | None = None
) -> Iterator[tuple[Child | None, Child]]:
    """Every child below ``children`` (``parent``'s; None: the system's), depth first, each
    with the child it is listed under: the one walk of the tree, for status, reload and
    restart. Each list is read as the walk reaches it: a caller that awaits between
    children, and wants the tree of one moment, takes ``list(walk(...))`` first."""
    for child in list(children):
        yield parent, child
        yield from walk(child.children, child)
