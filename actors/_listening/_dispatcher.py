"""Which acceptor gets each connection the master holds (its own accepts under
``round_robin`` and ``least_busy``, and what draining acceptors hand back), and what happens
to those an acceptor does not take. Pure bookkeeping: what to send is returned, outcomes are
told."""

from __future__ import annotations

import itertools
import logging
import socket
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import trio

from protocol import Message

from .._base._errors import ActorGone, RemoteError
from .._base._handoff import (
    Policy,
    Taken,
)
from .._base._ref import ActorRef
from ._sockets import untouched

__all__ = [
    "Batch",
    "Dispatcher",
    "Outcome",
    "Route",
    "outcome",
]

log = logging.getLogger("actors")


@dataclass(eq=False)
class Route:
    """The listener's view of one running acceptor instance (``key``: its address).

    ``gone`` is set once its process has exited: connections it held in doubt can then be
    judged by the kernel (see :meth:`Dispatcher.settle`)."""

    key: str
    name: str
    ref: ActorRef
    pid: int
    gone: trio.Event = field(default_factory=trio.Event)
    in_flight: dict[int, list[tuple[socket.socket, int]]] = field(default_factory=dict)
    pending: int = 0  # connections in flight (unanswered hand-offs)
    doubtful: list[tuple[socket.socket, int]] = field(default_factory=list)
    settling: bool = False  # the listener waits for its process to go, to judge them
    routable: bool = True
    open: int = 0
    total: int = 0


@dataclass(frozen=True)
class Batch:
    """One hand-off to send: ``conns`` (with the attempts each had) to ``route``."""

    route: Route
    id: int
    conns: list[tuple[socket.socket, int]]


Outcome = Literal["taken", "full", "draining", "undelivered", "in_doubt"]
"""How a hand-off ended for the connections the acceptor did not take: it took them all;
refused the rest (it is full for now); refused them for good (it drains: nothing more goes
to it); certainly never got them (its process or actor was gone first); or died with them
in doubt (it may have served them)."""


class Dispatcher:
    """Which acceptor gets each connection, and what happens to those it does not take.

    Pure bookkeeping: :meth:`dispatch` returns the hand-offs to send (:class:`Batch`), and
    whoever gets their answers calls :meth:`answered`, which returns what to send next. A
    connection goes to one acceptor at a time; it is re-routed when the acceptor refused it
    or certainly never got it. One whose acceptor died with it in doubt waits until that
    acceptor's process is gone (``route.gone``); then :meth:`settle` asks the kernel: a
    connection nobody read from or wrote to is handed on as if just accepted, any other is
    closed (it was served in part: never by two). Connections no acceptor has room for
    wait, in order; ``capacity`` is set whenever room may have come back.
    """

    def __init__(self, policy: Policy, in_flight: int,
                 untouched: Callable[[socket.socket], bool] = untouched) -> None:
        self.policy = policy
        self.cap = in_flight
        self._untouched = untouched
        self.routes: dict[str, Route] = {}
        self.waiting: deque[tuple[socket.socket, int]] = deque()
        self.capacity = trio.Event()
        self.lost = 0  # connections closed because they were served in part when lost
        self.rescued = 0  # connections in doubt that nobody had touched: handed on
        self._turn = 0
        self._ids = itertools.count(1)

    def add(self, route: Route) -> list[Batch]:
        self.routes[route.key] = route
        self.capacity.set()
        return self.flush()

    def retire(self, key: str) -> None:
        """Route nothing new to ``key``; the hand-offs it has in flight still get answered."""
        route = self.routes.get(key)
        if route is not None:
            route.routable = False
            self._forget_if_done(route)

    def room(self) -> int:
        """How many more connections may be in flight now, over every acceptor."""
        cap = self.cap
        return sum(cap - r.pending for r in self.routes.values()
                   if r.routable and r.pending < cap)

    def has_capacity(self) -> bool:
        return self.room() > 0

    def _pick(self, exclude: str | None) -> Route | None:
        cap = self.cap
        candidates = [
            r for r in self.routes.values()
            if r.routable and r.pending < cap and r.key != exclude
        ]
        if not candidates:
            return None
        if self.policy == "least_busy":
            return min(candidates, key=lambda r: (r.open + r.pending, r.total))
        self._turn += 1
        return candidates[self._turn % len(candidates)]

    def dispatch(self, conns: list[tuple[socket.socket, int]], exclude: str | None = None
                 ) -> list[Batch]:
        """Route ``conns`` (each with the attempts it had): the hand-offs to send."""
        batches: dict[str, Batch] = {}
        limit = 2 * max(1, len(self.routes)) + 2
        for conn, attempts in conns:
            if attempts > limit:
                log.error("no acceptor would take a connection; closing it")
                conn.close()
                continue
            route = self._pick(exclude)
            if route is None:
                self.waiting.append((conn, attempts))
                continue
            batch = batches.get(route.key)
            if batch is None:
                batch = batches[route.key] = Batch(route, next(self._ids), [])
                route.in_flight[batch.id] = batch.conns
            batch.conns.append((conn, attempts))
            route.pending += 1
        return list(batches.values())

    def answered(self, route: Route, batch_id: int, taken: int, outcome: Outcome
                 ) -> list[Batch]:
        """The acceptor took the first ``taken`` connections of hand-off ``batch_id``; the
        others ended as ``outcome`` says. What to send next."""
        conns = route.in_flight.pop(batch_id, None)
        if conns is None:
            return []
        route.pending -= len(conns)
        for conn, _ in conns[:taken]:
            route.open += 1
            route.total += 1
            conn.close()  # the acceptor has its own copy now
        rest = conns[taken:]
        again: list[Batch] = []
        if rest:
            if outcome == "in_doubt":
                route.routable = False  # its process died (or its channel broke)
                route.doubtful.extend(rest)  # judged once its process is gone
            else:
                if outcome in ("undelivered", "draining"):
                    route.routable = False  # gone, or going: nothing more goes to it
                again = self.dispatch([(c, a + 1) for c, a in rest], exclude=route.key)
        self._forget_if_done(route)
        self.capacity.set()
        return again + self.flush()

    def settle(self, route: Route) -> list[Batch]:
        """``route``'s process is gone, and with it every other reference to the
        connections it held in doubt: hand on those nobody touched, close the others."""
        doubtful, route.doubtful = route.doubtful, []
        handed: list[tuple[socket.socket, int]] = []
        for conn, attempts in doubtful:
            if self._untouched(conn):
                self.rescued += 1
                handed.append((conn, attempts))
            else:
                self.lost += 1
                log.warning("acceptor %s went while serving a connection: closing it",
                            route.name)
                conn.close()
        route.routable = False
        self._forget_if_done(route)
        return self.dispatch(handed, exclude=route.key)

    def _forget_if_done(self, route: Route) -> None:
        done = not (route.routable or route.in_flight or route.doubtful)
        if done and self.routes.get(route.key) is route:
            del self.routes[route.key]

    def flush(self) -> list[Batch]:
        """Hand over the waiting connections while some acceptor has room."""
        waiting: list[tuple[socket.socket, int]] = []
        room = self.room()
        while self.waiting and len(waiting) < room:
            waiting.append(self.waiting.popleft())
        return self.dispatch(waiting) if waiting else []

    def closed(self, key: str, count: int) -> None:
        route = self.routes.get(key)
        if route is not None:
            route.open = max(0, route.open - count)

    def close_all(self) -> None:
        """The listener is gone: close every connection it still holds."""
        for route in self.routes.values():
            for conns in route.in_flight.values():
                for conn, _ in conns:
                    conn.close()
            route.in_flight.clear()
            for conn, _ in route.doubtful:
                conn.close()
            route.doubtful.clear()
        self.routes.clear()
        while self.waiting:
            self.waiting.popleft()[0].close()


def outcome(reply: Message | None, error: BaseException | None) -> tuple[int, Outcome]:
    """How many connections of a hand-off its acceptor took, and what became of the rest."""
    if isinstance(reply, Taken):
        return reply.count, "taken" if not reply.refused else reply.refused
    if isinstance(error, ActorGone) and not error.in_doubt:
        return 0, "undelivered"
    if isinstance(error, RemoteError) and error.type_name.startswith("protocol."):
        # Its process could not take the hand-off (its fd table is full: the kernel dropped
        # the fds): the acceptor never saw it, and lives on.
        return 0, "full"
    return 0, "in_doubt"


