"""Monitors across processes: watcher and watched in different workers, in a worker and
the master, and a watched worker killed with SIGKILL."""

from __future__ import annotations

import os
import signal

import trio

from actors import Actor, ActorDown, ActorRef, handler, open_system, supervisor, worker
from protocol import Message
from tests.processes import wait_exited
from tests.waiting import TIMEOUT, eventually


class WhoAreYou(Message):
    pass


class Pid(Message):
    pid: int


class Watch(Message):
    target: ActorRef


class Watching(Message):
    id: str


class Downs(Message):
    pass


class Seen(Message):
    downs: list[ActorDown]


class Member(Actor):
    @handler
    async def who(self, msg: WhoAreYou) -> Pid:
        return Pid(pid=os.getpid())


class Watcher(Actor):
    def __init__(self) -> None:
        self.downs: list[ActorDown] = []

    @handler
    async def watch(self, msg: Watch) -> Watching:
        return Watching(id=await self.ctx.monitor(msg.target))

    @handler
    async def down(self, msg: ActorDown) -> None:
        self.downs.append(msg)

    @handler
    async def seen(self, msg: Downs) -> Seen:
        return Seen(downs=self.downs)


async def downs_of(watcher: ActorRef, count: int) -> list[ActorDown]:
    """What ``watcher`` was told, once it was told ``count`` things (it says nothing when
    it is: the test asks again)."""
    async def told() -> bool:
        return len((await watcher.ask(Downs(), Seen)).downs) >= count

    await eventually(told, what=f"{count} ActorDown")
    return (await watcher.ask(Downs(), Seen)).downs


async def test_a_watcher_in_a_worker_hears_of_a_worker_killed_by_sigkill() -> None:
    tree = supervisor("root", children=[
        worker(Member, name="m", process=True),
        worker(Watcher, name="w", process=True),
    ])
    with trio.fail_after(TIMEOUT):
        async with open_system(tree) as system:
            m, w = system.ref("root/m"), system.ref("root/w")
            pid = (await m.ask(WhoAreYou(), Pid)).pid
            await w.ask(Watch(target=m), Watching)
            os.kill(pid, signal.SIGKILL)
            await wait_exited(pid)
            [down] = await downs_of(w, 1)
            assert (down.ref, down.reason) == (m, "killed")
            assert down.exit is not None
            assert down.exit.signal == signal.SIGKILL


async def test_monitors_between_the_master_and_workers() -> None:
    tree = supervisor("root", children=[
        worker(Member, name="near"),
        worker(Member, name="far", process=True),
        worker(Watcher, name="w", process=True),
    ])
    with trio.fail_after(TIMEOUT):
        async with open_system(tree) as system:
            near, far, w = system.ref("root/near"), system.ref("root/far"), system.ref("root/w")
            # A worker watches an actor of the master.
            await w.ask(Watch(target=near), Watching)
            await system.terminate_child("root/near")
            [down] = await downs_of(w, 1)
            assert (down.ref, down.reason) == (near, "shutdown")
            # The master watches a worker; and a worker asks about what is gone.
            async with system.monitor(far) as downs:
                await system.terminate_child("root/far")
                assert (await downs.receive()).reason == "shutdown"
            await w.ask(Watch(target=far), Watching)
            assert (await downs_of(w, 2))[1].reason == "noproc"


class Nested(Actor):
    """A worker with an actor of its own in its process and a process child."""

    async def setup(self) -> None:
        await self.ctx.spawn(Member, name="inner")
        await self.ctx.spawn(Member, name="child", process=True)

    @handler
    async def who(self, msg: WhoAreYou) -> Pid:
        return Pid(pid=os.getpid())


async def test_watched_actors_of_a_killed_worker_are_down_too() -> None:
    tree = supervisor("root", children=[
        worker(Nested, name="n", process=True),
        worker(Watcher, name="w", process=True),
    ])
    with trio.fail_after(TIMEOUT):
        async with open_system(tree) as system:
            w = system.ref("root/w")
            inner, child = system.ref("root/n/inner"), system.ref("root/n/child")
            await w.ask(Watch(target=inner), Watching)
            await w.ask(Watch(target=child), Watching)
            pid = (await system.ref("root/n").ask(WhoAreYou(), Pid)).pid
            os.kill(pid, signal.SIGKILL)
            assert {(d.ref.path, d.reason) for d in await downs_of(w, 2)} == {
                ("root/n/inner", "killed"), ("root/n/child", "killed")}
