"""A supervised, typed, multi-process actor runtime on trio.

The package is flat private modules behind this façade (trio's way), in layers: a module
imports only from its own layer or below (``tests/test_layering.py`` holds the table and
checks every import, ``TYPE_CHECKING`` and function-local ones included). Lowest first:

L0, plain data and interfaces: errors (``_errors``), lifecycle events (``_events``), control
    messages (``_control``), the listener's messages (``_handoff``), ``Actor`` and the
    ``ActorContext`` interface (``_actor``), ``ActorRef`` over a ``Sender`` (``_ref``), child
    specs (``_spec``), argument validation (``_arguments``), the tree's interfaces (``_tree``),
    the shared state's interface (``_shared``).
L1, the per-process machinery: links (``_link``), the name registry (``_names``), pending
    asks (``_asks``), routing (``_router``), OS processes (``_processes``), sockets
    (``_sockets``).
L2, running things: cells, in-process actors (``_cell``); worker handles, process actors
    (``_worker``); the fork server (``_forkserver``).
L3, supervision: the pure restart decision (``_restart``), the supervisor (``_supervisor``),
    starting a child (``_start``).
L4, listeners (master side, ``_listener``) and acceptors (worker side, ``_acceptor``);
    shared state (``_state``: replicas, the master's service; ``_stores``: memory, SQLite,
    Redis).
L5, composition: ``open_system`` (``_system``), the worker's bootstrap (``_bootstrap``), the
    fork server's process (``_zygote``).

A lower layer that needs something of a higher one declares a Protocol and has it injected
(a ``Sender`` for ``ActorRef``, a ``Mailbox`` for the router, ``StartChild``/``SpawnChild``
for supervisors and actor contexts).
"""

from ._acceptor import Acceptor as Acceptor
from ._actor import Actor as Actor
from ._actor import ActorContext as ActorContext
from ._actor import handler as handler
from ._errors import ActorError as ActorError
from ._errors import ActorGone as ActorGone
from ._errors import ActorNotFound as ActorNotFound
from ._errors import BindError as BindError
from ._errors import CallingSelf as CallingSelf
from ._errors import InvalidArguments as InvalidArguments
from ._errors import InvalidKey as InvalidKey
from ._errors import InvalidStoredValue as InvalidStoredValue
from ._errors import ReloadFailed as ReloadFailed
from ._errors import RemoteError as RemoteError
from ._errors import RestartLimitExceeded as RestartLimitExceeded
from ._errors import SpawnError as SpawnError
from ._errors import StateError as StateError
from ._errors import StoreInUse as StoreInUse
from ._errors import StoreUnavailable as StoreUnavailable
from ._errors import SystemNameTaken as SystemNameTaken
from ._errors import UnexpectedReply as UnexpectedReply
from ._events import ActorDrained as ActorDrained
from ._events import ActorExited as ActorExited
from ._events import ActorReady as ActorReady
from ._events import ActorRestarted as ActorRestarted
from ._events import ActorStarted as ActorStarted
from ._events import ActorSuicided as ActorSuicided
from ._events import Event as Event
from ._events import ExitReason as ExitReason
from ._events import ReloadAborted as ReloadAborted
from ._events import StoreDisconnected as StoreDisconnected
from ._events import StoreReconnected as StoreReconnected
from ._events import StoreReset as StoreReset
from ._events import SupervisorGaveUp as SupervisorGaveUp
from ._events import SystemReloaded as SystemReloaded
from ._handoff import AcceptorStats as AcceptorStats
from ._handoff import HandlePassed as HandlePassed
from ._handoff import ListenerReport as ListenerReport
from ._listener import Listener as Listener
from ._listener import ListenerSpec as ListenerSpec
from ._listener import listener as listener
from ._operations import ActorStatus as ActorStatus
from ._operations import SystemInfo as SystemInfo
from ._ref import ActorRef as ActorRef
from ._restart import Decision as Decision
from ._restart import RestartHistory as RestartHistory
from ._restart import decide as decide
from ._shared import Entry as Entry
from ._shared import State as State
from ._shared import StateChanged as StateChanged
from ._shared import StateResynced as StateResynced
from ._spec import Backoff as Backoff
from ._spec import SupervisorSpec as SupervisorSpec
from ._spec import WorkerSpec as WorkerSpec
from ._spec import supervisor as supervisor
from ._spec import worker as worker
from ._state import SharedState as SharedState
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
    "ActorStatus",
    "ActorSuicided",
    "ActorSystem",
    "Backoff",
    "BindError",
    "CallingSelf",
    "Decision",
    "Entry",
    "Event",
    "ExitReason",
    "HandlePassed",
    "InvalidArguments",
    "InvalidKey",
    "InvalidStoredValue",
    "Listener",
    "ListenerReport",
    "ListenerSpec",
    "ReloadAborted",
    "ReloadFailed",
    "RemoteError",
    "RestartHistory",
    "RestartLimitExceeded",
    "SharedState",
    "SpawnError",
    "State",
    "StateChanged",
    "StateError",
    "StateResynced",
    "StoreDisconnected",
    "StoreInUse",
    "StoreReconnected",
    "StoreReset",
    "StoreUnavailable",
    "SupervisorGaveUp",
    "SupervisorSpec",
    "SystemInfo",
    "SystemNameTaken",
    "SystemReloaded",
    "UnexpectedReply",
    "WorkerSpec",
    "decide",
    "handler",
    "listener",
    "open_system",
    "supervisor",
    "worker",
]

# Public names print as ``actors.ActorGone``, not ``actors._errors.ActorGone`` (as trio does).
# Message classes keep their module: their wire tags are fixed when they are defined.
for _name in __all__:
    _obj = globals()[_name]
    if getattr(_obj, "__module__", "").startswith("actors._"):
        try:
            _obj.__module__ = __name__
        except (AttributeError, TypeError):
            pass
del _name, _obj
