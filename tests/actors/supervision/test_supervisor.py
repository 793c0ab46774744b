"""Supervisors over in-process actors, on a virtual clock: strategies, intensity, backoff,
start and shutdown order. No process, no real waiting."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from actors import (
    Actor,
    ActorExited,
    ActorReady,
    ActorRestarted,
    Backoff,
    RemoteError,
    RestartLimitExceeded,
    SpawnError,
    handler,
    open_system,
    supervisor,
    worker,
)
from protocol import Message
from tests.events import next_event, received
from tests.trees import three


class Crash(Message):
    pass


class Where(Message):
    pass


class Address(Message):
    address: str


class Member(Actor):
    def __init__(self, journal: list[str] | None = None) -> None:
        self.journal = journal

    async def setup(self) -> None:
        if self.journal is not None:
            self.journal.append(f"start {self.ctx.path}")

    async def cleanup(self) -> None:
        if self.journal is not None:
            self.journal.append(f"stop {self.ctx.path}")

    @handler
    async def crash(self, msg: Crash) -> None:
        raise RuntimeError("asked to crash")

    @handler
    async def where(self, msg: Where) -> Address:
        return Address(address=self.ctx.ref.wire())


async def addresses(system) -> dict[str, str]:  # type: ignore[no-untyped-def]
    found = {}
    for name in ("a", "b", "c"):
        found[name] = (await system.ref(f"root/{name}").ask(Where(), Address)).address
    return found


async def crash(system, name: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(RemoteError, match="asked to crash"):
        await system.ref(f"root/{name}").ask(Crash())


@pytest.mark.parametrize(
    ("strategy", "restarted"),
    [("one_for_one", {"b"}), ("one_for_all", {"a", "b", "c"}), ("rest_for_one", {"b", "c"})],
)
async def test_strategies_restart_the_right_children(
    autojump_clock: trio.testing.MockClock, strategy: str, restarted: set[str]
) -> None:
    async with open_system(three(Member, strategy, max_restarts=5)) as system:
        events = system.events()
        before = await addresses(system)
        await crash(system, "b")
        await next_event(events, ActorReady, "root/b")
        await trio.testing.wait_all_tasks_blocked()
        after = await addresses(system)
    assert {name for name in before if before[name] != after[name]} == restarted


async def test_children_start_in_order_and_stop_in_reverse(
    autojump_clock: trio.testing.MockClock,
) -> None:
    journal: list[str] = []
    tree = supervisor("root", children=[
        worker(Member, name=name, journal=journal) for name in ("a", "b", "c")
    ])
    async with open_system(tree):
        assert journal == ["start root/a", "start root/b", "start root/c"]
    assert journal[3:] == ["stop root/c", "stop root/b", "stop root/a"]


async def test_one_for_all_stops_the_others_last_started_first(
    autojump_clock: trio.testing.MockClock,
) -> None:
    journal: list[str] = []
    tree = supervisor("root", strategy="one_for_all", max_restarts=5, children=[
        worker(Member, name=name, journal=journal) for name in ("a", "b", "c")
    ])
    async with open_system(tree) as system:
        events = system.events()
        journal.clear()
        await crash(system, "a")
        await next_event(events, ActorReady, "root/c")
        # a crashed (its cleanup runs too), then the others stop last first, then all start.
        assert journal == ["stop root/a", "stop root/c", "stop root/b",
                           "start root/a", "start root/b", "start root/c"]


async def test_more_restarts_than_the_intensity_gives_up(
    autojump_clock: trio.testing.MockClock,
) -> None:
    tree = supervisor("root", max_restarts=2, within=10.0,
                      children=[worker(Member, name="a")])
    with pytest.raises(RestartLimitExceeded, match=r"gave up: 3 restarts within 10\.0 s"):
        await crash_three_times(tree)


async def crash_three_times(tree: object) -> None:
    async with open_system(tree) as system:  # type: ignore[arg-type]
        events = system.events()
        for _ in range(2):
            await crash(system, "a")
            await next_event(events, ActorReady, "root/a")
        await crash(system, "a")  # the third within 10 s
        await trio.sleep_forever()


async def test_restarts_spaced_wider_than_the_window_never_give_up(
    autojump_clock: trio.testing.MockClock,
) -> None:
    tree = supervisor("root", max_restarts=1, within=1.0,
                      children=[worker(Member, name="a")])
    async with open_system(tree) as system:
        events = system.events()
        for _ in range(5):
            await trio.sleep(1.5)
            await crash(system, "a")
            await next_event(events, ActorReady, "root/a")
        assert await system.ref("root/a").ask(Where(), Address)


async def test_backoff_waits_longer_after_each_crash(
    autojump_clock: trio.testing.MockClock,
) -> None:
    backoff = Backoff(initial=1.0, factor=2.0, cap=3.0, jitter=0.0, reset_after=60.0)
    tree = supervisor("root", max_restarts=10, within=100.0, backoff=backoff,
                      children=[worker(Member, name="a")])
    async with open_system(tree) as system:
        events = system.events()
        waited = []
        for _ in range(4):
            await crash(system, "a")
            crashed = trio.current_time()
            await next_event(events, ActorReady, "root/a")
            waited.append(trio.current_time() - crashed)
    assert waited == pytest.approx([1.0, 2.0, 3.0, 3.0])


async def test_a_failed_start_counts_as_a_restart(
    autojump_clock: trio.testing.MockClock,
) -> None:
    starts: list[str] = []

    class Fails(Member):
        async def setup(self) -> None:
            starts.append("start")
            raise RuntimeError("cannot start")

    tree = supervisor("root", max_restarts=2, within=10.0, children=[worker(Fails, name="f")])
    with pytest.raises(RestartLimitExceeded, match="cannot start"):
        async with open_system(tree):
            pytest.fail("the tree cannot start")  # pragma: no cover
    assert len(starts) == 3  # the first start and max_restarts restarts, no more


async def test_restarts_are_counted_and_evented(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_system(three(Member, max_restarts=5)) as system:
        events = system.events()
        await crash(system, "b")
        restarted = await next_event(events, ActorRestarted, "root/b")
        await next_event(events, ActorReady, "root/b")
        await crash(system, "b")
        again = await next_event(events, ActorRestarted, "root/b")
        assert (restarted.restarts, again.restarts) == (1, 2)
        assert restarted.reason.kind == "crashed"
        assert restarted.reason.error_type == "RuntimeError"


async def test_an_in_process_setup_that_never_returns_times_out(
    autojump_clock: trio.testing.MockClock,
) -> None:
    class Stuck(Member):
        async def setup(self) -> None:
            await trio.sleep_forever()

    async with open_system() as system:
        with pytest.raises(SpawnError, match=r"not ready within 2\.0 s") as info:
            await system.spawn(Stuck, name="stuck", start_timeout=2.0)
        assert info.value.reason is not None
        assert info.value.reason.kind == "timeout"
        assert "stuck" not in system.names()


async def test_a_task_failing_during_setup_fails_the_start(
    autojump_clock: trio.testing.MockClock,
) -> None:
    class Doomed(Member):
        async def setup(self) -> None:
            async def fail_soon() -> None:
                raise ValueError("background task failed")

            self.ctx.start_soon(fail_soon)
            await trio.sleep_forever()  # setup is still running when the task fails

    async with open_system() as system:
        events = system.events()
        started = trio.current_time()
        with pytest.raises(SpawnError, match="background task failed"):
            await system.spawn(Doomed, name="doomed")
        assert trio.current_time() - started < 1  # setup was cancelled, not awaited
        exited = [e for e in received(events) if isinstance(e, ActorExited)]
        assert [e.reason.kind for e in exited] == ["crashed"]

