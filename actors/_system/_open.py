"""``open_system``: the master's root, and the ``ActorSystem`` handle it yields."""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Literal

import trio

from protocol import DEFAULT_MAX_FRAME_SIZE

from .._base._actor import Actor
from .._base._errors import (
    ActorError,
    ActorNotFound,
    ReloadFailed,
    RestartLimitExceeded,
    SpawnError,
    leaves,
)
from .._base._events import Event, EventBus, ReloadAborted, SystemReloaded
from .._base._handoff import AcceptorStats
from .._base._ref import ActorRef
from .._base._spec import ChildSpec, SupervisorSpec, validate_name
from .._base._tree import Child, Lifecycle, stop_children, walk
from .._cluster._node import ClusterNode
from .._listening._listener import Listener, register_listener_kind
from .._messaging._names import NameRegistry
from .._messaging._outbox import MASTER_NODE
from .._messaging._router import Router
from .._operations._output import OutputLog
from .._operations._protocol import ActorStatus, SystemInfo
from .._operations._server import open_control_server
from .._operations._status import collect_status
from .._running._processes import (
    LOADING_MAIN_ENV,
    unguarded_main,
)
from .._state._api import SharedState
from .._state._stores import check_store_url, open_store
from .._supervision._monitors import Monitors
from .._supervision._start import Runnable, Starter
from ._runtime import RuntimeOperations, did_you_mean
from ._services import (
    check_cluster,
    default_name,
    open_spawner,
    start_cluster,
    start_runtime_services,
    start_state,
)
from ._signals import obey_signals

__all__ = ["ActorSystem", "open_system"]

log = logging.getLogger("actors")


class ActorSystem(RuntimeOperations):
    """The running system, as seen from the master. Get one from :func:`open_system`."""

    def __init__(
        self,
        router: Router,
        starter: Starter,
        nursery: trio.Nursery,
        events: EventBus,
        listeners: dict[str, Listener],
        *,
        name: str = "actors",
        output: OutputLog | None = None,
        monitors: Monitors,
    ) -> None:
        self._router = router
        self._starter = starter
        self._children = starter.children
        self._monitors = monitors
        self._events = events
        self._listeners = listeners
        self.name = name
        self.path = ""
        self.nursery = nursery
        self.running: list[Child] = []  # the root supervisor, and what spawn() started
        self.root: Runnable | None = None
        self.stopped_by: str | None = None  # what stopped it: "SIGTERM", "SIGINT", "stop"
        self.socket_path: str = ""  # its control socket ("" if it has none)
        self.metrics_port: int | None = None  # where its metrics are served, if they are
        self._output = output or OutputLog()
        self._started = time.time()
        self._started_at = trio.current_time()
        self._body = trio.CancelScope()  # the open_system block: cancelled to stop
        self._stopping = trio.CancelScope(shield=True)  # the orderly stop: cancelled to kill
        self._reload_lock = trio.Lock()
        self.cluster: ClusterNode | None = None  # its node, with open_system(cluster=...)

    async def spawn(
        self,
        actor_class: type[Actor] | ChildSpec,
        *,
        name: str | None = None,
        process: bool = False,
        shutdown: float = 5.0,
        start_timeout: float = 30.0,
        **kwargs: Any,
    ) -> ActorRef:
        """Start an actor (or a ``worker(...)``/``supervisor(...)`` spec) and return its ref.

        With a supervision tree, the child is added to the root supervisor (its path is
        ``root/name``): an actor class is ``temporary`` (never restarted), a spec follows its
        own restart type. ``process=True`` runs it in a worker process of its own; ``kwargs``
        go to its ``__init__`` and are validated against its signature first (and must be
        JSON for a process), so bad arguments raise :class:`InvalidArguments` before anything
        starts. A failed start raises :class:`SpawnError` once any process it started is
        reaped. ``shutdown`` bounds how long the actor may take to stop when the system
        closes (then its worker is killed); ``start_timeout`` bounds its start.
        """
        parent = self.root if self.root is not None else self
        return await self._starter.spawn(
            parent, actor_class, name=name, process=process,  # type: ignore[arg-type]
            shutdown=shutdown, kwargs=kwargs, start_timeout=start_timeout,
        )

    @property
    def state(self) -> SharedState:
        """The system's shared state (see :class:`actors.State`)."""
        state = self._starter.state
        assert isinstance(state, SharedState)
        return state

    def ref(self, path: str, *, node: str | None = None) -> ActorRef:
        """A ref to whatever actor holds ``path`` (``"adder"``, ``"root/pool/worker"``).

        It is resolved each time a message is sent, so it follows the name to a restarted
        actor: while that actor is restarting, a send waits for the new one (up to
        ``restart_wait`` seconds, then :class:`ActorGone`); sending to a path nobody holds
        raises :class:`ActorNotFound`. ``"path@node"`` (or ``node=``) names an actor of
        another master of the cluster; such a ref follows that node's restarts too.
        """
        if node is not None or "@" in path:
            return self._node().ref(path, node)
        return ActorRef(self._router.outbox, path=path)

    def nodes(self) -> dict[str, int]:
        """The live nodes of the cluster (this one included), each with its incarnation."""
        return self._node().nodes()

    async def register(self, name: str, ref: ActorRef) -> bool:
        """Hold ``name`` for ``ref`` across the cluster, while the node of whoever
        registered it is live (OTP's ``global``): False if a live node holds it already
        for another actor."""
        return await self._node().register(name, ref)

    async def whereis(self, name: str) -> ActorRef | None:
        """The actor holding ``name`` across the cluster, or None."""
        return await self._node().whereis(name)

    async def unregister(self, name: str, ref: ActorRef) -> bool:
        """Give ``name`` up across the cluster, if ``ref`` holds it."""
        return await self._node().unregister(name, ref)

    def _node(self) -> ClusterNode:
        if self.cluster is None:
            raise ActorNotFound("this system is in no cluster: open_system(cluster=..., "
                                "node=...) joins one")
        return self.cluster

    def names(self) -> dict[str, str]:
        """Every registered path and the address of the actor holding it (the runtime's
        own actors, whose paths have an ``@``, left out)."""
        return {path: address for path, address in self._router.names.names.items()
                if "@" not in path}

    def events(self, *, history: bool = False) -> trio.MemoryReceiveChannel[Event]:
        """A channel of the lifecycle events from now on (iterate it; close it when done).

        With ``history``, it starts with the last 1024 events (those of the tree's start,
        which happen before the ``open_system`` block is entered). A subscriber that falls
        more than 1024 events behind is unsubscribed, with one warning: the runtime never
        waits for an observer.
        """
        return self._events.subscribe(history=history)

    def listener(self, path: str) -> Listener:
        """The running listener at ``path`` (its ``host``/``port`` are the bound address)."""
        found = self._listeners.get(path)
        if found is None:
            raise ActorNotFound(f"no listener at {path!r}{did_you_mean(path, self._listeners)}")
        return found

    async def acceptor_stats(self, path: str) -> list[AcceptorStats]:
        """Per-acceptor figures of the listener at ``path``: open and total connections,
        pid and restarts, so you can see how load is spread."""
        return await self.listener(path).stats()

    async def reload(self, path: str | None = None) -> list[str]:
        """Bring new code in, without dropping a connection: start a fresh fork server from
        the code as it is on disk now, then replace one at a time (each new one ready
        before the old one drains) the acceptors of every listener and every worker whose
        spec says ``reload=True`` (with ``path``: only that listener, that one acceptor or
        worker, or what is below it). The paths replaced.

        Raises :class:`ReloadFailed` (and publishes :class:`ReloadAborted`) as soon as the
        new code does not import or a new worker does not start: what was not replaced yet
        keeps serving. SIGHUP and ``trio-actors reload`` do the same."""
        async with self._reload_lock:
            replaced: list[str] = []
            try:
                renew = getattr(self._starter.spawner, "renew", None)
                if renew is not None:
                    try:
                        await renew()
                    except SpawnError as exc:
                        raise ReloadFailed(str(exc)) from exc
                for parent, child in self._reloadable(path):
                    if not await parent.replace_child(child):
                        raise ReloadFailed(
                            f"the new {child.path} did not start; the old one keeps serving "
                            "(see the log for why)"
                        )
                    replaced.append(child.path)
            except ReloadFailed as exc:
                self._router.publish(ReloadAborted(path=path or "", error=str(exc),
                                                   replaced=replaced))
                raise
            self._router.publish(SystemReloaded(path=path or "", replaced=replaced))
            return replaced

    def _reloadable(self, path: str | None) -> list[tuple[Child, Child]]:
        """What a reload of ``path`` replaces, each with the parent that replaces it: the
        children their parents replace on every reload (a listener's acceptors, workers
        with ``reload=True``) that ``path`` names, is above, or is below (an actor of the
        worker's own). A child between two instances is left alone: its next instance
        starts from the code on disk anyway."""
        found: list[tuple[Child, Child]] = []
        named: list[str] = []  # every path a reload may be given, to suggest one
        for parent, child in walk(self.running):
            if parent is None or parent.replaces(child) != "on_reload":
                continue
            named += [parent.path, child.path]
            if child.state is not Lifecycle.RESTARTING and (
                    path is None or _related(path, child.path)):
                found.append((parent, child))
        if path is not None and not found:
            raise ActorNotFound(f"nothing to reload at {path!r}" + (
                did_you_mean(path, named)
                or " (a listener, one of its acceptors, or a worker with reload=True)"))
        return found

    async def status(self) -> list[ActorStatus]:
        """One row per actor: path, kind, pid, state, uptime, restarts, last exit, mailbox
        depth, resident memory and CPU% of workers, connections of acceptors."""
        return await collect_status(self._router, self.running, self._events.last_exits)

    def info(self) -> SystemInfo:
        return SystemInfo(
            name=self.name, pid=os.getpid(), started=self._started,
            uptime=round(trio.current_time() - self._started_at, 3), socket=self.socket_path,
        )

    @property
    def exits(self) -> dict[str, int]:
        """How many actor instances ended, by exit kind."""
        return self._events.exits

    @property
    def output(self) -> OutputLog:
        """What the workers printed (the last lines), for ``trio-actors logs``."""
        return self._output

    def request_stop(self, why: str = "stop") -> None:
        """Stop the system in order, as SIGTERM does: the ``open_system`` block is
        cancelled, every actor drains, and ``open_system`` returns normally."""
        if self.stopped_by is None:
            self.stopped_by = why
        self._body.cancel()

    def kill_now(self) -> None:
        """Stop at once, as a second Ctrl-C does: every worker is killed, the stop goes on
        without waiting for drains."""
        log.warning("stopping at once: every worker is killed")
        self._starter.kill_all()
        self._stopping.cancel()
        self._body.cancel()

    async def stop(self) -> None:
        """Stop every actor, the last started first (as leaving ``open_system`` does)."""
        self._router.system_stopping()
        await stop_children(self)

    async def until_signalled(
        self, *signals: signal.Signals
    ) -> signal.Signals:
        """Wait for one of ``signals`` (default SIGTERM and SIGINT) and return it.

        The usual master: ``await system.until_signalled()`` at the end of the
        ``open_system`` block, so that a SIGTERM or Ctrl-C leaves it and shuts the system
        down in order (and the program exits 0).
        """
        wanted = signals or (signal.SIGTERM, signal.SIGINT)
        with trio.open_signal_receiver(*wanted) as received:
            async for number in received:
                return signal.Signals(number)
        raise AssertionError("unreachable")


@asynccontextmanager
async def open_system(
    tree: SupervisorSpec | None = None,
    *,
    max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
    restart_wait: float = 5.0,
    start_method: Literal["forkserver", "spawn"] = "forkserver",
    store: str | None = None,
    store_timeout: float = 2.0,
    name: str | None = None,
    handle_signals: bool = True,
    control: bool = True,
    metrics: tuple[str, int] | None = None,
    cluster: str | None = None,
    node: str | None = None,
    node_ttl: float = 5.0,
    inbox_bound: int = 10_000,
) -> AsyncIterator[ActorSystem]:
    """Run an actor system in this process (the master) for the duration of the block.

    With ``tree``, its supervisor is started first (children in order, each once ready);
    the block is entered when the whole tree is up. If the root supervisor gives up (more
    restarts than its intensity allows), the block is cancelled and :class:`RestartLimitExceeded`
    is raised from it, after every worker is gone.

    Leaving the block stops every actor, the last started first: each gets a stop request
    and its ``shutdown`` seconds to finish, then its worker process is killed; every worker
    is reaped before this returns. Cancellation and errors inside the block do the same.
    ``restart_wait`` bounds how long a send by path waits for a restarting actor.

    ``start_method``: ``"forkserver"`` (default) forks workers from a pre-imported server
    process, started with the first worker (a worker is ready in milliseconds, and shares
    the imported code's memory); ``"spawn"`` starts each worker as a fresh interpreter.

    ``store``: where the shared state (``system.state``, ``ctx.state``) is kept: None (the
    default) in the master's memory; ``"sqlite:///state.db"`` in a file, durable (relative
    to the current directory; ``"sqlite:////abs/state.db"``, four slashes, is absolute);
    ``"redis://host:port/db"`` in Redis, shared with every system using it (``?prefix=``
    keeps applications apart). ``store_timeout`` bounds each store operation: a write
    the store does not confirm in time raises :class:`StoreUnavailable` (and is in doubt:
    it may have been made). A store URL that cannot be used is a ValueError (an
    ImportError for Redis without coredis) before anything starts; a SQLite file another
    system uses is :class:`StoreInUse`.

    ``name`` (default: the main script's name) names the system's control socket, which
    ``trio-actors`` (the CLI) talks to; ``control=False`` opens none. A live system of the
    same name is :class:`SystemNameTaken`.

    ``handle_signals`` (on by default, in the main thread only): SIGTERM or SIGINT stops the
    system in order (the block is cancelled, everything drains) and ``open_system`` then
    returns normally, so the program exits 0; a second SIGINT during that stop kills what
    is left at once. SIGHUP reloads (:meth:`ActorSystem.reload`). ``metrics``: an
    ``(address, port)`` to serve Prometheus metrics on.

    ``cluster`` (``"redis://host:port/db"``, ``rediss://`` for TLS, ``?prefix=``) joins the
    masters that use that Redis, as node ``node``: refs ``"path@node"`` reach their actors
    (see the README's "Across hosts"). A node missing heartbeats for ``node_ttl`` seconds is
    down for the others; its inbox holds ``inbox_bound`` messages before senders wait.
    :class:`BrokerUnavailable` if Redis does not answer at start.
    """
    loading = os.environ.get(LOADING_MAIN_ENV)
    if loading is not None:
        raise RuntimeError(unguarded_main(loading))
    if start_method not in ("forkserver", "spawn"):
        raise ValueError(f"start_method must be 'forkserver' or 'spawn', not {start_method!r}")
    failure: RestartLimitExceeded | None = None
    body_error: BaseException | None = None
    events = EventBus()
    system: ActorSystem | None = None
    sockets: dict[str, socket.socket] = {}  # listening sockets, by listener path
    if not store_timeout > 0:
        raise ValueError("store_timeout must be > 0 seconds")
    check_store_url(store)  # a configuration error is raised as itself, before anything runs
    check_cluster(cluster, node)
    name = name if name is not None else default_name()
    validate_name(name)
    try:
        output = OutputLog()
        async with (
            open_spawner(start_method, tree, output) as spawner,
            open_store(store, store_timeout=store_timeout) as kept,
            trio.open_nursery() as nursery,
        ):
            router = Router(MASTER_NODE, nursery, names=NameRegistry(restart_wait=restart_wait),
                            events=events, max_frame_size=max_frame_size)
            starter = Starter(router, spawner, output=output)
            await start_state(nursery, router, starter, kept, store_timeout, events)
            joined = await start_cluster(nursery, cluster, node or "", router, starter, events,
                                         ttl=node_ttl, bound=inbox_bound,
                                         call_timeout=store_timeout)
            monitors = await start_runtime_services(nursery, router, starter, events)
            listeners: dict[str, Listener] = {}
            register_listener_kind(starter, sockets, listeners)
            system = ActorSystem(router, starter, nursery, events, listeners, name=name,
                                 output=output, monitors=monitors)
            system.cluster = joined
            async with _control(system, name, control), _metrics(system, metrics):
                if handle_signals and threading.current_thread() is threading.main_thread():
                    await nursery.start(obey_signals, system)
                if tree is not None:
                    root = starter.supervisor(tree, system, tree.name)
                    system.running.append(root)
                    try:
                        await nursery.start(root.run)
                    except RestartLimitExceeded as exc:
                        failure = exc
                    else:
                        system.root = root
                        nursery.start_soon(_cancel_when_root_gives_up, root, nursery)
                try:
                    if failure is None:
                        try:
                            with system._body:
                                yield system
                        except BaseException as exc:
                            body_error = exc
                            raise
                        finally:
                            router.system_stopping()
                            with system._stopping:
                                await stop_children(system)
                finally:
                    nursery.cancel_scope.cancel()  # the runtime's own tasks (state, ...)
    except BaseExceptionGroup as group:
        gave_up = _gave_up(system)
        if gave_up is not None:
            # The root giving up explains what the block then ran into (its cancellation,
            # a send finding its target gone): that is the error the caller gets.
            raise gave_up from None
        if body_error is not None and leaves(group) == [body_error]:
            raise body_error from None  # the block's own exception, not a group of one
        found = leaves(group)
        if len(found) == 1 and isinstance(found[0], ActorError):
            raise found[0] from None  # the tree could not start: say why, as itself
        raise
    finally:
        events.close()
        for sock in sockets.values():
            sock.close()
        sockets.clear()
    failure = failure or _gave_up(system)
    if failure is not None:
        raise failure


def _related(path: str, other: str) -> bool:
    """True when ``path`` names ``other``, something below it, or something above it."""
    return other == path or other.startswith(path + "/") or path.startswith(other + "/")


@asynccontextmanager
async def _control(system: ActorSystem, name: str, enabled: bool) -> AsyncIterator[None]:
    if not enabled:
        yield
        return
    async with open_control_server(system, name) as server:
        system.socket_path = str(server.path)
        yield


@asynccontextmanager
async def _metrics(system: ActorSystem, address: tuple[str, int] | None
                   ) -> AsyncIterator[None]:
    if address is None:
        yield
        return
    # Imported here: prometheus-client (and the http, email, urllib it brings) only for a
    # system that serves metrics.
    from .._operations._metrics import open_metrics_server

    async with open_metrics_server(system, address) as port:
        system.metrics_port = port
        yield


def _gave_up(system: ActorSystem | None) -> RestartLimitExceeded | None:
    root = None if system is None else system.root
    return None if root is None else root.gave_up


async def _cancel_when_root_gives_up(root: Runnable, nursery: trio.Nursery) -> None:
    await root.done.wait()
    if root.gave_up is not None:
        nursery.cancel_scope.cancel()
