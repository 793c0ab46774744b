"""What a listener and its acceptors say to each other, and the events a listener publishes.

The listener (master side, ``_listener``) and the acceptors (worker side, ``_acceptor``) are
on two sides of a process boundary; these messages are the whole of their contract.
"""

from __future__ import annotations

from typing import Literal

from protocol import Message, SocketHandle

from ._events import Event
from ._ref import ActorRef

__all__ = [
    "POLICIES",
    "ROUTED",
    "AcceptorStats",
    "Attach",
    "Closed",
    "GetStats",
    "HandBack",
    "HandlePassed",
    "Handoff",
    "ListenerReport",
    "Policy",
    "Taken",
]

Policy = Literal["round_robin", "least_busy", "shared", "reuseport"]
POLICIES: tuple[Policy, ...] = ("round_robin", "least_busy", "shared", "reuseport")
ROUTED: tuple[Policy, ...] = ("round_robin", "least_busy")
"""The policies under which the master accepts and hands each connection over."""


class Attach(Message, tag="actors.listener.Attach"):
    """Sent to an acceptor once it is ready: where connections come from."""

    listener: ActorRef
    policy: Policy
    sock: SocketHandle | None = None  # shared, reuseport: the socket to accept on
    family: int = 2  # of the connections handed over (AF_INET; AF_INET6 is 10)
    recycle_after: int | None = None  # connections before it asks to be replaced


class Handoff(Message, tag="actors.listener.Handoff"):
    """Accepted connections (round_robin, least_busy, or handed back by a draining acceptor):
    several when several were ready at once. Answered with :class:`Taken`."""

    conns: list[SocketHandle]


class Taken(Message, tag="actors.listener.Taken"):
    """The acceptor serves the first ``count`` connections of a hand-off (the master closes
    its copies); it refused the others, for ``refused``: ``"draining"`` (nothing more goes
    to it) or ``"full"`` (at its ``max_connections`` for now)."""

    count: int
    refused: Literal["", "draining", "full"] = ""


class HandBack(Message, tag="actors.listener.HandBack"):
    """Idle connections of a draining acceptor whose connections carry no state between
    requests (``Acceptor.stateless_connections``): to be served by another acceptor. Each
    is at a request boundary; what the client sent since is in it, unread."""

    conns: list[SocketHandle]


class Closed(Message, tag="actors.listener.Closed"):
    """An acceptor finished ``count`` connections (``address``: which instance)."""

    acceptor: str
    address: str = ""
    count: int = 1


class GetStats(Message, tag="actors.listener.GetStats"):
    """Ask an acceptor for its :class:`AcceptorStats`."""


class AcceptorStats(Message, tag="actors.listener.AcceptorStats"):
    """How one acceptor is doing."""

    path: str
    pid: int
    open: int
    total: int
    restarts: int = 0


class ListenerReport(Event, tag="actors.listener.ListenerReport"):
    """A listener's address and the figures of its acceptors (sent every ``report_every``)."""

    host: str
    port: int
    policy: Policy
    acceptors: list[AcceptorStats]


class HandlePassed(Event, tag="actors.listener.HandlePassed"):
    """A listener passed its listening socket to an acceptor (the ``shared`` policy).

    Sent once per acceptor instance, replacements included. Connections handed over one by
    one (``round_robin``, ``least_busy``) are counted in :class:`AcceptorStats` rather than
    sent as an event each: an event per connection would cost more than the hand-off.
    """

    acceptor: str
    pid: int
    handle: Literal["listening socket"] = "listening socket"
    host: str
    port: int
