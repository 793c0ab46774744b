"""Children managed at runtime, on any supervisor of the system, from any process.

:class:`RuntimeChildren` is a process's :class:`ManageChildren`: an operation on a
supervisor of this process is done here; any other is a :class:`ChildRequest` to the process
that runs it. A worker sends it to the master's service (``@children``); the master finds the
worker process whose tree holds the supervisor by the name of that process's service
(``<worker path>/@children``), the one with the longest path above it. Each process runs its
service as an actor (:class:`ChildrenService`), which answers what it does here; a worker's
never passes a request on, so a request makes at most two hops.

Specs travel as :class:`WorkerWire`/:class:`SupervisorWire`: an actor class by its import
path, its arguments as JSON (so an in-process actor given to another process needs JSON
arguments too).
"""

from __future__ import annotations

import dataclasses
import importlib

from .._base._actor import Actor, handler
from .._base._arguments import arguments_from_json, arguments_to_json
from .._base._children import (
    BackoffWire,
    ChildAnswer,
    ChildCount,
    ChildInfo,
    ChildRequest,
    SpecWire,
    SupervisorWire,
    WorkerWire,
    answer_for,
    raise_for,
)
from .._base._errors import ActorError, ActorNotFound, SpawnError
from .._base._ref import ActorRef
from .._base._spec import (
    Backoff,
    ChildSpec,
    PoolSpec,
    SupervisorSpec,
    WorkerSpec,
    pool,
    supervisor,
    worker,
)
from .._messaging._outbox import MASTER_NODE
from .._messaging._router import Router
from .._running._processes import class_path
from ._supervisor import Supervisor

__all__ = [
    "SERVICE",
    "ChildrenService",
    "RuntimeChildren",
    "remove_child",
    "scale_pool",
    "spec_from_wire",
    "spec_to_wire",
]

SERVICE = "@children"
"""The name of a process's service: the master's as is, a worker's below its path."""


class RuntimeChildren:
    """The runtime operations of one process; ``supervisors`` are its own (the
    :class:`Starter`'s list)."""

    def __init__(self, router: Router, supervisors: dict[str, Supervisor]) -> None:
        self.router = router
        self.supervisors = supervisors

    async def start_child(self, supervisor_path: str, spec: ChildSpec) -> ActorRef:
        """Start ``spec`` under the supervisor at ``supervisor_path``; its ref once ready."""
        sup = self._local(supervisor_path)
        if sup is not None:
            return (await sup.add_child(spec)).ref
        answer = await self._remote(ChildRequest(
            operation="start", path=supervisor_path, spec=spec_to_wire(spec)))
        assert answer.ref is not None
        return answer.ref

    async def terminate_child(self, path: str) -> None:
        sup, name = self._parent_of(path)
        if sup is not None:
            await sup.terminate_child(name)
            return
        await self._remote(ChildRequest(operation="terminate", path=path))

    async def restart_child(self, path: str) -> ActorRef:
        sup, name = self._parent_of(path)
        if sup is not None:
            return (await sup.restart_child(name)).ref
        answer = await self._remote(ChildRequest(operation="restart", path=path))
        assert answer.ref is not None
        return answer.ref

    async def delete_child(self, path: str) -> None:
        sup, name = self._parent_of(path)
        if sup is not None:
            await sup.delete_child(name)
            return
        await self._remote(ChildRequest(operation="delete", path=path))

    async def which_children(self, supervisor_path: str) -> list[ChildInfo]:
        sup = self._local(supervisor_path)
        if sup is not None:
            return sup.which_children()
        answer = await self._remote(ChildRequest(operation="which", path=supervisor_path))
        assert answer.children is not None
        return answer.children

    async def count_children(self, supervisor_path: str) -> ChildCount:
        sup = self._local(supervisor_path)
        if sup is not None:
            return sup.count_children()
        answer = await self._remote(ChildRequest(operation="count", path=supervisor_path))
        assert answer.count is not None
        return answer.count

    async def scale(self, pool_path: str, count: int) -> None:
        """Run ``count`` members in the pool at ``pool_path`` (:func:`scale_pool`)."""
        sup = self._local(pool_path)
        if sup is not None:
            await scale_pool(sup, count)
            return
        await self._remote(ChildRequest(operation="scale", path=pool_path, count=count))

    async def serve(self, request: ChildRequest, *, pass_on: bool) -> ChildAnswer:
        """Do ``request`` (here, or, with ``pass_on``, where its supervisor runs); its
        answer, an error included."""
        path = request.path
        if not pass_on and self._local(_supervisor_of(request)) is None:
            return ChildAnswer(error="not_found", detail=f"no supervisor at {path!r} here")
        try:
            if request.operation == "start":
                if request.spec is None:
                    raise ValueError("start_child needs a spec")
                ref = await self.start_child(path, spec_from_wire(request.spec))
                return ChildAnswer(ref=ref)
            if request.operation == "terminate":
                await self.terminate_child(path)
            elif request.operation == "restart":
                return ChildAnswer(ref=await self.restart_child(path))
            elif request.operation == "delete":
                await self.delete_child(path)
            elif request.operation == "scale":
                await self.scale(path, -1 if request.count is None else request.count)
            elif request.operation == "which":
                return ChildAnswer(children=await self.which_children(path))
            else:
                return ChildAnswer(count=await self.count_children(path))
        except (ActorError, ValueError, TypeError) as exc:
            return answer_for(exc)
        return ChildAnswer()

    def _local(self, path: str) -> Supervisor | None:
        return self.supervisors.get(path)

    def _parent_of(self, path: str) -> tuple[Supervisor | None, str]:
        parent, _, name = path.rpartition("/")
        if not parent or not name:
            raise ActorNotFound(f"{path!r} is no supervisor's child (a path 'sup/child')")
        return self._local(parent), name

    async def _remote(self, request: ChildRequest) -> ChildAnswer:
        """Ask the service of the process that runs the supervisor (from a worker: the
        master's, which finds it)."""
        if self.router.id != MASTER_NODE:
            service = SERVICE
        else:
            service = self._service_above(_supervisor_of(request))
        answer = await ActorRef(self.router.outbox, path=service).ask(request, ChildAnswer)
        return raise_for(answer)

    def _service_above(self, path: str) -> str:
        """The service of the worker process whose tree holds ``path`` (the deepest)."""
        above = path
        while above:
            service = f"{above}/{SERVICE}"
            if self.router.names.get(service) is not None:
                return service
            above = above.rpartition("/")[0]
        raise ActorNotFound(f"no running supervisor at {path!r}")


def _supervisor_of(request: ChildRequest) -> str:
    if request.operation in ("start", "which", "count", "scale"):
        return request.path
    return request.path.rpartition("/")[0]


async def scale_pool(sup: Supervisor, count: int) -> None:
    """Run ``count`` members in pool ``sup``: the missing ones of ``0`` to ``count - 1``
    start, each once ready; those from ``count`` on stop (the last first; they drain) and
    their specs go. All or nothing: if a new one does not start, those this call started
    are stopped again and :class:`SpawnError` says why."""
    spec = sup.spec
    if not isinstance(spec, PoolSpec) or spec.template is None:
        raise ActorNotFound(f"{sup.path} is no pool (pool(...) can be scaled)")
    if count < 1:
        raise ValueError("a pool needs at least one member")
    names = sup.child_names()
    added: list[str] = []
    for index in range(count):
        name = str(index)
        if name in names:
            continue
        try:
            await sup.add_child(dataclasses.replace(spec.template, name=name))
        except ActorError as exc:
            for started in reversed(added):
                await remove_child(sup, started)
            raise SpawnError(f"{exc}; the {len(added)} member(s) this scale started are "
                             "stopped again") from exc
        added.append(name)
    for name in sorted((n for n in names if n.isdigit() and int(n) >= count), key=int,
                       reverse=True):
        await remove_child(sup, name)


async def remove_child(sup: Supervisor, name: str) -> None:
    """Terminate child ``name`` of ``sup`` and delete its spec (a scale down)."""
    await sup.terminate_child(name)
    if name in sup.child_names():  # (a temporary child's spec went with it)
        await sup.delete_child(name)


class ChildrenService(Actor):
    """A process's service for :class:`ChildRequest` (``pass_on``: the master's, which
    passes on what runs in a worker)."""

    def __init__(self, children: RuntimeChildren, *, pass_on: bool) -> None:
        self.children = children
        self.pass_on = pass_on

    @handler
    async def on_request(self, request: ChildRequest) -> ChildAnswer:
        return await self.children.serve(request, pass_on=self.pass_on)


def spec_to_wire(spec: ChildSpec) -> SpecWire:
    """``spec`` as it travels; a spec that cannot (a listener's, arguments that are not
    JSON, a class defined in a function) is a :class:`SpawnError`."""
    if isinstance(spec, WorkerSpec):
        arguments = spec.arguments_json
        if arguments is None:
            arguments = arguments_to_json(spec.actor_class, dict(spec.arguments))
        return WorkerWire(
            actor_class=class_path(spec.actor_class), name=spec.name, process=spec.process,
            restart=spec.restart, shutdown=spec.shutdown, start_timeout=spec.start_timeout,
            heartbeat_timeout=spec.heartbeat_timeout, arguments=arguments,
            reload=spec.reload, max_memory=spec.max_memory,
        )
    if not isinstance(spec, SupervisorSpec) or type(spec) not in (SupervisorSpec, PoolSpec):
        raise SpawnError(f"a {type(spec).__name__} cannot be started in another process "
                         "at runtime (worker, supervisor and pool specs can)")
    template = spec.template if isinstance(spec, PoolSpec) else None
    backoff = None if spec.backoff is None else BackoffWire(
        initial=spec.backoff.initial, factor=spec.backoff.factor, cap=spec.backoff.cap,
        jitter=spec.backoff.jitter, reset_after=spec.backoff.reset_after,
    )
    return SupervisorWire(
        name=spec.name, strategy=spec.strategy, max_restarts=spec.max_restarts,
        within=spec.within, backoff=backoff, children=[spec_to_wire(c) for c in spec.children],
        restart=spec.restart, shutdown=spec.shutdown,
        template=None if template is None else spec_to_wire(template),
        size=spec.size if isinstance(spec, PoolSpec) else None,
        policy=spec.policy if isinstance(spec, PoolSpec) else "round_robin",
    )


def spec_from_wire(wire: SpecWire) -> ChildSpec:
    """The spec ``wire`` describes, checked as ``worker()``/``supervisor()`` check."""
    if isinstance(wire, WorkerWire):
        actor_class = _import_actor(wire.actor_class)
        return worker(
            actor_class, name=wire.name, process=wire.process,
            restart=wire.restart,  # type: ignore[arg-type]  # (checked by worker())
            shutdown=wire.shutdown,  # type: ignore[arg-type]
            start_timeout=wire.start_timeout, heartbeat_timeout=wire.heartbeat_timeout,
            reload=wire.reload, max_memory=wire.max_memory,
            **arguments_from_json(actor_class, wire.arguments),
        )
    backoff = None if wire.backoff is None else Backoff(
        initial=wire.backoff.initial, factor=wire.backoff.factor, cap=wire.backoff.cap,
        jitter=wire.backoff.jitter, reset_after=wire.backoff.reset_after,
    )
    if wire.template is not None:
        template = spec_from_wire(wire.template)
        assert isinstance(template, WorkerSpec)
        return pool(
            wire.name, template, size=wire.size or 1, max_restarts=wire.max_restarts,
            within=wire.within, backoff=backoff,
            restart=wire.restart,  # type: ignore[arg-type]  # (checked by pool())
            shutdown=wire.shutdown,  # type: ignore[arg-type]
            policy=wire.policy,  # type: ignore[arg-type]  # (checked by pool())
        )
    return supervisor(
        wire.name, strategy=wire.strategy,  # type: ignore[arg-type]  # (checked)
        max_restarts=wire.max_restarts, within=wire.within, backoff=backoff,
        children=[spec_from_wire(child) for child in wire.children],
        restart=wire.restart,  # type: ignore[arg-type]
        shutdown=wire.shutdown,  # type: ignore[arg-type]
    )


def _import_actor(path: str) -> type[Actor]:
    module_name, _, qualname = path.partition(":")
    try:
        target: object = importlib.import_module(module_name)
        for part in qualname.split("."):
            target = getattr(target, part)
    except (ImportError, AttributeError) as exc:
        raise SpawnError(f"cannot import the actor class {path}: {exc}") from exc
    if not (isinstance(target, type) and issubclass(target, Actor)):
        raise SpawnError(f"{path} is not an Actor subclass")
    return target
