"""The supervision tree as interfaces: what a parent knows of its children, and back.

A child is an in-process cell, a worker process, or a supervisor; a parent is a cell, a
supervisor, or the system's root. Starting children is a capability injected into whoever
needs it (:class:`StartChild`, :class:`SpawnChild`), so that the layers that run actors never
import the layers that compose them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol

import trio

from ._errors import RestartLimitExceeded
from ._events import ExitReason
from ._ref import ActorRef
from ._spec import ChildSpec

if TYPE_CHECKING:
    from ._actor import Actor

__all__ = [
    "Child",
    "ChildBase",
    "ChildKind",
    "Notice",
    "Parent",
    "Root",
    "SpawnChild",
    "StartChild",
    "stop_children",
]

ChildKind = Literal["supervisor", "listener", "worker", "actor"]
"""What a child is, for status: a (plain) supervisor, a listener, a worker process's actor,
an actor in this process."""


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

    @property
    def kind(self) -> ChildKind: ...

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


class ChildBase:
    """What every kind of child shares, and the answers of a kind that has nothing to say.

    A base class rather than defaults in :class:`Child` itself: parents and test doubles
    see the Protocol (what they may use), and only the kinds of this package inherit how
    it is kept.
    """

    kind: ChildKind
    address: str | None = None
    pid: int | None = None
    gave_up: RestartLimitExceeded | None = None

    def begin_shutdown(self) -> None:
        """Nothing to start early: :meth:`shutdown` does it all."""

    def relieve(self) -> None:
        """Nothing waits for a successor here."""


class Parent(Protocol):
    """Something that starts children and bounds their lifetime."""

    path: str
    nursery: trio.Nursery
    children: list[Child]


class Root:
    """A parent that is nothing but a nursery: of a worker's own actor, or of the master's
    runtime actors (which outlive every actor of the system)."""

    __slots__ = ("children", "nursery", "path")

    def __init__(self, path: str, nursery: trio.Nursery) -> None:
        self.path = path
        self.nursery = nursery
        self.children: list[Child] = []


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


async def stop_children(parent: Parent) -> None:
    """Shut down ``parent``'s children, the last started first, each within its timeout.

    Worker processes are all asked to stop first, so that they drain at the same time
    (the stop is bounded by the longest drain, not the sum); then each child is stopped,
    the last started first, as OTP does."""
    for child in reversed(parent.children):
        child.begin_shutdown()
    while parent.children:
        child = parent.children[-1]
        await child.shutdown(child.shutdown_timeout)
        if parent.children and parent.children[-1] is child:
            parent.children.pop()
