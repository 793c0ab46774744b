"""The listener's routing of connections to acceptors, on its own (no process, no I/O).

Connections are real sockets (so that closing one shows); the dispatcher returns the
hand-offs to send, and the test answers them as an acceptor would.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from actors._base._ref import ActorRef
from actors._listening._dispatcher import Batch, Dispatcher, Outcome, Route


class Sent:
    """Every hand-off the dispatcher asked for, in order."""

    def __init__(self) -> None:
        self.log: list[Batch] = []

    def __call__(self, batches: list[Batch]) -> None:
        self.log.extend(batches)

    def keys(self) -> list[str]:
        return [batch.route.key for batch in self.log for _ in batch.conns]

    def answer(self, dispatcher: Dispatcher, index: int, outcome: Outcome,
               taken: int | None = None) -> None:
        batch = self.log[index]
        if taken is None:
            taken = len(batch.conns) if outcome == "taken" else 0
        self(dispatcher.answered(batch.route, batch.id, taken, outcome))


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


def fresh(made: list[socket.socket], count: int = 1) -> list[tuple[socket.socket, int]]:
    return [(conn(made), 0) for _ in range(count)]


def test_round_robin_takes_turns(conns: list[socket.socket]) -> None:
    sent = Sent()
    d = Dispatcher("round_robin", 64)
    for key in ("0.1/1", "0.2/1", "0.3/1"):
        sent(d.add(route(key)))
    for _ in range(6):
        sent(d.dispatch(fresh(conns)))
    keys = sent.keys()
    assert sorted(keys[:3]) == ["0.1/1", "0.2/1", "0.3/1"]
    assert keys[3:] == keys[:3]


def test_connections_ready_together_go_in_one_hand_off_per_acceptor(
    conns: list[socket.socket],
) -> None:
    sent = Sent()
    d = Dispatcher("round_robin", 64)
    sent(d.add(route("0.1/1")))
    sent(d.add(route("0.2/1")))
    ready = fresh(conns, 5)
    sent(d.dispatch(ready))
    assert len(sent.log) == 2  # one frame per acceptor, however many it gets
    assert sorted(len(batch.conns) for batch in sent.log) == [2, 3]
    assert {c for batch in sent.log for c, _ in batch.conns} == {c for c, _ in ready}


def test_the_in_flight_cap_holds_connections_back_in_order(conns: list[socket.socket]) -> None:
    sent = Sent()
    d = Dispatcher("round_robin", 2)
    sent(d.add(route("0.1/1")))
    waiting = fresh(conns, 5)
    sent(d.dispatch(waiting))
    assert [c for c, _ in sent.log[0].conns] == [c for c, _ in waiting[:2]]  # the cap
    assert not d.has_capacity()
    assert list(d.waiting) == waiting[2:]
    sent.answer(d, 0, "taken")
    assert [c for c, _ in sent.log[1].conns] == [c for c, _ in waiting[2:4]]  # in order
    assert d.capacity.is_set()


def test_a_taken_connection_is_closed_here_and_counted(conns: list[socket.socket]) -> None:
    sent = Sent()
    d = Dispatcher("round_robin", 64)
    r = route("0.1/1")
    sent(d.add(r))
    [(c, _)] = given = fresh(conns)
    sent(d.dispatch(given))
    sent.answer(d, 0, "taken")
    assert c.fileno() == -1  # the acceptor has its own copy
    assert (r.open, r.total, r.in_flight, r.pending) == (1, 1, {}, 0)
    d.closed("0.1/1", 1)
    assert r.open == 0


def test_what_an_acceptor_did_not_take_of_a_hand_off_goes_elsewhere(
    conns: list[socket.socket],
) -> None:
    sent = Sent()
    d = Dispatcher("round_robin", 64)
    first, second = route("0.1/1"), route("0.2/1")
    sent(d.add(first))
    given = fresh(conns, 3)
    sent(d.dispatch(given))
    sent(d.add(second))
    sent.answer(d, 0, "full", taken=1)  # took the first, was full for the other two
    assert given[0][0].fileno() == -1
    assert [b.route.key for b in sent.log] == ["0.1/1", "0.2/1"]
    assert [(c, a) for c, a in sent.log[1].conns] == [(c, 1) for c, _ in given[1:]]
    assert first.routable  # only full for now


@pytest.mark.parametrize("outcome", ["full", "undelivered", "draining"])
def test_a_connection_not_taken_goes_to_another_acceptor(
    conns: list[socket.socket], outcome: Outcome
) -> None:
    sent = Sent()
    d = Dispatcher("round_robin", 64)
    sent(d.add(route("0.1/1")))
    sent(d.add(route("0.2/1")))
    [(c, _)] = given = fresh(conns)
    sent(d.dispatch(given))
    first = sent.log[0].route.key
    sent.answer(d, 0, outcome)
    assert len(sent.log) == 2
    [(same, attempts)] = sent.log[1].conns
    assert same is c  # re-queued, not closed
    assert c.fileno() != -1
    assert sent.log[1].route.key != first
    assert attempts == 1
    if outcome != "full":  # that acceptor is gone or going: nothing more goes to it
        for _ in range(4):
            sent(d.dispatch(fresh(conns)))
        assert first not in sent.keys()[2:]


class Kernel:
    """Says, per connection, whether anyone read from or wrote to it."""

    def __init__(self) -> None:
        self.touched: set[socket.socket] = set()

    def __call__(self, conn: socket.socket) -> bool:
        return conn not in self.touched


def test_a_hand_off_in_doubt_waits_for_the_kernel_to_settle_it(
    conns: list[socket.socket],
) -> None:
    # Its acceptor died before answering: once its process is gone, a connection nobody
    # touched is handed on (it was still queued in the dead worker's channel); one that was
    # read from or written to is closed (it was served in part: never by two).
    kernel = Kernel()
    sent = Sent()
    d = Dispatcher("round_robin", 64, untouched=kernel)
    dead, alive = route("0.1/1"), route("0.2/1")
    sent(d.add(dead))
    given = fresh(conns, 3)
    sent(d.dispatch(given))
    sent(d.add(alive))
    sent.answer(d, 0, "in_doubt")
    assert len(sent.log) == 1  # nothing moves while its process may still hold them
    assert all(c.fileno() != -1 for c, _ in given)
    kernel.touched.add(given[1][0])
    sent(d.settle(dead))
    assert given[1][0].fileno() == -1
    assert [c for c, _ in sent.log[1].conns] == [given[0][0], given[2][0]]
    assert sent.log[1].route is alive
    assert (d.lost, d.rescued) == (1, 2)
    assert "0.1/1" not in d.routes


def test_a_retired_acceptor_gets_nothing_new_but_its_answers_still_count(
    conns: list[socket.socket],
) -> None:
    sent = Sent()
    d = Dispatcher("round_robin", 64)
    old = route("0.1/1")
    sent(d.add(old))
    sent(d.dispatch(fresh(conns)))
    sent(d.add(route("0.1/2")))  # its replacement is ready
    d.retire("0.1/1")  # then it drains
    for _ in range(3):
        sent(d.dispatch(fresh(conns)))
    assert sent.keys() == ["0.1/1", "0.1/2", "0.1/2", "0.1/2"]
    sent.answer(d, 0, "taken")  # its Taken still arrives: the connection is its own
    assert old.total == 1
    assert len(sent.log) == 4  # and is not handed to anyone else
    assert "0.1/1" not in d.routes  # nothing left in flight: forgotten


def test_least_busy_picks_the_fewest_open(conns: list[socket.socket]) -> None:
    sent = Sent()
    d = Dispatcher("least_busy", 64)
    busy, idle = route("0.1/1"), route("0.2/1")
    busy.open = 5
    sent(d.add(busy))
    sent(d.add(idle))
    sent(d.dispatch(fresh(conns, 3)))
    assert sent.keys() == ["0.2/1", "0.2/1", "0.2/1"]  # in flight counts as busy too
    idle.open = 10
    sent.answer(d, 0, "taken")
    sent(d.dispatch(fresh(conns)))
    assert sent.keys()[-1] == "0.1/1"


def test_a_connection_nobody_takes_is_closed_after_a_few_attempts(
    conns: list[socket.socket],
) -> None:
    sent = Sent()
    d = Dispatcher("round_robin", 64)
    sent(d.add(route("0.1/1")))
    sent(d.add(route("0.2/1")))
    [(c, _)] = given = fresh(conns)
    sent(d.dispatch(given))
    index = 0
    while c.fileno() != -1:
        sent.answer(d, index, "full")
        index += 1
        assert index < 20
    assert index == 7  # 2 * acceptors + 2 retries, then it is closed


def test_close_all_closes_waiting_in_flight_and_doubtful(conns: list[socket.socket]) -> None:
    sent = Sent()
    d = Dispatcher("round_robin", 1)
    r = route("0.1/1")
    sent(d.add(r))
    (a, _), (b, _), (c, _) = given = fresh(conns, 3)
    sent(d.dispatch(given[:1]))
    sent.answer(d, 0, "in_doubt")
    sent(d.dispatch(given[1:]))
    d.close_all()
    assert a.fileno() == b.fileno() == c.fileno() == -1
