"""Errors of the actor runtime.

::

    ActorError                 the root: anything the runtime raises on purpose
    ├── SpawnError             an actor could not be started
    │   └── InvalidArguments   constructor arguments refused before any process started
    ├── RestartLimitExceeded   a supervisor restarted too often and gave up
    ├── ActorNotFound          no actor is registered under that name or path
    ├── ActorGone              the actor stopped or its process died before it could answer
    └── RemoteError            a handler raised; carries the original type name and traceback

Wire-level failures are :class:`protocol.ProtocolError`; when one ends a channel, asks that
were waiting on the far side of it fail with :class:`ActorGone`, chained to it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._events import ExitReason

__all__ = [
    "ActorError",
    "ActorGone",
    "ActorNotFound",
    "InvalidArguments",
    "RemoteError",
    "RestartLimitExceeded",
    "SpawnError",
]


class ActorError(Exception):
    """Base of every error the actor runtime raises."""


class SpawnError(ActorError):
    """An actor could not be started (import, construction, setup, or its process failed)."""

    reason: ExitReason | None = None  # how the failed instance ended, when it got that far
    fatal = False  # True: trying again cannot help (a supervisor fails at once, no restarts)


class RestartLimitExceeded(ActorError):
    """A supervisor saw more than ``max_restarts`` restarts within ``within`` seconds."""

    def __init__(self, path: str, restarts: int, within: float, last: str) -> None:
        super().__init__(
            f"supervisor {path!r} gave up: {restarts} restarts within {within} s "
            f"(last exit: {last})"
        )
        self.path = path
        self.restarts = restarts
        self.within = within


class InvalidArguments(SpawnError):
    """Constructor arguments do not fit the actor's ``__init__``, or are not JSON."""

    fatal = True


class ActorNotFound(ActorError):
    """No actor is registered under the name or path asked for."""


class ActorGone(ActorError):
    """The actor stopped, crashed, or its process died before it could answer."""


class RemoteError(ActorError):
    """A handler raised; ``type_name``, ``message`` and ``traceback`` describe the original."""

    def __init__(self, type_name: str, message: str, traceback: str, actor: str = "") -> None:
        where = f" in {actor}" if actor else ""
        super().__init__(f"{type_name}{where}: {message}")
        self.type_name = type_name
        self.message = message
        self.traceback = traceback
        self.actor = actor

    def __str__(self) -> str:
        text = super().__str__()
        if self.traceback:
            text += "\n\nRemote traceback:\n" + self.traceback.rstrip()
        return text


def leaves(exc: BaseException) -> list[BaseException]:
    """The exceptions inside (possibly nested) exception groups, or ``[exc]``."""
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in leaves(inner)]
    return [exc]


@contextmanager
def unwrap_actor_errors() -> Iterator[None]:
    """Let an ActorError raised inside a nursery's body out as itself, not in a group of one."""
    try:
        yield
    except BaseExceptionGroup as group:
        found = leaves(group)
        if len(found) == 1 and isinstance(found[0], ActorError):
            raise found[0] from None
        raise
