"""The listener's routing of connections to acceptors, on its own (no process, no I/O).

Connections are real sockets (so that closing one shows), hand-offs are recorded by a
double, and the test answers them as an acceptor would.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from actors._listener import Dispatcher, Outcome, Route
from actors._ref import ActorRef


class Sent:
    """Records hand-offs: (route key, id, conn, attempts)."""

    def __init__(self) -> None:
        self.log: list[tuple[Route, int, socket.socket, int]] = []

    def __call__(self, route: Route, handoff_id: int, conn: socket.socket, attempts: int
                 ) -> None:
        self.log.append((route, handoff_id, conn, attempts))

    def keys(self) -> list[str]:
        return [route.key for route, *_ in self.log]

    def answer(self, dispatcher: Dispatcher, index: int, outcome: Outcome) -> None:
        route, handoff_id, _, attempts = self.log[index]
        dispatcher.answered(route, handoff_id, attempts, outcome)


class NoSender:
    async def tell(self, ref: ActorRef, message: object) -> None: ...

    async def ask(self, ref: ActorRef, message: object) -> None: ...


def route(key: str) -> Route:
    return Route(key=key, name=f"acceptor {key}", ref=ActorRef(NoSender(), address=key), pid=1)


@pytest.fixture
def conns() -> Iterator[list[socket.socket]]:
    made: list[socket.socket] = []
    yield made
    for conn in made:
        conn.close()


def conn(made: list[socket.socket]) -> socket.socket:
    a, b = socket.socketpair()
    made.extend([a, b])
    return a


def test_round_robin_takes_turns(conns: list[socket.socket]) -> None:
    sent = Sent()
    d = Dispatcher("round_robin", 64, sent)
    for key in ("0.1/1", "0.2/1", "0.3/1"):
        d.add(route(key))
    for _ in range(6):
        d.dispatch(conn(conns))
    keys = sent.keys()
    assert sorted(keys[:3]) == ["0.1/1", "0.2/1", "0.3/1"]
    assert keys[3:] == keys[:3]


def test_the_in_flight_cap_holds_connections_back_in_order(conns: list[socket.socket]) -> None:
    sent = Sent()
    d = Dispatcher("round_robin", 2, sent)
    d.add(route("0.1/1"))
    waiting = [conn(conns) for _ in range(5)]
    for c in waiting:
        d.dispatch(c)
    assert len(sent.log) == 2  # the cap: two unacknowledged hand-offs
    assert not d.has_capacity()
    assert [c for c, _ in d.waiting] == waiting[2:]
    sent.answer(d, 0, "taken")
    assert len(sent.log) == 3  # room again: the next waiting one goes, in order
    assert sent.log[2][2] is waiting[2]
    assert d.capacity.is_set()


def test_a_taken_connection_is_closed_here_and_counted(conns: list[socket.socket]) -> None:
    sent = Sent()
    d = Dispatcher("round_robin", 64, sent)
    r = route("0.1/1")
    d.add(r)
    c = conn(conns)
    d.dispatch(c)
    sent.answer(d, 0, "taken")
    assert c.fileno() == -1  # the acceptor has its own copy
    assert (r.open, r.total, r.in_flight) == (1, 1, {})
    d.closed("0.1/1", 1)
    assert r.open == 0


@pytest.mark.parametrize("outcome", ["refused", "undelivered"])
def test_a_connection_not_taken_goes_to_another_acceptor(
    conns: list[socket.socket], outcome: Outcome
) -> None:
    sent = Sent()
    d = Dispatcher("round_robin", 64, sent)
    d.add(route("0.1/1"))
    d.add(route("0.2/1"))
    c = conn(conns)
    d.dispatch(c)
    first = sent.log[0][0].key
    sent.answer(d, 0, outcome)
    assert len(sent.log) == 2
    again, _, same, attempts = sent.log[1]
    assert same is c  # re-queued, not closed
    assert c.fileno() != -1
    assert again.key != first
    assert attempts == 1
    if outcome == "undelivered":  # that acceptor is gone: nothing more goes to it
        for _ in range(4):
            d.dispatch(conn(conns))
        assert first not in sent.keys()[2:]


def test_a_hand_off_in_doubt_is_closed_never_sent_twice(conns: list[socket.socket]) -> None:
    sent = Sent()
    d = Dispatcher("round_robin", 64, sent)
    d.add(route("0.1/1"))
    d.add(route("0.2/1"))
    c = conn(conns)
    d.dispatch(c)
    sent.answer(d, 0, "in_doubt")  # its acceptor died: it may have served it
    assert len(sent.log) == 1
    assert c.fileno() == -1
    assert d.lost == 1


def test_a_retired_acceptor_gets_nothing_new_but_its_answers_still_count(
    conns: list[socket.socket],
) -> None:
    sent = Sent()
    d = Dispatcher("round_robin", 64, sent)
    old = route("0.1/1")
    d.add(old)
    c = conn(conns)
    d.dispatch(c)
    d.add(route("0.1/2"))  # its replacement is ready
    d.retire("0.1/1")  # then it drains
    for _ in range(3):
        d.dispatch(conn(conns))
    assert sent.keys() == ["0.1/1", "0.1/2", "0.1/2", "0.1/2"]
    sent.answer(d, 0, "taken")  # its Taken still arrives: the connection is its own
    assert old.total == 1
    assert len(sent.log) == 4  # and is not handed to anyone else
    assert "0.1/1" not in d.routes  # nothing left in flight: forgotten


def test_least_busy_picks_the_fewest_open(conns: list[socket.socket]) -> None:
    sent = Sent()
    d = Dispatcher("least_busy", 64, sent)
    busy, idle = route("0.1/1"), route("0.2/1")
    busy.open = 5
    d.add(busy)
    d.add(idle)
    for _ in range(3):
        d.dispatch(conn(conns))
    assert sent.keys() == ["0.2/1", "0.2/1", "0.2/1"]  # in flight counts as busy too
    idle.open = 10
    for i in range(3):
        sent.answer(d, i, "taken")
    d.dispatch(conn(conns))
    assert sent.keys()[-1] == "0.1/1"


def test_a_connection_nobody_takes_is_closed_after_a_few_attempts(
    conns: list[socket.socket],
) -> None:
    sent = Sent()
    d = Dispatcher("round_robin", 64, sent)
    d.add(route("0.1/1"))
    d.add(route("0.2/1"))
    c = conn(conns)
    d.dispatch(c)
    index = 0
    while c.fileno() != -1:
        sent.answer(d, index, "refused")
        index += 1
        assert index < 20
    assert index == 7  # 2 * acceptors + 2 retries, then it is closed


def test_close_all_closes_waiting_and_in_flight(conns: list[socket.socket]) -> None:
    d = Dispatcher("round_robin", 1, Sent())
    d.add(route("0.1/1"))
    a, b = conn(conns), conn(conns)
    d.dispatch(a)
    d.dispatch(b)
    d.close_all()
    assert a.fileno() == -1
    assert b.fileno() == -1
