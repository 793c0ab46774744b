"""Pools of worker processes: CPU-bound work mapped over them in order, a member killed
with SIGKILL, and a pool inside a worker's own tree reached by its path."""

from __future__ import annotations

import os
import signal

import trio

from actors import Actor, ActorReady, handler, open_system, pool, supervisor, worker
from protocol import Message
from tests.events import next_event
from tests.processes import wait_exited
from tests.waiting import TIMEOUT


class Job(Message):
    n: int


class Done(Message):
    n: int
    pid: int
    by: str


class Squarer(Actor):
    @handler
    async def job(self, msg: Job) -> Done:
        total = sum(i * i for i in range(20_000))  # some CPU
        assert total > 0
        return Done(n=msg.n * msg.n, pid=os.getpid(), by=self.ctx.path)


async def test_map_over_a_pool_of_processes_in_order_through_a_kill() -> None:
    tree = supervisor("root", children=[
        pool("squares", worker(Squarer, process=True), size=3, max_restarts=10),
    ])
    with trio.fail_after(TIMEOUT):
        async with open_system(tree) as system:
            events = system.events()
            squares = system.ref("root/squares")
            done = await squares.map([Job(n=n) for n in range(30)], Done)
            assert [d.n for d in done] == [n * n for n in range(30)]
            pids = {d.pid for d in done}
            assert len(pids) == 3
            assert os.getpid() not in pids
            victim = done[0].pid
            os.kill(victim, signal.SIGKILL)
            await wait_exited(victim)
            # The asks go to the live members while the killed one restarts.
            again = await squares.map([Job(n=n) for n in range(30)], Done)
            assert [d.n for d in again] == [n * n for n in range(30)]
            assert victim not in {d.pid for d in again}
            await next_event(events, ActorReady, done[0].by)
            await system.scale("root/squares", 1)
            assert {d.by for d in await squares.map([Job(n=1)] * 4, Done)} == {
                "root/squares/0"}


class PoolOwner(Actor):
    """A process actor whose own tree holds a pool of in-process members."""

    async def setup(self) -> None:
        await self.ctx.spawn(pool("inner", worker(Squarer), size=2))


async def test_a_pool_inside_a_worker_is_reached_by_its_path() -> None:
    tree = supervisor("root", children=[worker(PoolOwner, name="owner", process=True)])
    with trio.fail_after(TIMEOUT):
        async with open_system(tree) as system:
            inner = system.ref("root/owner/inner")
            done = await inner.map([Job(n=n) for n in range(6)], Done)
            assert [d.n for d in done] == [n * n for n in range(6)]
            assert {d.by for d in done} == {"root/owner/inner/0", "root/owner/inner/1"}
            await system.scale("root/owner/inner", 3)
            done = await inner.map([Job(n=n) for n in range(9)], Done)
            assert len({d.by for d in done}) == 3


class TeamOwner(Actor):
    async def setup(self) -> None:
        await self.ctx.spawn(supervisor("team", children=[]))


async def test_a_pool_started_at_runtime_in_a_workers_tree() -> None:
    tree = supervisor("root", children=[worker(TeamOwner, name="owner", process=True)])
    with trio.fail_after(TIMEOUT):
        async with open_system(tree) as system:
            ref = await system.start_child(
                "root/owner/team", pool("squares", worker(Squarer, process=True), size=2))
            done = await ref.map([Job(n=n) for n in range(6)], Done)
            assert [d.n for d in done] == [n * n for n in range(6)]
            assert len({d.pid for d in done}) == 2
            rows = await system.which_children("root/owner/team/squares")
            assert [(r.name, r.kind) for r in rows] == [("0", "worker"), ("1", "worker")]
