"""Control messages exchanged between a process and the worker processes it started.

They travel in ``SYSTEM`` frames (and failures in ``ERROR`` frames) and never reach user
handlers. Their tags are fixed so that they do not depend on module layout.
"""

from __future__ import annotations

import traceback
from typing import Literal

from protocol import Message

__all__ = [
    "Credit",
    "EventReport",
    "Failure",
    "Heartbeat",
    "Hello",
    "NameRegistered",
    "NameUnregistered",
    "PoolDeclared",
    "PoolDropped",
    "Probe",
    "Probed",
    "Ready",
    "Relieve",
    "Retire",
    "Start",
    "StartFailed",
    "Stop",
    "Stopping",
    "Suicide",
    "SystemStopping",
    "qualified_name",
]

FailureKind = Literal["remote", "gone", "not_found", "protocol"]


class Failure(Message, tag="actors.Failure"):
    """Why an ask failed; the body of every ERROR frame."""

    kind: FailureKind
    type_name: str
    message: str
    traceback: str = ""
    actor: str = ""
    in_doubt: bool = False  # gone: the request may have been handled before it went

    @classmethod
    def from_exception(cls, kind: FailureKind, exc: BaseException, actor: str = "") -> Failure:
        return cls(
            kind=kind,
            type_name=qualified_name(type(exc)),
            message=str(exc),
            traceback="".join(traceback.format_exception(exc)),
            actor=actor,
        )


def qualified_name(cls: type) -> str:
    """How an exception type is named across processes (``module.Qualname``)."""
    module = cls.__module__
    return cls.__qualname__ if module == "builtins" else f"{module}.{cls.__qualname__}"


class Hello(Message, tag="actors.Hello"):
    """A worker's first frame: who it is and which protocol it speaks."""

    version: int
    pid: int


class Start(Message, tag="actors.Start"):
    """What the worker must run."""

    version: int
    node: str
    actor_class: str
    arguments: str  # JSON of the validated constructor arguments
    path: str
    main_path: str | None = None
    main_module: str | None = None
    sys_path: list[str]
    max_frame_size: int
    heartbeat: float = 0.0  # seconds between heartbeats; 0: none
    shutdown_timeout: float = 5.0  # the actor's shutdown time (its drain gets most of it)
    state_service: str | None = None  # the address of the master's shared-state service


class Ready(Message, tag="actors.Ready"):
    """The worker's actor finished ``setup`` and takes messages at ``address``."""

    address: str


class StartFailed(Message, tag="actors.StartFailed"):
    """The worker could not start its actor."""

    failure: Failure


class Stop(Message, tag="actors.Stop"):
    """Finish queued work, run cleanup, exit."""


class Stopping(Message, tag="actors.Stopping"):
    """The worker's actor has stopped; ``failure`` says why when it crashed."""

    failure: Failure | None = None


class Suicide(Message, tag="actors.Suicide"):
    """The worker hit an unexpected exception: start my replacement, I drain and exit."""

    failure: Failure


class Retire(Message, tag="actors.Retire"):
    """The worker's actor asks to be replaced (no failure: ``reason`` says why); it drains
    and stops once released, as after a suicide."""

    reason: str


class Relieve(Message, tag="actors.Relieve"):
    """To a worker draining after its suicide: the replacement is ready, finish and exit."""


class Heartbeat(Message, tag="actors.Heartbeat"):
    """The worker's event loop is alive."""


class EventReport(Message, tag="actors.EventReport"):
    """A lifecycle event from a worker, forwarded towards the master's ``events()``."""

    tag: str
    body: str


class NameRegistered(Message, tag="actors.NameRegistered"):
    """An actor took a path (sent up towards the master, which keeps the system's names)."""

    path: str
    address: str


class PoolDeclared(Message, tag="actors.PoolDeclared"):
    """A pool runs at ``path``: a send to it goes to one of its members (``path/0``, ...)
    (sent up towards the master, as names are); ``policy``: how it picks one."""

    path: str
    policy: str = "round_robin"


class PoolDropped(Message, tag="actors.PoolDropped"):
    """The pool at ``path`` ended."""

    path: str


class NameUnregistered(Message, tag="actors.NameUnregistered"):
    """An actor gave up its path."""

    path: str
    address: str


class Credit(Message, tag="actors.Credit"):
    """Room for ``bytes`` more bytes of tells: the receiver delivered that many onward."""

    bytes: int


class SystemStopping(Message, tag="actors.SystemStopping"):
    """The system is shutting down (sent down the tree): a handler whose ask fails because
    another actor already stopped is part of the shutdown, not a crash."""


class Probe(Message, tag="actors.Probe"):
    """How is this actor? Answered by the runtime (inline), never by a handler."""


class Probed(Message, tag="actors.Probed"):
    """An actor's figures: its mailbox depth, what it handled (``asks`` of them asks),
    and how long its handlers took on asks (histogram counts per ``buckets`` upper bound,
    seconds; the last count is above the last bound)."""

    pid: int
    mailbox: int
    handled: int
    asks: int
    ask_seconds: float
    ask_buckets: list[int]
