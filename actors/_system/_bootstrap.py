"""Entry point of a worker process: ``python -m actors._system._bootstrap``.

The worker reads its channel's fd from ``ACTORS_CHANNEL_FD``, arranges to die with its parent
(``PR_SET_PDEATHSIG`` plus the channel's EOF), ignores SIGINT (the master orchestrates
shutdown) and takes SIGTERM as "finish queued work and exit". It then handshakes, imports the
actor's class (loading the parent's main script as ``__mp_main__`` when there is one, so
that its ``if __name__ == "__main__":`` block does not run again), runs the actor, and exits:
0 after a normal stop, 1 after a crash or a failed start.
"""

from __future__ import annotations

import ctypes
import importlib
import importlib.util
import io
import os
import select
import signal
import socket
import sys
import threading
import types

import trio

from protocol import (
    PROTOCOL_VERSION,
    Channel,
    FrameKind,
    ProtocolError,
    VersionMismatch,
    decode_message,
    encode_message,
    open_channel,
)

from .._base._actor import Actor
from .._base._arguments import arguments_from_json
from .._base._control import (
    Failure,
    Heartbeat,
    Hello,
    Ready,
    Relieve,
    Retire,
    Start,
    StartFailed,
    Stop,
    Stopping,
    Suicide,
)
from .._base._errors import SpawnError
from .._base._ref import ActorRef
from .._base._tree import Root
from .._cluster._gateway import ViaMaster
from .._listening._listener import register_listener_kind
from .._messaging._link import Link
from .._messaging._names import NameRegistry
from .._messaging._router import Router
from .._running._cell import Cell, Retirement
from .._running._processes import (
    CHANNEL_FD_ENV,
    LOADING_MAIN_ENV,
    PARENT_PID_ENV,
    ColdSpawner,
    unguarded_main,
)
from .._state._actors import RemoteUpstream, ReplicaActor
from .._state._api import SharedState
from .._state._replica import Replica
from .._supervision._runtime import SERVICE as CHILDREN
from .._supervision._runtime import ChildrenService
from .._supervision._start import Starter

_PR_SET_PDEATHSIG = 1
# The parent-death signal of a worker forked by the fork server: caught, not fatal.
_SERVER_DIED = signal.SIGRTMIN + 3
_PR_SET_NAME = 15
_EXIT_FLUSH_TIMEOUT = 1.0


def _name_process(path: str) -> None:
    """Show the actor's path in ``ps -o comm``/``top`` (the kernel keeps 15 bytes)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_NAME, ctypes.c_char_p(path.encode()[-15:]), 0, 0, 0)
    except (OSError, AttributeError):
        pass


def _die_with_parent(parent_pid: int, signal_number: int = signal.SIGKILL) -> None:
    """Have the kernel send ``signal_number`` to this process when its parent dies."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal_number, 0, 0, 0)
    except (OSError, AttributeError):
        pass  # not Linux: the channel's EOF still ends the worker
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)


def _die_with_master(master_pid: int) -> int:
    """For a worker forked by the fork server: die with the master, not with the server.

    The kernel's parent-death signal follows the server (our parent); it is a signal we
    catch, and we exit only if the master is gone too. The returned pidfd of the master
    also lets the event loop notice the master's death (see ``_watch_master``)."""
    try:
        master = os.pidfd_open(master_pid)
    except ProcessLookupError:
        os._exit(1)

    def parent_died(signum: int, frame: object) -> None:
        if _exited(master):
            os._exit(1)

    signal.signal(_SERVER_DIED, parent_died)
    _die_with_parent(os.getppid(), _SERVER_DIED)
    if _exited(master):
        os._exit(1)
    return master


def _exited(pidfd: int) -> bool:
    readable, _, _ = select.select([pidfd], [], [], 0)  # a pidfd is readable once it exited
    return bool(readable)


def load_main(main_path: str | None, main_module: str | None) -> None:
    """Load the parent's main script as ``__mp_main__`` (once: a fork server may have)."""
    key = (main_path, main_module)
    loaded = sys.modules.get("__mp_main__")
    if loaded is not None and getattr(loaded, "__actors_main__", None) == key:
        failure = getattr(loaded, "__actors_main_failure__", None)
        if failure is not None:
            raise ImportError(failure)  # as the first attempt (in the fork server) found
        return
    if main_module is not None:
        spec = importlib.util.find_spec(main_module)
        if spec is None or spec.origin is None:
            raise ImportError(f"cannot find the main module {main_module!r}")
        main_path = spec.origin
        package = main_module.rpartition(".")[0]
    elif main_path is not None:
        package = ""
    else:
        return
    module = types.ModuleType("__mp_main__")
    module.__file__ = main_path
    module.__package__ = package
    module.__actors_main__ = key  # type: ignore[attr-defined]
    sys.modules["__mp_main__"] = module
    os.environ[LOADING_MAIN_ENV] = main_path
    try:
        # Read and compiled in here too: the script on disk may have changed since the
        # master started (a reload), and a syntax error or a missing file is a failure
        # to report like any other, not an exception that ends the fork server.
        with io.open_code(main_path) as source:
            code = compile(source.read(), main_path, "exec")
        exec(code, module.__dict__)
    except (Exception, SystemExit) as exc:
        text = str(exc)
        unguarded = isinstance(exc, RuntimeError) and (
            text == unguarded_main(main_path) or "from inside a run()" in text
        )
        if unguarded:
            text = unguarded_main(main_path)
        else:
            text = f"importing the main script {main_path} failed: {type(exc).__name__}: {exc}"
        module.__actors_main_failure__ = text  # type: ignore[attr-defined]
        # Unguarded, the advice says it all: its traceback (inside the runtime) is noise.
        raise ImportError(text) from (None if unguarded else exc)
    finally:
        os.environ.pop(LOADING_MAIN_ENV, None)
    sys.modules["__main__"] = module


def _import_class(path: str) -> type[Actor]:
    module_name, _, qualname = path.partition(":")
    target: object = importlib.import_module(module_name)
    for part in qualname.split("."):
        target = getattr(target, part)
    if not (isinstance(target, type) and issubclass(target, Actor)):
        raise TypeError(f"{path} is not an Actor subclass")
    return target


async def _handshake(channel: Channel) -> Start:
    data, fds = encode_message(FrameKind.SYSTEM, Hello(version=PROTOCOL_VERSION, pid=os.getpid()))
    channel.send_nowait(data, fds)
    frames = await channel.receive_some()
    if len(frames) != 1 or frames[0].kind is not FrameKind.SYSTEM:
        raise ProtocolError("the parent's first frame must be Start, alone")
    start = decode_message(frames[0])
    if not isinstance(start, Start):
        raise ProtocolError(f"expected Start, got {frames[0].tag!r}")
    return start


async def _serve(fd: int, master: int) -> int:
    sock = socket.socket(fileno=fd)
    async with open_channel(sock) as channel:
        try:
            start = await _handshake(channel)
        except (ProtocolError, trio.EndOfChannel, trio.BrokenResourceError):
            return 1
        channel.max_frame_size = start.max_frame_size  # the system's limit, not the default
        link = Link(start.node.rpartition(".")[0], channel, is_parent=True)
        _name_process(start.path)
        try:
            if start.version != PROTOCOL_VERSION:
                raise VersionMismatch(PROTOCOL_VERSION, start.version)
            for entry in reversed(start.sys_path):
                if entry not in sys.path:
                    sys.path.insert(0, entry)
            load_main(start.main_path, start.main_module)
            actor_class = _import_class(start.actor_class)
            kwargs = arguments_from_json(actor_class, start.arguments)
        except Exception as exc:
            return await _fail_start(link, start, exc)
        async with trio.open_nursery() as nursery:
            if master >= 0:
                nursery.start_soon(_watch_master, master, nursery)
            code = await _run_actor(nursery, link, start, actor_class, kwargs)
            nursery.cancel_scope.cancel()
        return code


async def _watch_master(master: int, nursery: trio.Nursery) -> None:
    """The master died (its pidfd turned readable): nobody can use this worker any more."""
    await trio.lowlevel.wait_readable(master)
    _orphaned(2.0)
    nursery.cancel_scope.cancel()


async def _fail_start(link: Link, start: Start, exc: BaseException) -> int:
    link.notify(StartFailed(failure=Failure.from_exception("remote", exc, actor=start.path)))
    await _flush(link.channel)
    return 1


async def _run_actor(
    nursery: trio.Nursery, link: Link, start: Start, actor_class: type[Actor],
    kwargs: dict[str, object],
) -> int:
    """Run the worker's actor until it stops; the exit status."""
    router = Router(start.node, nursery, names=NameRegistry(),
                    max_frame_size=start.max_frame_size)
    router.attach_parent(link)
    router.outbox.remote = ViaMaster(router.outbox)  # refs with a node: the master sends
    state = await _open_replica(nursery, router, start)
    starter = Starter(router, ColdSpawner(), state=state, state_service=start.state_service)
    register_listener_kind(starter, {}, {})
    parent_gone = trio.Event()
    nursery.start_soon(_pump_parent, router, link, nursery, parent_gone,
                       min(start.shutdown_timeout, 10.0) + 1.0)
    nursery.start_soon(_watch_sigterm, link)
    if start.heartbeat > 0:
        nursery.start_soon(_send_heartbeats, link, start.heartbeat)
    await _start_children_service(nursery, router, starter, start.path)
    root = Root(start.path.rpartition("/")[0], nursery)
    # At most two: one crash, one request to be replaced.
    retirements, retired = trio.open_memory_channel[Retirement](2)
    try:
        actor = actor_class(**kwargs)
        # The parent reports this actor's lifecycle; the worker reports its children's.
        cell = Cell(router, actor, path=start.path, parent=root,
                    shutdown_timeout=start.shutdown_timeout, spawn=starter.spawn,
                    shared_state=state, report_events=False, retirements=retirements,
                    manage_children=starter.children)
        root.running.append(cell)
        await nursery.start(cell.run)
    except Exception as exc:
        return await _fail_start(link, start, exc)
    nursery.start_soon(_obey_parent, link, cell)
    nursery.start_soon(_ask_for_replacement, link, start.path, retired)
    link.send_control(Ready(address=cell.mailbox.address))
    await cell.done.wait()
    failure = None
    if cell.failure is not None:
        failure = Failure.from_exception("remote", cell.failure, actor=start.path)
    link.closing = True  # the actor is done: nothing new goes up, answers still do
    link.notify(Stopping(failure=failure))
    router.direct.close_all()
    await _flush(link.channel)
    # Read until the parent ends the channel, and each direct link's peer said it sends
    # nothing more: whatever was sent before they heard of the stop is answered (refused),
    # so nothing sent to this worker is left in doubt.
    with trio.move_on_after(_EXIT_FLUSH_TIMEOUT):
        await parent_gone.wait()
        await router.direct.wait_closed()
    return 0 if failure is None else 1


async def _start_children_service(
    nursery: trio.Nursery, router: Router, starter: Starter, path: str
) -> None:
    """What the master passes on to this process of the runtime child operations on its
    supervisors (at ``<path>/@children``, a name the master finds it by)."""
    service = ChildrenService(starter.children, pass_on=False)
    cell = Cell(router, service, path=f"{path}/{CHILDREN}", parent=Root(path, nursery),
                shutdown_timeout=1.0, spawn=_no_spawn, report_events=False)
    await nursery.start(cell.run)


async def _open_replica(nursery: trio.Nursery, router: Router, start: Start
                        ) -> SharedState | None:
    """This process's replica of the shared state, kept by pushes from the master."""
    if start.state_service is None:
        return None
    replica = Replica()
    cell = Cell(router, ReplicaActor(replica), path=f"{start.path}/@replica",
                parent=Root(start.path, nursery), shutdown_timeout=1.0,
                spawn=_no_spawn, report_events=False, register_name=False)
    await nursery.start(cell.run)
    upstream = RemoteUpstream(ActorRef(router.outbox, address=start.state_service),
                              lambda: cell.mailbox.address, start.max_frame_size)
    return SharedState(upstream, replica, max_size=start.max_frame_size)


async def _no_spawn(*args: object, **kwargs: object) -> ActorRef:
    raise SpawnError("the replica actor starts no children")


async def _pump_parent(
    router: Router, link: Link, nursery: trio.Nursery, parent_gone: trio.Event,
    grace: float,
) -> None:
    await router.pump(link)
    parent_gone.set()
    if not link.closing:
        # The parent is gone (or spoke garbage) while the actor runs: nobody can use this
        # worker any more.
        _orphaned(grace)
        nursery.cancel_scope.cancel()


def _orphaned(grace: float) -> None:
    """This worker lost its master: its tasks are cancelled, and if something holds on
    (a shielded cleanup) the process ends anyway after ``grace`` seconds."""
    timer = threading.Timer(grace, os._exit, (1,))
    timer.daemon = True  # a normal exit does not wait for it
    timer.start()


async def _obey_parent(link: Link, cell: Cell) -> None:
    """Stop and Relieve from the parent."""
    async for message in link.control_received:
        if isinstance(message, Stop):
            cell.stop("asked")
        elif isinstance(message, Relieve):
            cell.relieve()  # its successor is up: it drains and stops
        else:
            link.notify(Stopping(failure=Failure.from_exception(
                "protocol", ProtocolError(f"unexpected control message {type(message).__name__}")
            )))


async def _ask_for_replacement(
    link: Link, path: str, retirements: trio.MemoryReceiveChannel[Retirement]
) -> None:
    """The suicide signal: once the actor crashed, ask for a replacement (it drains); the
    same, without a failure, when the actor asked to be replaced."""
    async for retirement in retirements:
        if retirement.failure is not None:
            link.notify(Suicide(
                failure=Failure.from_exception("remote", retirement.failure, actor=path)
            ))
            return  # it drains and goes: nothing more to ask
        link.notify(Retire(reason=retirement.reason))


async def _watch_sigterm(link: Link) -> None:
    with trio.open_signal_receiver(signal.SIGTERM) as signals:
        async for _ in signals:
            try:
                link.control.send_nowait(Stop())  # as if the parent said it
            except trio.ClosedResourceError:
                return


async def _send_heartbeats(link: Link, interval: float) -> None:
    while True:
        if not link.notify(Heartbeat()):
            return  # the parent is gone: nobody to tell
        await trio.sleep(interval)


async def _flush(channel: Channel) -> None:
    with trio.move_on_after(_EXIT_FLUSH_TIMEOUT):
        try:
            await channel.flush()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass


def run_worker(fd: int, parent_pid: int, *, master_pid: int | None = None) -> int:
    """Be a worker on channel ``fd`` until told to stop; returns the exit status.

    ``master_pid``: set when the worker was forked by the fork server (``parent_pid``); it
    then lives as long as the master, whatever happens to the server."""
    master = -1
    if master_pid is None:
        _die_with_parent(parent_pid)
    else:
        master = _die_with_master(master_pid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        result: int = trio.run(_serve, fd, master)
    finally:
        if master >= 0:
            os.close(master)
    return result


def main() -> None:
    fd = int(os.environ.pop(CHANNEL_FD_ENV))
    parent_pid = int(os.environ.pop(PARENT_PID_ENV))
    sys.exit(run_worker(fd, parent_pid))


if __name__ == "__main__":
    main()
