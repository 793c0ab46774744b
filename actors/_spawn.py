"""Starting one child (an actor, a worker process, or a supervisor) under a parent."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ._actor import Actor
from ._cell import Cell, Child, Parent, crash_reason
from ._errors import ActorError, SpawnError
from ._ref import ActorRef
from ._spec import ChildSpec, SupervisorSpec, WorkerSpec, grace_of, validate_name, worker

if TYPE_CHECKING:
    from ._node import Node
    from ._process import ProcessChild

__all__ = ["child_path", "spawn", "start_child"]


def child_path(parent: Parent, name: str) -> str:
    try:
        validate_name(name)
    except ValueError as exc:
        raise SpawnError(f"invalid actor name: {exc}") from None
    return f"{parent.path}/{name}" if parent.path else name


async def start_child(
    parent: Parent,
    node: Node,
    spec: ChildSpec,
    *,
    on_suicide: Callable[[ProcessChild], None] | None = None,
) -> Child:
    """Start what ``spec`` describes as a child of ``parent``; return it once it is ready.

    Raises :class:`SpawnError` (with ``reason`` set) once whatever it started is gone.
    """
    path = child_path(parent, spec.name)
    if node.name_taken(path):
        raise SpawnError(f"the name {path!r} is already taken")
    if isinstance(spec, SupervisorSpec):
        from ._listener import Listener, ListenerSpec
        from ._supervisor import Supervisor

        if isinstance(spec, ListenerSpec):
            sup: Supervisor = Listener(node, spec, parent=parent, path=path)
        else:
            sup = Supervisor(node, spec, parent=parent, path=path)
        parent.children.append(sup)
        try:
            await parent.nursery.start(sup.run)
        except ActorError as exc:
            if isinstance(exc, SpawnError):
                exc.reason = exc.reason or sup.exit_reason
                raise  # as it is: a BindError stays a BindError up the tree
            error = SpawnError(f"supervisor {path} failed to start: {exc}")
            error.reason = sup.exit_reason or crash_reason(exc)
            raise error from exc
        return sup
    if spec.process:
        from ._process import ProcessChild

        assert spec.arguments_json is not None
        child = ProcessChild(
            node, spec.actor_class, path=path, arguments=spec.arguments_json, parent=parent,
            shutdown_timeout=grace_of(spec.shutdown), start_timeout=spec.start_timeout,
            heartbeat_timeout=spec.heartbeat_timeout,
        )
        child.on_suicide = on_suicide
        parent.children.append(child)
        parent.nursery.start_soon(child.run)
        try:
            await child.wait_ready()
        except SpawnError as exc:
            exc.reason = child.exit_reason
            raise
        return child
    return await _start_cell(parent, node, spec, path)


async def _start_cell(parent: Parent, node: Node, spec: WorkerSpec, path: str) -> Cell:
    try:
        actor = spec.actor_class(**spec.arguments)
    except Exception as exc:
        error = SpawnError(f"{spec.actor_class.__qualname__}(...) raised {exc!r}")
        error.reason = crash_reason(exc)
        raise error from exc
    cell = Cell(node, actor, path=path, parent=parent, shutdown_timeout=grace_of(spec.shutdown))
    parent.children.append(cell)
    try:
        await parent.nursery.start(cell.run)
    except Exception as exc:
        error = SpawnError(f"actor {path} failed to start: {exc!r}")
        error.reason = cell.exit_reason or crash_reason(exc)
        raise error from exc
    finally:
        if not cell.accepting and cell in parent.children:
            parent.children.remove(cell)
    return cell


async def spawn(
    parent: Parent,
    node: Node,
    actor_class: type[Actor] | ChildSpec,
    *,
    name: str | None,
    process: bool,
    shutdown: float,
    kwargs: dict[str, Any],
    start_timeout: float = 30.0,
) -> ActorRef:
    """``system.spawn``/``ctx.spawn``: an unsupervised (temporary) child, or a given spec."""
    if isinstance(actor_class, WorkerSpec | SupervisorSpec):
        spec: ChildSpec = actor_class
    else:
        if not (isinstance(actor_class, type) and issubclass(actor_class, Actor)):
            raise TypeError(f"spawn() takes an Actor subclass or a spec, not {actor_class!r}")
        if name is None:
            name = f"{actor_class.__name__}-{node.next_actor_id()}"
        try:
            validate_name(name)
        except ValueError as exc:
            raise SpawnError(f"invalid actor name: {exc}") from None
        spec = worker(
            actor_class, name=name, process=process, restart="temporary", shutdown=shutdown,
            start_timeout=start_timeout, **kwargs,
        )
    adder = getattr(parent, "add_child", None)
    child = await (adder(spec) if adder is not None else start_child(parent, node, spec))
    return child.ref
