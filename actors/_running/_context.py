"""``CellContext``: the :class:`ActorContext` of an actor running in a cell (``self.ctx``)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import trio

from .._base._actor import Actor, SpecLike
from .._base._children import ChildCount, ChildInfo
from .._base._events import Demonitor, Monitor, Monitoring
from .._base._ref import ActorRef, split_node
from .._base._shared import State
from .._base._spec import ChildSpec, SupervisorSpec, WorkerSpec
from .._base._tree import ManageChildren, Parent, SpawnChild, StopCause
from .._messaging._mailboxes import current_actor
from .._messaging._router import Router

__all__ = ["MONITORS", "CellContext", "ContextHost"]

MONITORS = "@monitors"
"""The path of the master's monitors' actor, which every process reaches by it."""


class ContextHost(Parent, Protocol):
    """What an actor's context reaches of its cell (the parent of what the actor spawns)."""

    router: Router
    spawn: SpawnChild
    shared_state: State | None
    manage_children: ManageChildren | None

    @property
    def ref(self) -> ActorRef: ...

    async def hosting(self) -> trio.Nursery: ...

    def start_task(self, function: Callable[[], Awaitable[object]], name: str | None) -> None:
        ...

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
        await cell.hosting()  # (its children run in its nursery: open it first)
        return await cell.spawn(
            cell, actor_class, name=name, process=process, shutdown=shutdown, kwargs=kwargs
        )

    def ref_to(self, path: str) -> ActorRef:
        local, node, _ = split_node("@" + path)  # "path@node": an actor of another master
        return ActorRef(self._cell.router.outbox, path=local[1:], node=node)

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

        cell.start_task(guarded, name or getattr(function, "__name__", None))

    def crash(self, exc: BaseException) -> None:
        self._cell.fail(exc)

    def stop(self) -> None:
        self._cell.stop("itself")

    def request_replacement(self, reason: str) -> None:
        self._cell.request_replacement(reason)

    # -- children managed at runtime, and monitors ---------------------------------------------

    def _children(self) -> ManageChildren:
        children = self._cell.manage_children
        if children is None:
            raise RuntimeError("this actor runs without the runtime's children operations")
        return children

    async def start_child(self, supervisor_path: str, spec: SpecLike) -> ActorRef:
        if not isinstance(spec, WorkerSpec | SupervisorSpec):
            raise TypeError(f"start_child takes a worker(...) or supervisor(...) spec, "
                            f"not {spec!r}")
        return await self._children().start_child(supervisor_path, spec)

    async def terminate_child(self, path: str) -> None:
        await self._children().terminate_child(path)

    async def restart_child(self, path: str) -> ActorRef:
        return await self._children().restart_child(path)

    async def delete_child(self, path: str) -> None:
        await self._children().delete_child(path)

    async def which_children(self, supervisor_path: str) -> list[ChildInfo]:
        return await self._children().which_children(supervisor_path)

    async def count_children(self, supervisor_path: str) -> ChildCount:
        return await self._children().count_children(supervisor_path)

    async def monitor(self, ref: ActorRef) -> str:
        outbox = self._cell.router.outbox
        if ref.node is not None:  # an actor of another master: the cluster watches it
            return await outbox.remote.monitor(ref, self._cell.ref)
        monitors = ActorRef(outbox, path=MONITORS)
        answer = await monitors.ask(Monitor(watcher=self._cell.ref, target=ref), Monitoring)
        return answer.id

    async def demonitor(self, monitor_id: str) -> None:
        outbox = self._cell.router.outbox
        if ":" in monitor_id:  # (the cluster's ids are "node:incarnation:n"; ours, "n")
            await outbox.remote.demonitor(monitor_id)
            return
        await ActorRef(outbox, path=MONITORS).ask(Demonitor(id=monitor_id))
