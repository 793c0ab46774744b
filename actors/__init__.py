"""A supervised, typed, multi-process actor runtime on trio.

The runtime is private subpackages behind this façade (trio's way), one or more per layer, a
module importing only from its own layer or below (``tests/test_layering.py`` checks every
import, ``TYPE_CHECKING`` and function-local ones included). Lowest first:

L0 ``_base``: plain data and interfaces (errors, events, control messages, ``Actor``,
    ``ActorRef``, child specs, the tree's and the shared state's interfaces).
L1 ``_messaging``: the message core (links, routing, lanes, the sending side, pending asks,
    names).
L2 ``_running``: running things (cells, worker processes, the fork server, OS processes).
L3 ``_supervision``: the restart decision, supervisors, starting children.
L4 ``_listening`` (listeners, acceptors), ``_state`` (replicas, the service, the stores),
    ``_operations`` (status, output, the control socket, metrics), ``_cluster`` (masters
    on several hosts through Redis Streams: membership, the transport, monitors, names).
L5 ``_system``: composition (``open_system``, a worker's bootstrap, the fork server's process,
    the CLI).

ARCHITECTURE.md, at the repository's root, says what each layer owns and follows a message,
a connection, a worker and a state change through the functions they pass.
"""

import importlib as _importlib
import typing as _typing

from ._base._actor import Actor as Actor
from ._base._actor import ActorContext as ActorContext
from ._base._actor import handler as handler
from ._base._errors import ActorError as ActorError
from ._base._errors import ActorGone as ActorGone
from ._base._errors import ActorNotFound as ActorNotFound
from ._base._errors import BindError as BindError
from ._base._errors import BrokerUnavailable as BrokerUnavailable
from ._base._errors import CallingSelf as CallingSelf
from ._base._errors import ChildExists as ChildExists
from ._base._errors import ChildRunning as ChildRunning
from ._base._errors import InvalidArguments as InvalidArguments
from ._base._errors import InvalidKey as InvalidKey
from ._base._errors import InvalidStoredValue as InvalidStoredValue
from ._base._errors import NodeDown as NodeDown
from ._base._errors import ReloadFailed as ReloadFailed
from ._base._errors import RemoteError as RemoteError
from ._base._errors import RestartLimitExceeded as RestartLimitExceeded
from ._base._errors import SpawnError as SpawnError
from ._base._errors import StateError as StateError
from ._base._errors import StoreInUse as StoreInUse
from ._base._errors import StoreUnavailable as StoreUnavailable
from ._base._errors import SystemNameTaken as SystemNameTaken
from ._base._errors import UnexpectedReply as UnexpectedReply
from ._base._ref import ActorRef as ActorRef

if _typing.TYPE_CHECKING:  # (at run time, the names below are imported when first used)
    from ._base._children import ChildCount as ChildCount
    from ._base._children import ChildInfo as ChildInfo
    from ._base._events import ActorDown as ActorDown
    from ._base._events import ActorDrained as ActorDrained
    from ._base._events import ActorExited as ActorExited
    from ._base._events import ActorReady as ActorReady
    from ._base._events import ActorRestarted as ActorRestarted
    from ._base._events import ActorStarted as ActorStarted
    from ._base._events import ActorSuicided as ActorSuicided
    from ._base._events import Event as Event
    from ._base._events import ExitReason as ExitReason
    from ._base._events import ReloadAborted as ReloadAborted
    from ._base._events import StoreDisconnected as StoreDisconnected
    from ._base._events import StoreReconnected as StoreReconnected
    from ._base._events import StoreReset as StoreReset
    from ._base._events import SupervisorGaveUp as SupervisorGaveUp
    from ._base._events import SystemReloaded as SystemReloaded
    from ._base._handoff import AcceptorStats as AcceptorStats
    from ._base._handoff import HandlePassed as HandlePassed
    from ._base._handoff import ListenerReport as ListenerReport
    from ._base._shared import Entry as Entry
    from ._base._shared import State as State
    from ._base._shared import StateChanged as StateChanged
    from ._base._shared import StateResynced as StateResynced
    from ._base._spec import Backoff as Backoff
    from ._base._spec import CommandSpec as CommandSpec
    from ._base._spec import PoolSpec as PoolSpec
    from ._base._spec import SupervisorSpec as SupervisorSpec
    from ._base._spec import WorkerSpec as WorkerSpec
    from ._base._spec import command as command
    from ._base._spec import pool as pool
    from ._base._spec import supervisor as supervisor
    from ._base._spec import worker as worker
    from ._cluster._membership import NodeJoined as NodeJoined
    from ._cluster._membership import NodeLeft as NodeLeft
    from ._cluster._node import ClusterNode as ClusterNode
    from ._listening._acceptor import Acceptor as Acceptor
    from ._listening._datagram import DatagramAcceptor as DatagramAcceptor
    from ._listening._listener import Listener as Listener
    from ._listening._spec import ListenerSpec as ListenerSpec
    from ._listening._spec import listener as listener
    from ._operations._protocol import ActorStatus as ActorStatus
    from ._operations._protocol import SystemInfo as SystemInfo
    from ._state._api import SharedState as SharedState
    from ._supervision._restart import Decision as Decision
    from ._supervision._restart import RestartHistory as RestartHistory
    from ._supervision._restart import decide as decide
    from ._system._open import ActorSystem as ActorSystem
    from ._system._open import open_system as open_system

# What a program that defines actors always needs is imported with the package; the rest
# (the system, listeners, the shared state, the events and status types) when a name of it
# is first used: ``import actors`` costs little more than trio and pydantic do.
_LAZY = {
    "ChildCount": "._base._children",
    "ChildInfo": "._base._children",
    "ActorDown": "._base._events",
    "ActorDrained": "._base._events",
    "ActorExited": "._base._events",
    "ActorReady": "._base._events",
    "ActorRestarted": "._base._events",
    "ActorStarted": "._base._events",
    "ActorSuicided": "._base._events",
    "Event": "._base._events",
    "ExitReason": "._base._events",
    "ReloadAborted": "._base._events",
    "StoreDisconnected": "._base._events",
    "StoreReconnected": "._base._events",
    "StoreReset": "._base._events",
    "SupervisorGaveUp": "._base._events",
    "SystemReloaded": "._base._events",
    "AcceptorStats": "._base._handoff",
    "HandlePassed": "._base._handoff",
    "ListenerReport": "._base._handoff",
    "Entry": "._base._shared",
    "State": "._base._shared",
    "StateChanged": "._base._shared",
    "StateResynced": "._base._shared",
    "Backoff": "._base._spec",
    "CommandSpec": "._base._spec",
    "PoolSpec": "._base._spec",
    "SupervisorSpec": "._base._spec",
    "WorkerSpec": "._base._spec",
    "command": "._base._spec",
    "pool": "._base._spec",
    "supervisor": "._base._spec",
    "worker": "._base._spec",
    "NodeJoined": "._cluster._membership",
    "NodeLeft": "._cluster._membership",
    "ClusterNode": "._cluster._node",
    "Acceptor": "._listening._acceptor",
    "DatagramAcceptor": "._listening._datagram",
    "Listener": "._listening._listener",
    "ListenerSpec": "._listening._spec",
    "listener": "._listening._spec",
    "ActorStatus": "._operations._protocol",
    "SystemInfo": "._operations._protocol",
    "SharedState": "._state._api",
    "Decision": "._supervision._restart",
    "RestartHistory": "._supervision._restart",
    "decide": "._supervision._restart",
    "ActorSystem": "._system._open",
    "open_system": "._system._open",
}

__all__ = [
    "Acceptor",
    "AcceptorStats",
    "Actor",
    "ActorContext",
    "ActorDown",
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
    "BrokerUnavailable",
    "CallingSelf",
    "ChildCount",
    "ChildExists",
    "ChildInfo",
    "ChildRunning",
    "ClusterNode",
    "CommandSpec",
    "DatagramAcceptor",
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
    "NodeDown",
    "NodeJoined",
    "NodeLeft",
    "PoolSpec",
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
    "command",
    "decide",
    "handler",
    "listener",
    "open_system",
    "pool",
    "supervisor",
    "worker",
]


def _public(value: object) -> None:
    # Public names print as ``actors.ActorGone``, not ``actors._base._errors.ActorGone`` (as
    # trio does). Message classes keep their module: their wire tags are fixed when they
    # are defined.
    if getattr(value, "__module__", "").startswith("actors._"):
        try:
            value.__module__ = __name__
        except (AttributeError, TypeError):
            pass


def __getattr__(name: str) -> object:
    where = _LAZY.get(name)
    if where is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(_importlib.import_module(where, __name__), name)
    _public(value)
    globals()[name] = value  # (once: the next use finds it here)
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


for _name in __all__:
    if _name not in _LAZY:
        _public(globals()[_name])
del _name
