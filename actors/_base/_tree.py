"""The supervision tree as interfaces: what a parent knows of its children, and back.

A child is an in-process cell, a worker process, or a supervisor; a parent is a cell, a
supervisor, or the system's root. Starting children is a capability injected into whoever
needs it (:class:`StartChild`, :class:`SpawnChild`), so that the layers that run actors never
import the layers that compose them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import trio

from ._events import ExitReason
from ._ref import ActorRef
from ._spec import ChildSpec

if TYPE_CHECKING:
    from ._actor import Actor

__all__ = ["Child", "Notice", "Parent", "Root", "SpawnChild", "StartChild", "stop_children"]


class Child(Protocol):
    """What a parent knows of a child it started (a cell, a worker, a supervisor)."""

    path: str
    shutdown_timeout: float
    done: trio.Event
    started_at: float
    exit_reason: ExitReason | None

    @property
    def ref(self) -> ActorRef: ...

    async def shutdown(self, grace: float) -> None: ...


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
    signal); the supervisor answers by starting the replacement and then ``release()``-ing
    the old instance, which exits once it has drained.
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
        begin = getattr(child, "begin_shutdown", None)
        if begin is not None:
            begin()
    while parent.children:
        child = parent.children[-1]
        await child.shutdown(child.shutdown_timeout)
        if parent.children and parent.children[-1] is child:
            parent.children.pop()
