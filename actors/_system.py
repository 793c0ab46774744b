"""``open_system``: the master's root, and the ``ActorSystem`` handle it yields."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio

from protocol import DEFAULT_MAX_FRAME_SIZE

from ._actor import Actor
from ._cell import Child, stop_children
from ._node import MASTER_NODE, Node
from ._ref import ActorRef
from ._spawn import spawn

__all__ = ["ActorSystem", "open_system"]

log = logging.getLogger("actors")


class ActorSystem:
    """The running system, as seen from the master. Get one from :func:`open_system`."""

    def __init__(self, node: Node, nursery: trio.Nursery) -> None:
        self._node = node
        self.path = ""
        self.nursery = nursery
        self.children: list[Child] = []

    async def spawn(
        self,
        actor_class: type[Actor],
        *,
        name: str | None = None,
        process: bool = False,
        shutdown: float = 5.0,
        start_timeout: float = 30.0,
        **kwargs: Any,
    ) -> ActorRef:
        """Start a top-level actor and return its ref once it is ready.

        ``process=True`` runs it in a worker process of its own; ``kwargs`` go to its
        ``__init__`` and are validated against its signature first (and must be JSON for a
        process), so bad arguments raise :class:`InvalidArguments` before anything starts.
        A failed start raises :class:`SpawnError` once any process it started is reaped.
        ``shutdown`` bounds how long the actor may take to stop when the system closes
        (then its worker is killed); ``start_timeout`` bounds its start.
        """
        return await spawn(
            self, self._node, actor_class, name=name, process=process, shutdown=shutdown,
            kwargs=kwargs, start_timeout=start_timeout,
        )

    def ref(self, path: str) -> ActorRef:
        """A ref to whatever actor holds ``path`` (``"adder"``, ``"adder/helper"``).

        It is resolved each time a message is sent, so it follows the name to a restarted
        actor; sending to a path nobody holds raises :class:`ActorNotFound`.
        """
        return ActorRef(self._node, path=path)

    def names(self) -> dict[str, str]:
        """Every registered path and the address of the actor holding it."""
        return dict(self._node.names)

    async def stop(self) -> None:
        """Stop every actor, the last started first (as leaving ``open_system`` does)."""
        await stop_children(self)


@asynccontextmanager
async def open_system(
    *, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE
) -> AsyncIterator[ActorSystem]:
    """Run an actor system in this process (the master) for the duration of the block.

    Leaving the block stops every actor, the last started first: each gets a stop request
    and its ``shutdown`` seconds to finish, then its worker process is killed; every worker
    is reaped before this returns. Cancellation and errors inside the block do the same.
    """
    async with trio.open_nursery() as nursery:
        node = Node(MASTER_NODE, nursery, max_frame_size=max_frame_size)
        system = ActorSystem(node, nursery)
        try:
            yield system
        finally:
            with trio.CancelScope(shield=True):
                await stop_children(system)
            nursery.cancel_scope.cancel()
