"""What a listener is, as a child spec: its socket, its policy, its acceptors."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any, Literal

from .._base._handoff import (
    POLICIES,
    Policy,
)
from .._base._spec import Shutdown, SupervisorSpec, supervisor, worker
from ._acceptor import Acceptor
from ._datagram import DatagramAcceptor

__all__ = [
    "TRANSPORTS",
    "ListenerSpec",
    "Transport",
    "listener",
]

Transport = Literal["tcp", "udp"]
TRANSPORTS: tuple[Transport, ...] = ("tcp", "udp")
_DATAGRAM_POLICIES: tuple[Policy, ...] = ("shared", "reuseport")

log = logging.getLogger("actors")


@dataclass(frozen=True)
class ListenerSpec(SupervisorSpec):
    """A listener: the socket, the policy, and ``count`` acceptors (its children)."""

    host: str = "127.0.0.1"
    port: int = 0
    policy: Policy = "round_robin"
    in_flight: int = 64
    backlog: int = 1024
    report_every: float = 5.0
    max_connections_per_worker: int | None = None
    transport: Transport = "tcp"


def listener(
    name: str,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    acceptor: type[Acceptor] | type[DatagramAcceptor] | None,
    count: int | None = None,
    policy: Policy | None = None,
    transport: Transport = "tcp",
    in_flight: int = 64,
    backlog: int = 1024,
    shutdown: Shutdown = 10.0,
    max_restarts: int = 10,
    within: float = 10.0,
    report_every: float = 5.0,
    max_memory: int | None = None,
    max_connections_per_worker: int | None = None,
    **kwargs: Any,
) -> ListenerSpec:
    """Spec of a listener on ``host:port`` (port 0: any free port) served by ``count``
    acceptor processes (default: the number of CPUs). ``kwargs`` go to the acceptor's
    ``__init__``; ``shutdown`` is each acceptor's time to drain its connections.

    ``max_memory`` (bytes): an acceptor whose resident memory stays above it is replaced
    (its successor first). ``max_connections_per_worker``: an acceptor is replaced after
    about that many connections (each gets up to 10% more, at random, so that they do not
    all go at once), as gunicorn's ``max_requests``.

    ``acceptor=None`` declares the socket alone, for commands (``command(...,
    sockets=(path,))``): the master binds it and holds it for the tree's life, and nothing
    in Python accepts on it (``count`` is then 0, ``policy`` ``shared`` or unset).

    ``transport="udp"``: a UDP socket, whose datagrams ``acceptor`` (a
    :class:`DatagramAcceptor`) answers, under policy ``shared`` (the default: every
    acceptor receives on the listener's socket) or ``reuseport`` (each on a socket of its
    own, which the master keeps for its place)."""
    if transport not in TRANSPORTS:
        raise ValueError(f"transport must be one of {TRANSPORTS}, not {transport!r}")
    if transport == "udp":
        if policy is None:
            policy = "shared"
        if policy not in _DATAGRAM_POLICIES:
            raise ValueError(f"a UDP listener's policy is one of {_DATAGRAM_POLICIES}, not "
                             f"{policy!r}: no connection to hand over, each datagram stands "
                             "alone")
        if acceptor is not None and not (
                isinstance(acceptor, type) and issubclass(acceptor, DatagramAcceptor)):
            raise TypeError(f"a UDP listener takes a DatagramAcceptor subclass (or None), "
                            f"not {acceptor!r}")
        if max_connections_per_worker is not None:
            raise ValueError("a UDP listener has no connections: max_connections_per_worker "
                             "is for TCP")
    elif acceptor is not None and isinstance(acceptor, type) and issubclass(
            acceptor, DatagramAcceptor):
        raise TypeError(f"{acceptor.__qualname__} is a DatagramAcceptor: it needs "
                        "transport='udp'")
    if acceptor is None:
        if policy not in (None, "shared"):
            raise ValueError(f"a listener without acceptors has no policy {policy!r}: its "
                             "socket goes to commands as it is (policy 'shared' or unset)")
        if count not in (None, 0):
            raise ValueError("a listener without acceptors has count 0 (or unset)")
        policy, count = "shared", 0
    elif transport == "tcp" and not (isinstance(acceptor, type) and issubclass(acceptor,
                                                                                Acceptor)):
        raise TypeError(f"listener() takes an Acceptor subclass (or None), not {acceptor!r}")
    policy = "round_robin" if policy is None else policy
    if policy not in POLICIES:
        raise ValueError(f"policy must be one of {POLICIES}, not {policy!r}")
    if count is None:
        count = os.cpu_count() or 1
    if acceptor is not None and count < 1:
        raise ValueError("a listener needs at least one acceptor")
    if not 0 <= port <= 65535:
        raise ValueError(f"port must be in 0..65535, not {port}")
    if in_flight < 1:
        raise ValueError("in_flight must be >= 1")
    if max_connections_per_worker is not None and max_connections_per_worker < 1:
        raise ValueError("max_connections_per_worker must be >= 1 (or None)")
    if acceptor is None and kwargs:
        raise TypeError(f"a listener without acceptors takes no acceptor arguments: {kwargs}")
    children = () if acceptor is None else tuple(
        worker(acceptor, name=str(i), process=True, shutdown=shutdown,
               max_memory=max_memory, **kwargs)
        for i in range(count)
    )
    checked = supervisor(name, max_restarts=max_restarts, within=within, children=children)
    return ListenerSpec(
        name=checked.name, strategy="one_for_one", max_restarts=checked.max_restarts,
        within=checked.within, children=checked.children, shutdown="infinity",
        host=host, port=port, policy=policy, in_flight=in_flight, backlog=backlog,
        report_every=report_every, max_connections_per_worker=max_connections_per_worker,
        transport=transport,
    )


