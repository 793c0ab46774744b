"""What :class:`ActorSystem` offers on top of the tree it started: OTP's supervisor API on
any supervisor of the system (children managed at runtime), and monitors from the master.

A base class of :class:`ActorSystem`, kept apart so that each file stays one concern: the
work is done by the process's :class:`RuntimeChildren` and the master's :class:`Monitors`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio

from .._base._children import ChildCount, ChildInfo
from .._base._events import ActorDown
from .._base._ref import ActorRef
from .._base._spec import ChildSpec
from .._supervision._monitors import Monitors
from .._supervision._runtime import RuntimeChildren

__all__ = ["RuntimeOperations"]


class RuntimeOperations:
    """Children managed at runtime, and monitors, as the master sees them."""

    _children: RuntimeChildren
    _monitors: Monitors

    async def start_child(self, supervisor_path: str, spec: ChildSpec) -> ActorRef:
        """Start ``spec`` (``worker(...)`` or ``supervisor(...)``) as a new child of the
        supervisor at ``supervisor_path``, wherever it runs (the master, or a worker
        process's own tree); its ref once it is ready. It is supervised as its spec says.

        Raises :class:`ActorNotFound` (no running supervisor there), :class:`ChildExists`
        (a child of that name, running or terminated), or :class:`SpawnError` (its start
        failed: nothing of it is kept)."""
        return await self._children.start_child(supervisor_path, spec)

    async def terminate_child(self, path: str) -> None:
        """Stop the supervised child at ``path`` in order (it drains, within its
        ``shutdown``); it is not restarted. Its spec is kept (``restart_child`` starts it
        again, ``delete_child`` forgets it), except a temporary child's, as in OTP."""
        await self._children.terminate_child(path)

    async def restart_child(self, path: str) -> ActorRef:
        """Start the terminated child at ``path`` again; :class:`ChildRunning` if it runs."""
        return await self._children.restart_child(path)

    async def delete_child(self, path: str) -> None:
        """Forget the terminated child at ``path``; :class:`ChildRunning` if it runs."""
        await self._children.delete_child(path)

    async def which_children(self, supervisor_path: str) -> list[ChildInfo]:
        """A row per child of the supervisor at ``supervisor_path`` (name, path, kind,
        pid, state, restarts), in the order of its spec."""
        return await self._children.which_children(supervisor_path)

    async def count_children(self, supervisor_path: str) -> ChildCount:
        """The supervisor's specs, active children, and how many are supervisors/workers."""
        return await self._children.count_children(supervisor_path)

    @asynccontextmanager
    async def monitor(self, ref: ActorRef) -> AsyncIterator[trio.MemoryReceiveChannel[ActorDown]]:
        """Watch ``ref``'s instance from the master: the channel gets its
        :class:`ActorDown` when it ends (``noproc`` at once if it is gone); the monitor
        is removed when the block ends.

        ::

            async with system.monitor(ref) as down:
                print((await down.receive()).reason)
        """
        async with self._monitors.watch(ref) as down:
            yield down
