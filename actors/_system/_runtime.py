"""What :class:`ActorSystem` offers on the tree it started: replacing and resizing its
parts, OTP's supervisor API on any supervisor of the system (children managed at
runtime), and monitors from the master.

A base class of :class:`ActorSystem`, kept apart so that each file stays one concern: the
work is done by the process's :class:`RuntimeChildren` and the master's :class:`Monitors`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager

import trio

from .._base._children import ChildCount, ChildInfo
from .._base._errors import ActorNotFound, ReloadFailed
from .._base._events import ActorDown
from .._base._ref import ActorRef
from .._base._spec import ChildSpec
from .._base._tree import Child, Lifecycle, walk
from .._listening._listener import Listener
from .._supervision._monitors import Monitors
from .._supervision._runtime import RuntimeChildren
from .._supervision._start import Starter

__all__ = ["RuntimeOperations", "did_you_mean"]


class RuntimeOperations:
    """Operations on the running tree, as the master sees them: replacing and resizing
    (``restart``, ``scale``), children managed at runtime, and monitors."""

    running: list[Child]
    _children: RuntimeChildren
    _monitors: Monitors
    _listeners: dict[str, Listener]
    _starter: Starter

    async def restart(self, path: str) -> None:
        """Replace the supervised actor at ``path`` (a listener: all its acceptors): the new
        one is started, then the old one stops (drains). A terminated child is started
        again (``restart_child``)."""
        supervised: list[str] = []
        for parent, child in walk(self.running):
            replaced_by = None if parent is None else parent.replaces(child)
            if replaced_by is not None:
                supervised.append(child.path)
            if child.path != path:
                continue
            if child.rolling:  # it stays: its parts are replaced one at a time
                for part in list(child.children):
                    if part.state is Lifecycle.RESTARTING or child.replaces(part) is None:
                        continue
                    if not await child.replace_child(part):
                        raise ReloadFailed(f"the new {part.path} did not start; the old one "
                                           "keeps serving (see the log for why)")
                return
            if parent is not None and replaced_by is not None:
                if not await parent.replace_child(child):
                    raise ReloadFailed(f"the new {path} did not start; the old one runs on")
                return
        try:
            await self.restart_child(path)  # a terminated child (or one in a worker's tree)
            return
        except ActorNotFound:
            pass
        raise ActorNotFound(f"no supervised actor at {path!r}" + (
            did_you_mean(path, supervised) or " (restart needs one)"))

    async def scale(self, path: str, count: int) -> None:
        """Run ``count`` acceptors under the listener at ``path``, or ``count`` members in
        the pool there (new ones start and take work; removed ones drain), as gunicorn's
        TTIN/TTOU. If a new one does not start, the ones started for this call are stopped
        again (:class:`SpawnError`)."""
        listener = self._listeners.get(path)
        if listener is not None:
            await listener.scale(count)
            return
        try:
            await self._children.scale(path, count)
        except ActorNotFound:
            suggestion = did_you_mean(path, [*self._listeners, *self._starter.supervisors])
            raise ActorNotFound(f"no listener at {path!r}{suggestion}, nor a pool") from None

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
        if ref.node is not None:
            raise ValueError(
                f"system.monitor watches actors of this master, not {ref!r}: watch an actor "
                "of another node from an actor (ctx.monitor), or with system.cluster.monitor"
            )
        async with self._monitors.watch(ref) as down:
            yield down


def did_you_mean(path: str, paths: Iterable[str]) -> str:
    """`` (did you mean 'root/echo'?)`` when exactly one of ``paths`` ends with ``path``
    (given without its parents), else nothing."""
    endings = sorted({known for known in paths if known.endswith("/" + path)})
    return f" (did you mean {endings[0]!r}?)" if len(endings) == 1 else ""
