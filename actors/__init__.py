"""A supervised, typed, multi-process actor runtime on trio."""

from ._actor import Actor as Actor
from ._actor import handler as handler
from ._context import ActorContext as ActorContext
from ._errors import ActorError as ActorError
from ._errors import ActorGone as ActorGone
from ._errors import ActorNotFound as ActorNotFound
from ._errors import InvalidArguments as InvalidArguments
from ._errors import RemoteError as RemoteError
from ._errors import RestartLimitExceeded as RestartLimitExceeded
from ._errors import SpawnError as SpawnError
from ._events import ActorDrained as ActorDrained
from ._events import ActorExited as ActorExited
from ._events import ActorReady as ActorReady
from ._events import ActorRestarted as ActorRestarted
from ._events import ActorStarted as ActorStarted
from ._events import ActorSuicided as ActorSuicided
from ._events import Event as Event
from ._events import ExitReason as ExitReason
from ._events import SupervisorGaveUp as SupervisorGaveUp
from ._listener import Acceptor as Acceptor
from ._listener import AcceptorStats as AcceptorStats
from ._listener import BindError as BindError
from ._listener import HandlePassed as HandlePassed
from ._listener import ListenerReport as ListenerReport
from ._listener import ListenerSpec as ListenerSpec
from ._listener import listener as listener
from ._ref import ActorRef as ActorRef
from ._restart import Decision as Decision
from ._restart import RestartHistory as RestartHistory
from ._restart import decide as decide
from ._spec import Backoff as Backoff
from ._spec import SupervisorSpec as SupervisorSpec
from ._spec import WorkerSpec as WorkerSpec
from ._spec import supervisor as supervisor
from ._spec import worker as worker
from ._system import ActorSystem as ActorSystem
from ._system import open_system as open_system

__all__ = [
    "Acceptor",
    "AcceptorStats",
    "Actor",
    "ActorContext",
    "ActorDrained",
    "ActorError",
    "ActorExited",
    "ActorGone",
    "ActorNotFound",
    "ActorReady",
    "ActorRef",
    "ActorRestarted",
    "ActorStarted",
    "ActorSuicided",
    "ActorSystem",
    "Backoff",
    "BindError",
    "Decision",
    "Event",
    "ExitReason",
    "HandlePassed",
    "InvalidArguments",
    "ListenerReport",
    "ListenerSpec",
    "RemoteError",
    "RestartHistory",
    "RestartLimitExceeded",
    "SpawnError",
    "SupervisorGaveUp",
    "SupervisorSpec",
    "WorkerSpec",
    "decide",
    "handler",
    "listener",
    "open_system",
    "supervisor",
    "worker",
]
