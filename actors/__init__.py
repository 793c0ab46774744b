"""A supervised, typed, multi-process actor runtime on trio."""

from ._actor import Actor as Actor
from ._actor import handler as handler
from ._context import ActorContext as ActorContext
from ._errors import ActorError as ActorError
from ._errors import ActorGone as ActorGone
from ._errors import ActorNotFound as ActorNotFound
from ._errors import InvalidArguments as InvalidArguments
from ._errors import RemoteError as RemoteError
from ._errors import SpawnError as SpawnError
from ._ref import ActorRef as ActorRef
from ._system import ActorSystem as ActorSystem
from ._system import open_system as open_system

__all__ = [
    "Actor",
    "ActorContext",
    "ActorError",
    "ActorGone",
    "ActorNotFound",
    "ActorRef",
    "ActorSystem",
    "InvalidArguments",
    "RemoteError",
    "SpawnError",
    "handler",
    "open_system",
]
