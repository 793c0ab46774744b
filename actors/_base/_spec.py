"""Child specifications: what a supervisor starts, and how it treats each child.

A supervisor is data (as in OTP): its flags and an ordered list of child specs, validated
and frozen when built with :func:`supervisor`, :func:`worker` and :func:`command`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any, Literal

from ._actor import Actor
from ._arguments import arguments_to_json, validate_arguments

__all__ = [
    "Backoff",
    "ChildSpec",
    "CommandSpec",
    "PoolPolicy",
    "PoolSpec",
    "RestartType",
    "Shutdown",
    "Strategy",
    "SupervisorSpec",
    "WorkerSpec",
    "command",
    "grace_of",
    "pool",
    "supervisor",
    "validate_name",
    "worker",
]

RestartType = Literal["permanent", "transient", "temporary"]
Strategy = Literal["one_for_one", "one_for_all", "rest_for_one"]
Shutdown = float | Literal["infinity", "brutal_kill"]

_RESTART_TYPES = ("permanent", "transient", "temporary")
_STRATEGIES = ("one_for_one", "one_for_all", "rest_for_one")
_FORBIDDEN = frozenset("/|@")


def validate_name(name: str) -> str:
    if not isinstance(name, str) or not name or _FORBIDDEN & set(name) or name.strip() != name:
        raise ValueError(f"invalid name {name!r}: it must be a non-empty string without / | @")
    return name


def grace_of(shutdown: Shutdown) -> float:
    """Seconds a child gets to stop before it is killed."""
    if shutdown == "infinity":
        return math.inf
    if shutdown == "brutal_kill":
        return 0.0
    return float(shutdown)


def _check_shutdown(shutdown: Shutdown) -> Shutdown:
    if shutdown in ("infinity", "brutal_kill"):
        return shutdown
    if isinstance(shutdown, bool) or not isinstance(shutdown, int | float) or shutdown < 0:
        raise ValueError(
            f"shutdown must be seconds >= 0, 'infinity' or 'brutal_kill', not {shutdown!r}"
        )
    return float(shutdown)


@dataclass(frozen=True)
class Backoff:
    """Exponential delay before restarting a child that keeps failing.

    The n-th consecutive abnormal exit waits ``min(cap, initial * factor**(n-1))``, spread by
    ``±jitter`` (a fraction). A child that stayed up ``reset_after`` seconds starts over at
    ``initial``. It applies after an exit the child did not choose: a worker process that
    died (killed, crashed, unresponsive), an in-process crash, a failed start. Exits that
    are replacements (a suicide: a process actor's handler raised, and its old worker
    still drains; ``max_memory``; a requested replacement) and normal exits restart at
    once and never advance it.
    """

    initial: float = 0.1
    factor: float = 2.0
    cap: float = 10.0
    jitter: float = 0.1
    reset_after: float = 30.0

    def __post_init__(self) -> None:
        if self.initial < 0 or self.cap < self.initial:
            raise ValueError("backoff needs 0 <= initial <= cap")
        if self.factor < 1:
            raise ValueError("backoff factor must be >= 1")
        if not 0 <= self.jitter < 1:
            raise ValueError("backoff jitter is a fraction in [0, 1)")
        if self.reset_after < 0:
            raise ValueError("backoff reset_after must be >= 0")

    def delay(self, failures: int, random: float) -> float:
        """Delay after ``failures`` consecutive failures; ``random`` is uniform in [0, 1)."""
        if failures <= 0:
            return 0.0
        base = min(self.cap, self.initial * self.factor ** min(failures - 1, 64))
        return max(0.0, base * (1 + self.jitter * (2 * random - 1)))


@dataclass(frozen=True)
class WorkerSpec:
    """How to start one actor and what to do when it exits. Build it with :func:`worker`."""

    actor_class: type[Actor]
    name: str
    process: bool = False
    restart: RestartType = "permanent"
    shutdown: Shutdown = 5.0
    start_timeout: float = 30.0
    heartbeat_timeout: float | None = None
    arguments: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    arguments_json: str | None = None
    reload: bool = False
    max_memory: int | None = None


@dataclass(frozen=True)
class SupervisorSpec:
    """A supervisor's flags and children. Build it with :func:`supervisor`."""

    name: str
    strategy: Strategy = "one_for_one"
    max_restarts: int = 3
    within: float = 5.0
    backoff: Backoff | None = None
    children: tuple[ChildSpec, ...] = ()
    restart: RestartType = "permanent"
    shutdown: Shutdown = "infinity"

    def child(self, name: str) -> ChildSpec:
        for spec in self.children:
            if spec.name == name:
                return spec
        raise KeyError(name)

    @property
    def start_timeout(self) -> float:
        return math.inf


@dataclass(frozen=True)
class CommandSpec:
    """How to run an external program and what to do when it exits. Build it with
    :func:`command`."""

    name: str
    argv: tuple[str, ...]
    env: Mapping[str, str] | None = None
    cwd: str | None = None
    restart: RestartType = "permanent"
    shutdown: Shutdown = 5.0
    sockets: tuple[str, ...] = ()
    stdin: bytes | None = None

    @property
    def start_timeout(self) -> float:
        return math.inf  # ready once spawned: there is no handshake to wait for


ChildSpec = WorkerSpec | SupervisorSpec | CommandSpec


def worker(
    actor_class: type[Actor],
    *,
    name: str | None = None,
    process: bool = False,
    restart: RestartType = "permanent",
    shutdown: Shutdown = 5.0,
    start_timeout: float = 30.0,
    heartbeat_timeout: float | None = None,
    reload: bool = False,
    max_memory: int | None = None,
    **kwargs: Any,
) -> WorkerSpec:
    """Spec of an actor under a supervisor (OTP's worker child spec).

    ``restart``: ``permanent`` (always restarted), ``transient`` (restarted after an
    abnormal exit only), ``temporary`` (never). ``shutdown``: seconds it gets to stop before
    it is killed, ``"infinity"``, or ``"brutal_kill"`` (killed at once). ``start_timeout``: a
    start not ready by then is killed and counts as a failure. ``heartbeat_timeout`` (process
    actors): a worker silent this long is killed as unresponsive. ``reload``: replaced by
    ``system.reload()`` (and SIGHUP), with the code as it is on disk then (listeners always
    are). ``max_memory`` (bytes, process actors): a worker whose resident memory stays above
    it is replaced as after a suicide (the new one first), with exit reason ``memory``.
    ``kwargs`` go to the actor's ``__init__`` and are validated now (and must be JSON for a
    process).
    """
    if not (isinstance(actor_class, type) and issubclass(actor_class, Actor)):
        raise TypeError(f"worker() takes an Actor subclass, not {actor_class!r}")
    if restart not in _RESTART_TYPES:
        raise ValueError(f"restart must be one of {_RESTART_TYPES}, not {restart!r}")
    if start_timeout <= 0:
        raise ValueError("start_timeout must be > 0 seconds")
    if heartbeat_timeout is not None and heartbeat_timeout <= 0:
        raise ValueError("heartbeat_timeout must be > 0 seconds (or None)")
    if max_memory is not None and (isinstance(max_memory, bool) or not isinstance(
        max_memory, int) or max_memory <= 0):
        raise ValueError("max_memory must be a number of bytes > 0 (or None)")
    if max_memory is not None and not process:
        raise ValueError("max_memory limits a worker process: it needs process=True")
    arguments_json = None
    if process:
        arguments_json = arguments_to_json(actor_class, kwargs)
    else:
        validate_arguments(actor_class, kwargs)
    return WorkerSpec(
        actor_class=actor_class,
        name=validate_name(name if name is not None else actor_class.__name__.lower()),
        process=bool(process),
        restart=restart,
        shutdown=_check_shutdown(shutdown),
        start_timeout=float(start_timeout),
        heartbeat_timeout=heartbeat_timeout,
        arguments=MappingProxyType(dict(kwargs)),
        arguments_json=arguments_json,
        reload=bool(reload),
        max_memory=max_memory,
    )


def command(
    name: str,
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
    restart: RestartType = "permanent",
    shutdown: Shutdown = 5.0,
    sockets: Sequence[str] = (),
    stdin: bytes | None = None,
) -> CommandSpec:
    """Spec of an external program under a supervisor (a Node or Go server, a script).

    ``argv[0]`` is looked up in ``PATH`` as a shell would; ``env`` is added to the master's
    environment; ``cwd`` is where it runs. ``restart`` and ``shutdown`` as for
    :func:`worker`: stopping it sends SIGTERM to its process group, then SIGKILL after
    ``shutdown`` seconds. ``sockets``: paths of listeners (``listener(..., acceptor=None)``)
    whose listening sockets it gets by the systemd socket-activation convention
    (``LISTEN_FDS``, ``LISTEN_PID``, ``LISTEN_FDNAMES``, fds from 3). ``stdin``: bytes
    written to its standard input, which is then closed (None: ``/dev/null``).
    """
    if isinstance(argv, str | bytes) or not argv or not all(
            isinstance(arg, str) and "\0" not in arg for arg in argv):
        raise TypeError("command() takes argv as a non-empty sequence of strings, not "
                        f"{argv!r}")
    if restart not in _RESTART_TYPES:
        raise ValueError(f"restart must be one of {_RESTART_TYPES}, not {restart!r}")
    if env is not None and not all(
            isinstance(k, str) and isinstance(v, str) and k and "=" not in k
            for k, v in env.items()):
        raise TypeError("env maps variable names (without '=') to strings")
    if cwd is not None and not isinstance(cwd, str):
        raise TypeError(f"cwd is a directory's path, not {cwd!r}")
    if isinstance(sockets, str) or not all(isinstance(path, str) and path for path in sockets):
        raise TypeError(f"sockets is a sequence of listener paths, not {sockets!r}")
    if stdin is not None and not isinstance(stdin, bytes):
        raise TypeError(f"stdin is bytes (or None), not {type(stdin).__name__}")
    return CommandSpec(
        name=validate_name(name),
        argv=tuple(argv),
        env=None if env is None else MappingProxyType(dict(env)),
        cwd=cwd,
        restart=restart,
        shutdown=_check_shutdown(shutdown),
        sockets=tuple(sockets),
        stdin=stdin,
    )


def supervisor(
    name: str,
    *,
    strategy: Strategy = "one_for_one",
    max_restarts: int = 3,
    within: float = 5.0,
    backoff: Backoff | None = None,
    children: Sequence[ChildSpec] = (),
    restart: RestartType = "permanent",
    shutdown: Shutdown = "infinity",
) -> SupervisorSpec:
    """Spec of a supervisor (OTP semantics; defaults as OTP's: one_for_one, 3 in 5 s).

    More than ``max_restarts`` restarts within ``within`` seconds makes the supervisor stop
    its children (last started first) and fail to its parent. Children start in order, each
    once the previous one is ready. ``restart`` and ``shutdown`` apply to the supervisor as
    the child of another one.
    """
    if strategy not in _STRATEGIES:
        raise ValueError(f"strategy must be one of {_STRATEGIES}, not {strategy!r}")
    if isinstance(max_restarts, bool) or not isinstance(max_restarts, int) or max_restarts < 0:
        raise ValueError("max_restarts must be an int >= 0")
    if not within > 0:
        raise ValueError("within must be > 0 seconds")
    if restart not in _RESTART_TYPES:
        raise ValueError(f"restart must be one of {_RESTART_TYPES}, not {restart!r}")
    if backoff is not None and not isinstance(backoff, Backoff):
        raise TypeError("backoff must be a Backoff")
    seen: set[str] = set()
    for child in children:
        if not isinstance(child, WorkerSpec | SupervisorSpec | CommandSpec):
            raise TypeError(
                f"children are worker(...), command(...) or supervisor(...) specs, not {child!r}"
            )
        if child.name in seen:
            raise ValueError(f"supervisor {name!r} has two children named {child.name!r}")
        seen.add(child.name)
    return SupervisorSpec(
        name=validate_name(name),
        strategy=strategy,
        max_restarts=max_restarts,
        within=float(within),
        backoff=backoff,
        children=tuple(children),
        restart=restart,
        shutdown=_check_shutdown(shutdown),
    )


PoolPolicy = Literal["round_robin", "least_busy"]
"""How a pool's path picks a member for each send."""


@dataclass(frozen=True)
class PoolSpec(SupervisorSpec):
    """A supervisor of ``size`` workers made from one ``template``, named ``0`` to
    ``size - 1``; a send to its path goes to one of them. Build it with :func:`pool`."""

    template: WorkerSpec | None = None
    size: int = 1
    policy: PoolPolicy = "round_robin"


def pool(
    name: str,
    template: WorkerSpec,
    *,
    size: int,
    max_restarts: int = 3,
    within: float = 5.0,
    backoff: Backoff | None = None,
    restart: RestartType = "permanent",
    shutdown: Shutdown = "infinity",
    policy: PoolPolicy = "round_robin",
) -> PoolSpec:
    """Spec of a pool: ``size`` identical children from ``template`` (a ``worker(...)``;
    its name is not used), ``name/0`` to ``name/{size-1}``, under a one_for_one supervisor
    with these flags. A ref to the pool's path spreads sends over the members that run and
    waits through their restarts; ``system.scale`` resizes it. ``policy``: ``round_robin``
    (in turn) or ``least_busy`` (the member with the fewest asks in flight from the sending
    process, in turn among equals)."""
    if not isinstance(template, WorkerSpec):
        raise TypeError(f"a pool's template is a worker(...) spec, not {template!r}")
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError("a pool's size is an int >= 1")
    if policy not in ("round_robin", "least_busy"):
        raise ValueError(f"a pool's policy is 'round_robin' or 'least_busy', not {policy!r}")
    base = supervisor(name, max_restarts=max_restarts, within=within, backoff=backoff,
                      restart=restart, shutdown=shutdown,
                      children=[replace(template, name=str(i)) for i in range(size)])
    return PoolSpec(
        name=base.name, strategy=base.strategy, max_restarts=base.max_restarts,
        within=base.within, backoff=base.backoff, children=base.children,
        restart=base.restart, shutdown=base.shutdown, template=template, size=size,
        policy=policy,
    )
