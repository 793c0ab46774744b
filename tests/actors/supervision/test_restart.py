"""The restart decision on its own: windows, strategies, restart types, backoff."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from actors import (
    Actor,
    Backoff,
    ExitReason,
    RestartHistory,
    decide,
    supervisor,
    worker,
)


class Noop(Actor):
    pass


CRASH = ExitReason(kind="crashed", error_type="ValueError", detail="x")
NORMAL = ExitReason(kind="normal")
SUICIDE = ExitReason(kind="suicide")


def tree(strategy: str = "one_for_one", **flags: object):  # type: ignore[no-untyped-def]
    return supervisor(
        "root",
        strategy=strategy,  # type: ignore[arg-type]
        children=[
            worker(Noop, name="a"),
            worker(Noop, name="b", restart="transient"),
            worker(Noop, name="c", restart="temporary"),
            worker(Noop, name="d"),
        ],
        **flags,  # type: ignore[arg-type]
    )


def run(spec, history, child, reason, clock, *, uptime=10.0, running=("a", "b", "c", "d")):  # type: ignore[no-untyped-def]
    return decide(
        spec, history, child, reason, now=clock.current_time(), uptime=uptime,
        running=[name for name in running if name != child], random=lambda: 0.5,
    )


def test_restart_types() -> None:
    clock = trio.testing.MockClock()
    spec = tree(max_restarts=100)
    history = RestartHistory()
    assert run(spec, history, "a", NORMAL, clock).restart == ("a",)  # permanent: always
    assert run(spec, history, "b", NORMAL, clock).restart == ()  # transient: not after normal
    assert run(spec, history, "b", CRASH, clock).restart == ("b",)
    assert run(spec, history, "c", CRASH, clock).restart == ()  # temporary: never


def test_strategies_pick_who_stops_and_restarts() -> None:
    clock = trio.testing.MockClock()
    history = RestartHistory()
    one = run(tree("one_for_one", max_restarts=9), history, "b", CRASH, clock)
    assert (one.stop, one.restart) == ((), ("b",))
    everyone = run(tree("one_for_all", max_restarts=9), history, "b", CRASH, clock)
    # The others stop last-started first; temporary children are not restarted.
    assert everyone.stop == ("d", "c", "a")
    assert everyone.restart == ("a", "b", "d")
    rest = run(tree("rest_for_one", max_restarts=9), history, "b", CRASH, clock)
    assert rest.stop == ("d", "c")
    assert rest.restart == ("b", "d")


def test_intensity_is_a_sliding_window() -> None:
    clock = trio.testing.MockClock()
    spec = tree(max_restarts=3, within=5.0)
    history = RestartHistory()
    for _ in range(3):
        assert not run(spec, history, "a", CRASH, clock).give_up
        clock.jump(1.0)
    assert run(spec, history, "a", CRASH, clock).give_up  # a 4th within 5 s


def test_old_restarts_slide_out_of_the_window_at_its_edge() -> None:
    # OTP's add_restart keeps restarts R with R >= Now - Period: one exactly `within`
    # seconds old still counts; a moment later it has slid out.
    clock = trio.testing.MockClock()
    spec = tree(max_restarts=2, within=5.0)
    for elapsed, gives_up in [(5.0, True), (5.001, False)]:
        history = RestartHistory()
        assert not run(spec, history, "a", CRASH, clock).give_up  # at t
        clock.jump(1.0)
        assert not run(spec, history, "a", CRASH, clock).give_up  # at t + 1
        clock.jump(elapsed - 1.0)
        assert run(spec, history, "a", CRASH, clock).give_up is gives_up
        clock.jump(100.0)


def test_a_long_run_of_restarts_never_trips_while_each_window_holds_few() -> None:
    clock = trio.testing.MockClock()
    spec = tree(max_restarts=3, within=5.0)
    history = RestartHistory()
    for _ in range(40):  # 3 restarts per 6 s: every window of 5 s holds at most 3
        for _ in range(3):
            assert not run(spec, history, "a", CRASH, clock).give_up
            clock.jump(0.1)
        clock.jump(5.8)
    assert len(history.restarts) <= 3


def test_restarts_spread_out_never_trip_the_limit() -> None:
    clock = trio.testing.MockClock()
    spec = tree(max_restarts=1, within=1.0)
    history = RestartHistory()
    for _ in range(50):  # a crash every 2 s with a limit of 1 per 1 s
        assert not run(spec, history, "a", CRASH, clock).give_up
        clock.jump(2.0)


def test_zero_restarts_allowed_gives_up_at_once() -> None:
    clock = trio.testing.MockClock()
    assert run(tree(max_restarts=0), RestartHistory(), "a", CRASH, clock).give_up


def test_backoff_grows_caps_and_resets_after_stable_uptime() -> None:
    clock = trio.testing.MockClock()
    backoff = Backoff(initial=0.1, factor=2.0, cap=0.5, jitter=0.0, reset_after=30.0)
    spec = tree(max_restarts=1000, within=1.0, backoff=backoff)
    history = RestartHistory()
    delays = [run(spec, history, "a", CRASH, clock, uptime=0.0).delay for _ in range(5)]
    assert delays == pytest.approx([0.1, 0.2, 0.4, 0.5, 0.5])
    assert run(spec, history, "a", CRASH, clock, uptime=60.0).delay == pytest.approx(0.1)


def test_intentional_exits_never_advance_backoff() -> None:
    clock = trio.testing.MockClock()
    backoff = Backoff(initial=0.1, factor=2.0, cap=10.0, jitter=0.0)
    spec = tree(max_restarts=1000, backoff=backoff)
    history = RestartHistory()
    assert run(spec, history, "a", CRASH, clock, uptime=0.0).delay == pytest.approx(0.1)
    assert run(spec, history, "a", SUICIDE, clock, uptime=0.0).delay == 0.0
    assert run(spec, history, "a", NORMAL, clock, uptime=0.0).delay == 0.0
    assert run(spec, history, "a", CRASH, clock, uptime=0.0).delay == pytest.approx(0.2)


def test_jitter_spreads_the_delay() -> None:
    backoff = Backoff(initial=1.0, jitter=0.2)
    assert backoff.delay(1, 0.0) == pytest.approx(0.8)
    assert backoff.delay(1, 0.999999) == pytest.approx(1.2, abs=1e-5)


def test_specs_are_validated_and_frozen() -> None:
    with pytest.raises(ValueError, match="two children named"):
        supervisor("s", children=[worker(Noop, name="x"), worker(Noop, name="x")])
    with pytest.raises(ValueError, match="strategy"):
        supervisor("s", strategy="one_for_some")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="restart"):
        worker(Noop, restart="sometimes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="shutdown"):
        worker(Noop, shutdown=-1)
    with pytest.raises(ValueError, match="max_restarts"):
        supervisor("s", max_restarts=-1)
    spec = worker(Noop, name="x", shutdown="brutal_kill")
    with pytest.raises(AttributeError):
        spec.name = "y"  # type: ignore[misc]
