"""Pools of in-process actors, on a virtual clock: members named 0..N-1, a ref to the pool
that spreads asks and waits through restarts, ``map`` in order, and ``scale``."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from actors import (
    Actor,
    ActorExited,
    ActorNotFound,
    ActorReady,
    Backoff,
    PoolSpec,
    RemoteError,
    handler,
    open_system,
    pool,
    supervisor,
    worker,
)
from protocol import Message
from tests.events import next_event


class Job(Message):
    n: int


class Done(Message):
    n: int
    by: str


class Crash(Message):
    pass


class Member(Actor):
    def __init__(self, factor: int = 1) -> None:
        self.factor = factor

    @handler
    async def job(self, msg: Job) -> Done:
        if msg.n < 0:
            raise ValueError("no negative jobs")
        await trio.sleep(0.1 * (msg.n % 3))  # replies come back out of order
        return Done(n=msg.n * self.factor, by=self.ctx.path)

    @handler
    async def crash(self, msg: Crash) -> None:
        raise RuntimeError("asked to crash")


def tree(size: int = 3, backoff: Backoff | None = None) -> object:
    return supervisor("root", children=[
        pool("workers", worker(Member, factor=2), size=size, max_restarts=10, backoff=backoff),
    ])


def test_a_pool_spec_names_its_members_by_number() -> None:
    spec = pool("p", worker(Member, name="ignored"), size=3)
    assert isinstance(spec, PoolSpec)
    assert [child.name for child in spec.children] == ["0", "1", "2"]
    assert spec.strategy == "one_for_one"
    with pytest.raises(ValueError, match="size"):
        pool("p", worker(Member), size=0)
    with pytest.raises(TypeError):
        pool("p", Member, size=1)  # type: ignore[arg-type]


async def test_the_pools_ref_spreads_asks_over_its_members_in_turn(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_system(tree()) as system:  # type: ignore[arg-type]
        workers = system.ref("root/workers")
        done = [await workers.ask(Job(n=n), Done) for n in range(6)]
        assert [d.by for d in done] == [f"root/workers/{i % 3}" for i in range(6)]
        assert [d.n for d in done] == [2 * n for n in range(6)]


async def test_map_answers_in_order_and_raises_the_first_failure(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_system(tree()) as system:  # type: ignore[arg-type]
        workers = system.ref("root/workers")
        done = await workers.map([Job(n=n) for n in range(20)], Done)
        assert [d.n for d in done] == [2 * n for n in range(20)]
        assert {d.by for d in done} == {"root/workers/0", "root/workers/1", "root/workers/2"}
        assert await workers.map([], Done) == []
        with pytest.raises(RemoteError, match="no negative jobs"):
            await workers.map([Job(n=1), Job(n=-1), Job(n=2)], Done)


async def test_asks_go_to_live_members_and_wait_while_none_is(
    autojump_clock: trio.testing.MockClock,
) -> None:
    spec = tree(size=2, backoff=Backoff(initial=5.0, jitter=0.0))
    async with open_system(spec) as system:  # type: ignore[arg-type]
        events = system.events()
        workers = system.ref("root/workers")
        with pytest.raises(RemoteError):
            await system.ref("root/workers/0").ask(Crash())
        await next_event(events, ActorExited, "root/workers/0")
        # 0 waits out its backoff: every ask goes to 1 meanwhile.
        done = [await workers.ask(Job(n=n), Done) for n in range(4)]
        assert {d.by for d in done} == {"root/workers/1"}
        with pytest.raises(RemoteError):
            await system.ref("root/workers/1").ask(Crash())
        await next_event(events, ActorExited, "root/workers/1")
        # None runs: an ask waits for the first back (0, at the end of its backoff).
        began = trio.current_time()
        assert (await workers.ask(Job(n=3), Done)).by == "root/workers/0"
        assert trio.current_time() > began
        await next_event(events, ActorReady, "root/workers/0")


async def test_scale_resizes_a_pool(autojump_clock: trio.testing.MockClock) -> None:
    async with open_system(tree()) as system:  # type: ignore[arg-type]
        workers = system.ref("root/workers")
        await system.scale("root/workers", 5)
        names = [row.name for row in await system.which_children("root/workers")]
        assert names == ["0", "1", "2", "3", "4"]
        done = await workers.map([Job(n=n) for n in range(10)], Done)
        assert len({d.by for d in done}) == 5
        await system.scale("root/workers", 1)
        assert [row.name for row in await system.which_children("root/workers")] == ["0"]
        assert {d.by for d in await workers.map([Job(n=n) for n in range(4)], Done)} == {
            "root/workers/0"}
        with pytest.raises(ValueError, match="at least one"):
            await system.scale("root/workers", 0)
        with pytest.raises(ActorNotFound):
            await system.scale("root", 2)  # a supervisor, not a pool
        async with system.monitor(workers) as down:  # a pool is no actor to watch
            assert (await down.receive()).reason == "noproc"


async def test_start_child_of_a_pool_returns_a_ref_that_spreads(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_system(supervisor("root", children=[])) as system:
        ref = await system.start_child("root", pool("p", worker(Member), size=2))
        done = await ref.map([Job(n=n) for n in range(4)], Done)
        assert [d.by for d in done] == ["root/p/0", "root/p/1", "root/p/0", "root/p/1"]
        await system.terminate_child("root/p")
        with pytest.raises(ActorNotFound):
            await ref.ask(Job(n=1))


class Hold(Message):
    pass


class Held(Message):
    by: str


class Holder(Actor):
    """Answers a Hold after 30 s: an ask it holds keeps it busy that long."""

    @handler
    async def hold(self, msg: Hold) -> Held:
        await trio.sleep(30)
        return Held(by=self.ctx.path)

    @handler
    async def job(self, msg: Job) -> Done:
        return Done(n=msg.n, by=self.ctx.path)


def test_a_pools_policy_is_round_robin_or_least_busy() -> None:
    assert pool("p", worker(Member), size=2).policy == "round_robin"
    assert pool("p", worker(Member), size=2, policy="least_busy").policy == "least_busy"
    with pytest.raises(ValueError, match="policy"):
        pool("p", worker(Member), size=2, policy="random")  # type: ignore[arg-type]


async def test_a_least_busy_pool_sends_to_the_member_with_fewest_asks_in_flight(
    autojump_clock: trio.testing.MockClock,
) -> None:
    spec = supervisor("root", children=[
        pool("held", worker(Holder), size=3, policy="least_busy"),
    ])
    async with open_system(spec) as system:
        held = system.ref("root/held")
        holders: list[str] = []

        async def hold() -> None:
            holders.append((await held.ask(Hold(), Held)).by)

        async with trio.open_nursery() as nursery:
            for _ in range(2):  # two asks held 30 s: by two members, one each
                nursery.start_soon(hold)
            await trio.testing.wait_all_tasks_blocked()
            # Every ask from now on goes to the one member holding none, while the others
            # are busy (round robin would send two of these three to busy members).
            done = [await held.ask(Job(n=n), Done) for n in range(3)]
            assert len({d.by for d in done}) == 1
        assert sorted([*holders, done[0].by]) == [
            "root/held/0", "root/held/1", "root/held/2",
        ]
        # Nothing in flight any more: in turn again.
        done = [await held.ask(Job(n=n), Done) for n in range(3)]
        assert len({d.by for d in done}) == 3
