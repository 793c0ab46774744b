"""What a master runs beside its tree: the spawner that starts worker processes (a fork
server, or a fresh interpreter each), the shared state's service, its node of a cluster,
and the system's name."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import trio

from .._base._events import EventBus
from .._base._spec import ChildSpec, CommandSpec, SupervisorSpec
from .._base._tree import Root
from .._cluster._broker import check_cluster_url
from .._cluster._gateway import GATEWAY_PATH, ClusterGateway
from .._cluster._node import ClusterNode, open_cluster_node
from .._cluster._wire import validate_node_name
from .._messaging._router import Router
from .._operations._output import OutputLog
from .._running._cell import Cell
from .._running._lazyserver import open_lazy_fork_server
from .._running._processes import ColdSpawner, Spawner, main_script
from .._state._actors import StateServiceActor
from .._state._api import SharedState
from .._state._service import LocalUpstream, StateService
from .._state._store import Store
from .._supervision._monitors import SERVICE as MONITORS
from .._supervision._monitors import Monitors, MonitorsActor
from .._supervision._runtime import SERVICE as CHILDREN
from .._supervision._runtime import ChildrenService
from .._supervision._start import Starter
from ._zygote import fork_server

__all__ = [
    "check_cluster", "default_name", "open_spawner", "start_cluster", "start_runtime_services",
    "start_state",
]


async def start_runtime_services(
    nursery: trio.Nursery, router: Router, starter: Starter, events: EventBus
) -> Monitors:
    """The master's monitors and its service for children managed at runtime, each an
    actor every process reaches by its path (``@monitors``, ``@children``)."""
    monitors = Monitors(router, events)
    await nursery.start(monitors.run)
    parent = Root("", nursery)  # the runtime's own actors
    for actor, path in ((MonitorsActor(monitors), MONITORS),
                        (ChildrenService(starter.children, pass_on=True), CHILDREN)):
        cell = Cell(router, actor, path=path, parent=parent, shutdown_timeout=1.0,
                    spawn=starter.spawn, report_events=False)
        await nursery.start(cell.run)
    return monitors


async def start_state(
    nursery: trio.Nursery,
    router: Router,
    starter: Starter,
    store: Store,
    store_timeout: float,
    events: EventBus,
) -> None:
    """The shared state's service (and its actor, which workers' replicas ask)."""
    service = StateService(router, store, timeout=store_timeout, events=events)
    await nursery.start(service.run)
    parent = Root("", nursery)  # the runtime's own actors
    cell = Cell(router, StateServiceActor(service), path="@state", parent=parent,
                shutdown_timeout=1.0, spawn=starter.spawn, report_events=False,
                register_name=False)
    await nursery.start(cell.run)
    starter.state = SharedState(LocalUpstream(service), service.local,
                                max_size=router.max_frame_size)
    starter.state_service = cell.mailbox.address


def check_cluster(cluster: str | None, node: str | None) -> None:
    """ValueError (ImportError without coredis) unless both or neither are given, usable."""
    if (cluster is None) != (node is None):
        raise ValueError("a cluster needs both cluster='redis://...' and node='name'")
    if cluster is not None and node is not None:
        check_cluster_url(cluster)
        validate_node_name(node)


async def start_cluster(
    nursery: trio.Nursery, url: str | None, node: str, router: Router, starter: Starter,
    events: EventBus, *, ttl: float, bound: int, call_timeout: float,
) -> ClusterNode | None:
    """This master's node of the cluster at ``url`` (None without one), in ``nursery``
    until it is cancelled (after the actors stopped)."""
    if url is None:
        return None
    found: ClusterNode = await nursery.start(
        _run_cluster, url, node, router, events, ttl, bound, call_timeout)
    # Its workers send to other nodes through this actor (the master talks to Redis).
    gateway = ClusterGateway((found.name, found.incarnation), router.outbox, found)
    cell = Cell(router, gateway, path=GATEWAY_PATH, parent=Root("", nursery),
                shutdown_timeout=1.0, spawn=starter.spawn, report_events=False)
    await nursery.start(cell.run)
    return found


async def _run_cluster(
    url: str, node: str, router: Router, events: EventBus, ttl: float, bound: int,
    call_timeout: float, *, task_status: trio.TaskStatus[ClusterNode],
) -> None:
    async with open_cluster_node(url, node, outbox=router.outbox, names=router.names,
                                 events=events, ttl=ttl, bound=bound,
                                 call_timeout=call_timeout) as joined:
        task_status.started(joined)
        await trio.sleep_forever()


def default_name() -> str:
    """The name of a system nobody named: its main script's, made safe for a file name."""
    main_path, main_module = main_script()
    if main_path is not None:
        stem = Path(main_path).stem
    elif main_module is not None:
        stem = main_module.rpartition(".")[2]
    else:
        stem = Path(sys.argv[0]).stem if sys.argv and sys.argv[0] else "actors"
    cleaned = "".join(c if c.isalnum() or c in "-_." else "-" for c in stem).strip(".")
    return cleaned or "actors"


@asynccontextmanager
async def open_spawner(
    start_method: str, tree: SupervisorSpec | None, output: OutputLog
) -> AsyncIterator[Spawner]:
    """What starts the workers of ``tree``: a fork server (``"forkserver"``, started with
    the first worker, a fork of this process if it can be, the tree's modules imported up
    front), or a fresh interpreter each."""
    if start_method == "forkserver":
        async with open_lazy_fork_server(_modules_of(tree), output=output,
                                         fork=fork_server) as server:
            yield server
    else:
        yield ColdSpawner()


def _modules_of(spec: ChildSpec | None) -> list[str]:
    """Modules of the actor classes in a tree, for the fork server to import up front."""
    if spec is None:
        return []
    if isinstance(spec, SupervisorSpec):
        return sorted({name for child in spec.children for name in _modules_of(child)})
    if isinstance(spec, CommandSpec):
        return []
    module = spec.actor_class.__module__
    return [] if module in ("__main__", "__mp_main__") else [module]
