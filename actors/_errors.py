"""Errors of the actor runtime.

::

    ActorError                 the root: anything the runtime raises on purpose
    ├── SpawnError             an actor could not be started
    │   └── InvalidArguments   constructor arguments refused before any process started
    ├── ActorNotFound          no actor is registered under that name or path
    ├── ActorGone              the actor stopped or its process died before it could answer
    └── RemoteError            a handler raised; carries the original type name and traceback

Wire-level failures are :class:`protocol.ProtocolError`; when one ends a channel, asks that
were waiting on the far side of it fail with :class:`ActorGone`, chained to it.
"""

from __future__ import annotations

__all__ = [
    "ActorError",
    "ActorGone",
    "ActorNotFound",
    "InvalidArguments",
    "RemoteError",
    "SpawnError",
]


class ActorError(Exception):
    """Base of every error the actor runtime raises."""


class SpawnError(ActorError):
    """An actor could not be started (import, construction, setup, or its process failed)."""


class InvalidArguments(SpawnError):
    """Constructor arguments do not fit the actor's ``__init__``, or are not JSON."""


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
