"""``ActorContext``: what a running actor reaches through ``self.ctx``."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from ._ref import ActorRef

if TYPE_CHECKING:
    from ._actor import Actor
    from ._cell import Cell

__all__ = ["ActorContext"]


class ActorContext:
    """The running actor's own ref and path, and the children it starts."""

    def __init__(self, cell: Cell) -> None:
        self._cell = cell

    @property
    def ref(self) -> ActorRef:
        """This actor's ref (an address: it names this incarnation)."""
        return self._cell.ref

    @property
    def path(self) -> str:
        """The actor's path in the system, e.g. ``"adder"`` or ``"adder/helper"``."""
        return self._cell.path

    @property
    def node(self) -> str:
        """The id of the process running the actor (``"0"`` is the master)."""
        return self._cell.node.id

    async def spawn(
        self,
        actor_class: type[Actor],
        *,
        name: str | None = None,
        process: bool = False,
        shutdown: float = 5.0,
        **kwargs: Any,
    ) -> ActorRef:
        """Start a child of this actor; it is stopped before this actor's ``cleanup``.

        Same arguments as ``system.spawn``; the child's path is ``<this path>/<name>``.
        """
        from ._spawn import spawn

        return await spawn(
            self._cell, self._cell.node, actor_class, name=name, process=process,
            shutdown=shutdown, kwargs=kwargs,
        )

    def ref_to(self, path: str) -> ActorRef:
        """A ref to whatever actor holds ``path`` when a message is sent."""
        return ActorRef(self._cell.node, path=path)

    def start_soon(
        self, function: Callable[..., Awaitable[object]], *args: object, name: str | None = None
    ) -> None:
        """Run a background task for as long as this actor lives (cancelled when it stops,
        after ``drain``). An exception escaping it crashes the actor."""

        async def guarded() -> None:
            try:
                await function(*args)
            except Exception as exc:
                self._cell.fail(exc)

        self._cell.nursery.start_soon(guarded, name=name or getattr(function, "__name__", None))

    def crash(self, exc: BaseException) -> None:
        """Crash this actor as if a handler had raised ``exc`` (for a process actor: the
        suicide signal; its replacement starts while it drains)."""
        self._cell.fail(exc)

    def stop(self) -> None:
        """Stop this actor once the messages already in its mailbox are handled.

        Its exit is ``normal``: a ``transient`` child that stops itself is not restarted.
        """
        self._cell.stopped_itself = True
        self._cell.stop()
