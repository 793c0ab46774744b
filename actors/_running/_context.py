"""``CellContext``: the :class:`ActorContext` of an actor running in a cell (``self.ctx``)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from .._base._actor import Actor
from .._base._ref import ActorRef
from .._base._shared import State
from .._base._spec import ChildSpec
from .._base._tree import Parent, SpawnChild, StopCause
from .._messaging._mailboxes import current_actor
from .._messaging._router import Router

__all__ = ["CellContext", "ContextHost"]


class ContextHost(Parent, Protocol):
    """What an actor's context reaches of its cell (the parent of what the actor spawns)."""

    router: Router
    spawn: SpawnChild
    shared_state: State | None

    @property
    def ref(self) -> ActorRef: ...

    def fail(self, exc: BaseException) -> None: ...

    def stop(self, cause: StopCause | None = None) -> None: ...

    def request_replacement(self, reason: str) -> None: ...


class CellContext:
    """The :class:`ActorContext` of an actor running in a cell."""

    __slots__ = ("_cell",)

    def __init__(self, cell: ContextHost) -> None:
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
        return ActorRef(self._cell.router.outbox, path=path)

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
