"""Errors of the actor runtime.

::

    ActorError                 the root: anything the runtime raises on purpose
    ├── SpawnError             an actor could not be started
    │   ├── InvalidArguments   constructor arguments refused before any process started
    │   ├── BindError          a listener's socket could not be bound (address in use, bad host)
    │   └── ChildExists        the supervisor already has a child of that name
    ├── RestartLimitExceeded   a supervisor restarted too often and gave up
    ├── ActorNotFound          no actor is registered under that name or path
    ├── ChildRunning           the child runs: terminate it before deleting or restarting it
    ├── ActorGone              the actor stopped or its process died before it could answer
    │   └── NodeDown           the actor's node (another master of the cluster) is not in it
    ├── BrokerUnavailable      the cluster's Redis did not answer: a send to another node failed
    ├── RemoteError            a handler raised (or the far side could not decode the request
    │                          or encode the answer); carries the original type name and text
    ├── CallingSelf            an actor asked itself: it would wait for itself forever
    ├── UnexpectedReply        ``ask(msg, expect)`` got a reply of another type (a TypeError too)
    ├── ReloadFailed           a reload stopped: the new code did not import, or its workers
    │                          did not start (the old workers keep serving)
    ├── SystemNameTaken        another running system of this user has the same name
    └── StateError             shared state (``system.state``, ``ctx.state``) failed
        ├── StoreUnavailable   the store did not answer in time: a write is in doubt
        ├── StoreInUse         another system holds the store (one SQLite file, one master)
        ├── InvalidStoredValue the value stored under a key is not what was asked for
        └── InvalidKey         a key is empty, too long or has a character keys may not
                               (also a ValueError)

Wire-level failures are :class:`protocol.ProtocolError`; when one ends a channel, asks that
were waiting on the far side of it fail with :class:`ActorGone`, chained to it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._exits import ExitReason

__all__ = [
    "ActorError",
    "ActorGone",
    "ActorNotFound",
    "BindError",
    "BrokerUnavailable",
    "CallingSelf",
    "ChildExists",
    "ChildRunning",
    "InvalidArguments",
    "InvalidKey",
    "InvalidStoredValue",
    "NodeDown",
    "ReloadFailed",
    "RemoteError",
    "RestartLimitExceeded",
    "SpawnError",
    "StateError",
    "StoreInUse",
    "StoreUnavailable",
    "SystemNameTaken",
    "UnexpectedReply",
    "leaves",
    "unwrap_actor_errors",
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


class BindError(SpawnError):
    """A listener's socket could not be bound (an address in use, a bad host)."""

    fatal = True  # a port in use does not free itself for a restart loop


class ActorNotFound(ActorError):
    """No actor is registered under the name or path asked for."""


class ChildExists(SpawnError):
    """The supervisor already has a child of that name (running, or terminated and kept)."""

    fatal = True  # the same name stays taken


class ChildRunning(ActorError):
    """The child runs (or restarts): terminate it before deleting or restarting it."""


class ActorGone(ActorError):
    """The actor stopped, crashed, or its process died before it could answer.

    ``in_doubt`` is True when the message may have reached the actor before it went (its
    process died with the message sent to it): the handler may have run. When False, the
    message certainly was not handled.
    """

    in_doubt = False


class NodeDown(ActorGone):
    """The actor's node (another master of the cluster) left it, or is not in it."""

    in_doubt = True  # a request already sent may have been handled before the node went


class BrokerUnavailable(ActorError):
    """The cluster's Redis did not answer in time: a send to another node failed."""


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


class CallingSelf(ActorError):
    """An actor asked itself from one of its handlers (it would wait for itself forever)."""


class UnexpectedReply(ActorError, TypeError):
    """``ask(message, expect)`` got a reply that is not an ``expect``."""

    def __init__(self, expected: type, reply: object) -> None:
        super().__init__(f"expected a {expected.__name__} reply, got {reply!r}")
        self.expected = expected
        self.reply = reply


class ReloadFailed(ActorError):
    """A reload stopped: the new code did not import, or a new worker did not start. The
    workers not yet replaced keep serving with the old code."""


class SystemNameTaken(ActorError):
    """Another running system of this user already has this name (its control socket)."""


class StateError(ActorError):
    """Shared state failed (see the subclasses)."""


class StoreUnavailable(StateError):
    """The store did not answer within ``store_timeout`` (reads are still served from the
    replicas).

    A write that fails so is *in doubt*: it may have been made all the same (the store took
    it and its answer was lost or late, or a SQLite write waiting for a lock got it after
    the caller gave up). Read the key again, or write with ``compare_and_set``, to find
    out; as with a cancelled ``ask``, failing is not the same as not happening."""


class StoreInUse(StateError):
    """Another system already uses this store and cannot share it: a SQLite file has one
    master at a time (the second is refused rather than served what it once read)."""


class InvalidStoredValue(StateError):
    """The value stored under ``key`` cannot be read as the type asked for (written by
    another program, or an older schema)."""

    def __init__(self, key: str, detail: str) -> None:
        super().__init__(f"the value stored under {key!r} {detail}")
        self.key = key


class InvalidKey(StateError, ValueError):
    """A state key is empty, longer than 512 bytes, or has a character keys may not."""


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
