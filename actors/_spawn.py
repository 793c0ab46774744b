"""Starting an actor as a child of a cell or of the system root."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._actor import Actor
from ._arguments import arguments_to_json, validate_arguments
from ._cell import Cell, Parent
from ._errors import ActorError, SpawnError
from ._ref import ActorRef

if TYPE_CHECKING:
    from ._node import Node

__all__ = ["spawn"]

_FORBIDDEN = frozenset("/|@")


def child_path(parent: Parent, name: str) -> str:
    if not name or _FORBIDDEN & set(name) or name.strip() != name:
        raise SpawnError(f"invalid actor name {name!r}: it must be non-empty, without / | @")
    return f"{parent.path}/{name}" if parent.path else name


async def spawn(
    parent: Parent,
    node: Node,
    actor_class: type[Actor],
    *,
    name: str | None,
    process: bool,
    shutdown: float,
    kwargs: dict[str, Any],
    start_timeout: float = 30.0,
) -> ActorRef:
    """Start ``actor_class`` under ``parent`` and return its ref once it is ready."""
    if not (isinstance(actor_class, type) and issubclass(actor_class, Actor)):
        raise TypeError(f"spawn() takes an Actor subclass, not {actor_class!r}")
    if shutdown < 0:
        raise ValueError("shutdown must be >= 0 seconds")
    if name is None:
        name = f"{actor_class.__name__}-{node.next_actor_id()}"
    path = child_path(parent, name)
    if node.name_taken(path):
        raise SpawnError(f"the name {path!r} is already taken")
    if process:
        from ._process import ProcessChild

        arguments = arguments_to_json(actor_class, kwargs)
        child = ProcessChild(
            node, actor_class, path=path, arguments=arguments, parent=parent,
            shutdown_timeout=shutdown, start_timeout=start_timeout,
        )
        parent.children.append(child)
        parent.nursery.start_soon(child.run)
        return await child.wait_ready()
    validate_arguments(actor_class, kwargs)
    try:
        actor = actor_class(**kwargs)
    except Exception as exc:
        raise SpawnError(f"{actor_class.__qualname__}(...) raised {exc!r}") from exc
    cell = Cell(node, actor, path=path, parent=parent, shutdown_timeout=shutdown)
    parent.children.append(cell)
    try:
        ref: ActorRef = await parent.nursery.start(cell.run)
    except ActorError:
        raise
    except Exception as exc:
        raise SpawnError(f"actor {path} failed to start: {exc!r}") from exc
    finally:
        if not cell.accepting and cell in parent.children:
            parent.children.remove(cell)
    return ref
