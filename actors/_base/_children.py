"""Children managed at runtime (OTP's supervisor API), as data: the rows and counts a
supervisor gives of its children, the requests that reach a supervisor in another process
and their answers, and a spec's wire form (the interface actor contexts are given,
:class:`ManageChildren`, is with the tree's, in ``_tree``).

Nothing here runs anything: the supervisor does the work (``_supervision``), and the
services of each process pass requests to the process that runs the supervisor.
"""

from __future__ import annotations

from typing import Literal

from protocol import Message

from ._errors import ActorError, ActorNotFound, ChildExists, ChildRunning, SpawnError
from ._ref import ActorRef

__all__ = [
    "BackoffWire",
    "ChildAnswer",
    "ChildCount",
    "ChildInfo",
    "ChildKind",
    "ChildRequest",
    "ChildState",
    "SpecWire",
    "SupervisorWire",
    "WorkerWire",
    "answer_for",
    "raise_for",
]

ChildKind = Literal["supervisor", "listener", "worker", "actor", "command"]
"""What a child is, for status: a (plain) supervisor, a listener, a worker process's actor,
an actor in this process, an external program."""

ChildState = Literal[
    "starting", "running", "retiring", "stopping", "exited", "restarting", "terminated"
]
"""Where a child is: the state of its instance, ``restarting`` between two instances, or
``terminated`` (stopped with ``terminate_child``, or not restarted after its exit: its spec
is kept until ``delete_child``)."""


class ChildInfo(Message, tag="actors.ChildInfo"):
    """One child of a supervisor, as ``which_children`` gives it."""

    name: str
    path: str
    kind: ChildKind
    pid: int | None
    state: ChildState
    restarts: int


class ChildCount(Message, tag="actors.ChildCount"):
    """``count_children``: the specs a supervisor keeps, the children that run, and how
    many of those are supervisors (listeners included) or workers (actors, in-process or
    in a process of their own), as OTP's ``count_children``."""

    specs: int
    active: int
    supervisors: int
    workers: int


class BackoffWire(Message, tag="actors.BackoffWire"):
    """A :class:`Backoff` as it travels."""

    initial: float
    factor: float
    cap: float
    jitter: float
    reset_after: float


class WorkerWire(Message, tag="actors.WorkerWire"):
    """A ``worker(...)`` spec as it travels: its class by import path, its arguments as
    JSON (checked again against the class where it starts)."""

    actor_class: str
    name: str
    process: bool
    restart: str
    shutdown: float | str
    start_timeout: float
    heartbeat_timeout: float | None
    arguments: str
    reload: bool
    max_memory: int | None


class SupervisorWire(Message, tag="actors.SupervisorWire"):
    """A ``supervisor(...)`` spec as it travels (a ``pool(...)``'s: with its template and
    size)."""

    name: str
    strategy: str
    max_restarts: int
    within: float
    backoff: BackoffWire | None
    children: list[WorkerWire | SupervisorWire]
    restart: str
    shutdown: float | str
    template: WorkerWire | None = None  # (a pool's)
    policy: str = "round_robin"  # (a pool's)
    size: int | None = None  # (a pool's)


SpecWire = WorkerWire | SupervisorWire

Operation = Literal["start", "terminate", "restart", "delete", "which", "count", "scale"]


class ChildRequest(Message, tag="actors.ChildRequest"):
    """One runtime operation on a supervisor of another process (``path``: the
    supervisor's for start, which, count and scale; the child's for the others)."""

    operation: Operation
    path: str
    spec: WorkerWire | SupervisorWire | None = None
    count: int | None = None  # (scale: the pool's new size)


ErrorKind = Literal["not_found", "exists", "running", "spawn", "invalid"]


class ChildAnswer(Message, tag="actors.ChildAnswer"):
    """What a :class:`ChildRequest` came to: its result, or the error to raise."""

    ref: ActorRef | None = None
    children: list[ChildInfo] | None = None
    count: ChildCount | None = None
    error: ErrorKind | None = None
    detail: str = ""


_ERRORS: dict[ErrorKind, type[ActorError]] = {
    "not_found": ActorNotFound,
    "exists": ChildExists,
    "running": ChildRunning,
    "spawn": SpawnError,
}


def answer_for(exc: Exception) -> ChildAnswer:
    """The answer that makes the asker raise ``exc``'s kind of error."""
    kinds: list[tuple[type[Exception], ErrorKind]] = [
        (ChildExists, "exists"), (ChildRunning, "running"), (ActorNotFound, "not_found"),
        (SpawnError, "spawn"),
    ]
    for cls, kind in kinds:
        if isinstance(exc, cls):
            return ChildAnswer(error=kind, detail=str(exc))
    return ChildAnswer(error="invalid", detail=f"{type(exc).__name__}: {exc}")


def raise_for(answer: ChildAnswer) -> ChildAnswer:
    """``answer`` itself, or the typed error it carries raised."""
    if answer.error is None:
        return answer
    if answer.error == "invalid":
        raise ValueError(answer.detail)
    raise _ERRORS[answer.error](answer.detail)
