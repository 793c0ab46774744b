"""Starting one child (an actor, a worker process, a command, or a supervisor) under a parent.

:class:`Starter` holds what starting needs in one process (its router, how processes start,
and how each kind of supervisor spec runs) and hands its :meth:`Starter.start_child` and
:meth:`Starter.spawn` to supervisors and actor contexts, which never import it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

import trio

from .._base._actor import Actor
from .._base._errors import ActorError, SpawnError
from .._base._events import crash_reason
from .._base._ref import ActorRef
from .._base._shared import State
from .._base._spec import (
    ChildSpec,
    CommandSpec,
    SupervisorSpec,
    WorkerSpec,
    grace_of,
    validate_name,
    worker,
)
from .._base._tree import Child, Notice, Parent, SpawnChild
from .._messaging._router import Router
from .._running._cell import Cell
from .._running._command import CommandHandle, ListeningSockets
from .._running._process import ProcessHandle
from .._running._processes import OutputSink, Spawner
from ._places import child_path
from ._runtime import RuntimeChildren
from ._supervisor import Supervisor

__all__ = ["Runnable", "Starter", "SupervisorKind"]


class Runnable(Child, Protocol):
    """A child that starts the trio way: ``await nursery.start(child.run)``."""

    async def run(self, *, task_status: trio.TaskStatus[Any] = ...) -> None: ...


async def _start_under(parent: Parent, child: Runnable) -> None:
    """Start ``child`` under ``parent``: listed among its children, then ``run`` until it
    reports started. A child that ran takes itself off the list when it ends; one that
    failed before it could (its start cancelled, the nursery closed) is taken off here."""
    parent.running.append(child)
    try:
        await parent.nursery.start(child.run)
    except BaseException:
        if child in parent.running:
            parent.running.remove(child)
        raise


SupervisorKind = Callable[[SupervisorSpec, Parent, str], Runnable]
"""Builds the running form of a kind of supervisor spec (spec, parent, path)."""


class Starter:
    """Starts children in one process.

    ``kinds`` maps a :class:`SupervisorSpec` subclass to what runs it (a listener spec to a
    listener); a plain spec runs as a :class:`Supervisor`. ``spawner`` starts worker
    processes.
    """

    def __init__(
        self,
        router: Router,
        spawner: Spawner,
        kinds: Mapping[type[SupervisorSpec], SupervisorKind] | None = None,
        *,
        state: State | None = None,
        state_service: str | None = None,
        output: OutputSink | None = None,
    ) -> None:
        self.router = router
        self.spawner = spawner
        self.kinds = dict(kinds or {})
        self.state = state  # what actors of this process reach as ctx.state
        # The worker processes and commands started from this process, while they run.
        self.processes: set[ProcessHandle | CommandHandle] = set()
        self.state_service = state_service  # its address, for workers started from here
        self.output = output  # where the workers' output goes (None: where ours does)
        # Where commands' sockets come from (the listeners' layer sets it; None: nowhere).
        self.listening: ListeningSockets | None = None
        # The plain supervisors of this process, by path, for the runtime operations
        # (start_child, terminate_child, ...): each is listed while it runs.
        self.supervisors: dict[str, Supervisor] = {}
        self.children = RuntimeChildren(router, self.supervisors)  # what ctx.start_child uses
        # One bound method for every cell (an attribute read makes a new one each time).
        self._spawn_child: SpawnChild = self.spawn

    async def start_child(
        self,
        parent: Parent,
        spec: ChildSpec,
        *,
        notices: trio.MemorySendChannel[Notice] | None = None,
    ) -> Child:
        """Start what ``spec`` describes as a child of ``parent``; return it once it is ready.

        Raises :class:`SpawnError` (with ``reason`` set) once whatever it started is gone.
        """
        path = child_path(parent.path, spec.name)
        if self.router.names.taken(path):
            raise SpawnError(f"the name {path!r} is already taken")
        if isinstance(spec, SupervisorSpec):
            return await self._start_supervisor(parent, spec, path)
        if isinstance(spec, CommandSpec):
            return await self._start_command(parent, spec, path)
        if spec.process:
            return await self._start_worker(parent, spec, path, notices)
        return await self._start_cell(parent, spec, path)

    def supervisor(self, spec: SupervisorSpec, parent: Parent, path: str) -> Runnable:
        """The running form of ``spec`` (not started yet)."""
        kind = self.kinds.get(type(spec))
        if kind is not None:
            return kind(spec, parent, path)
        sup = Supervisor(self.router, spec, parent=parent, path=path,
                         start_child=self.start_child)
        self.supervisors[path] = sup
        parent.nursery.start_soon(self._unlist, sup)
        return sup

    async def _unlist(self, sup: Supervisor) -> None:
        await sup.done.wait()
        if self.supervisors.get(sup.path) is sup:
            del self.supervisors[sup.path]

    async def _start_supervisor(self, parent: Parent, spec: SupervisorSpec, path: str) -> Child:
        sup = self.supervisor(spec, parent, path)
        try:
            await _start_under(parent, sup)
        except ActorError as exc:
            if isinstance(exc, SpawnError):
                exc.reason = exc.reason or sup.exit_reason
                raise  # as it is: a BindError stays a BindError up the tree
            error = SpawnError(f"supervisor {path} failed to start: {exc}")
            error.reason = sup.exit_reason or crash_reason(exc)
            raise error from exc
        return sup

    async def _start_worker(
        self,
        parent: Parent,
        spec: WorkerSpec,
        path: str,
        notices: trio.MemorySendChannel[Notice] | None,
    ) -> Child:
        assert spec.arguments_json is not None
        handle = ProcessHandle(
            self.router, spec.actor_class, path=path, arguments=spec.arguments_json,
            parent=parent, spawner=self.spawner, shutdown_timeout=grace_of(spec.shutdown),
            start_timeout=spec.start_timeout, heartbeat_timeout=spec.heartbeat_timeout,
            notices=notices, state_service=self.state_service, max_memory=spec.max_memory,
            output=self.output,
        )
        await self._start_process(parent, handle)
        return handle

    async def _start_process(self, parent: Parent, handle: ProcessHandle | CommandHandle
                             ) -> None:
        """Start ``handle`` under ``parent``, listed (for ``kill_all``) while it runs."""
        self.processes.add(handle)
        try:
            await _start_under(parent, handle)
        except BaseException:
            self.processes.discard(handle)  # it never ran, or it is gone already
            raise

        async def forget() -> None:
            await handle.done.wait()
            self.processes.discard(handle)

        parent.nursery.start_soon(forget)

    async def _start_command(self, parent: Parent, spec: CommandSpec, path: str) -> Child:
        handle = CommandHandle(
            self.router, ActorRef(self.router.outbox, path=path), path=path, argv=spec.argv,
            env=spec.env, cwd=spec.cwd, stdin=spec.stdin, sockets=spec.sockets,
            listening=self.listening, parent=parent, shutdown_timeout=grace_of(spec.shutdown),
            output=self.output, relays=self.router.nursery,
        )
        await self._start_process(parent, handle)
        return handle

    def kill_all(self) -> None:
        """SIGKILL every worker and command this process started (a stop 'at once')."""
        for handle in list(self.processes):
            handle.kill_now()

    async def _start_cell(self, parent: Parent, spec: WorkerSpec, path: str) -> Cell:
        try:
            actor = spec.actor_class(**spec.arguments)
        except Exception as exc:
            error = SpawnError(f"{spec.actor_class.__qualname__}(...) raised {exc!r}")
            error.reason = crash_reason(exc)
            raise error from exc
        cell = Cell(
            self.router, actor, path=path, parent=parent,
            shutdown_timeout=grace_of(spec.shutdown), start_timeout=spec.start_timeout,
            spawn=self._spawn_child, shared_state=self.state, manage_children=self.children,
        )
        if not cell.has_setup:  # ready as it exists: no wait for its task to run
            # Two passes of the scheduler still, as nursery.start took: a loop of spawns
            # lets the rest run, and an events() subscriber reading one event a pass keeps
            # up with the two (started, ready) each spawn publishes.
            await trio.lowlevel.checkpoint()
            await trio.lowlevel.checkpoint()
            parent.running.append(cell)
            try:
                cell.start_at_once(parent.nursery)
            except BaseException:
                parent.running.remove(cell)
                raise
            return cell
        try:
            await _start_under(parent, cell)
        except SpawnError as exc:
            exc.reason = exc.reason or cell.exit_reason
            raise
        except Exception as exc:
            error = SpawnError(f"actor {path} failed to start: {exc!r}")
            error.reason = cell.exit_reason or crash_reason(exc)
            raise error from exc
        return cell

    async def spawn(
        self,
        parent: Parent,
        actor_class: type[Actor] | ChildSpec,
        *,
        name: str | None,
        process: bool,
        shutdown: float,
        kwargs: dict[str, Any],
        start_timeout: float = 30.0,
    ) -> ActorRef:
        """``system.spawn``/``ctx.spawn``: an unsupervised (temporary) child, or a given spec."""
        if isinstance(actor_class, WorkerSpec | SupervisorSpec | CommandSpec):
            spec: ChildSpec = actor_class
        else:
            if not (isinstance(actor_class, type) and issubclass(actor_class, Actor)):
                raise TypeError(
                    f"spawn() takes an Actor subclass or a spec, not {actor_class!r}"
                )
            if name is None:
                name = f"{actor_class.__name__}-{self.router.next_actor_id()}"
            try:
                validate_name(name)
            except ValueError as exc:
                raise SpawnError(f"invalid actor name: {exc}") from None
            spec = worker(
                actor_class, name=name, process=process, restart="temporary",
                shutdown=shutdown, start_timeout=start_timeout, **kwargs,
            )
        if isinstance(parent, Supervisor):
            child = await parent.add_child(spec)
        else:
            child = await self.start_child(parent, spec)
        return child.ref
