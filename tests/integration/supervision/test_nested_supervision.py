"""Supervisors under supervisors: escalation, and a tree inside a worker process."""

from __future__ import annotations

import os
import signal

import trio

from actors import (
    Actor,
    ActorExited,
    ActorReady,
    SupervisorGaveUp,
    handler,
    open_system,
    supervisor,
    worker,
)
from protocol import Message
from tests.events import next_event, received
from tests.processes import wait_exited
from tests.waiting import TIMEOUT


class WhoAreYou(Message):
    pass


class Pid(Message):
    pid: int


class Member(Actor):
    @handler
    async def who(self, msg: WhoAreYou) -> Pid:
        return Pid(pid=os.getpid())


class PoolOwner(Actor):
    """A process actor that runs a supervision tree of its own."""

    async def setup(self) -> None:
        await self.ctx.spawn(supervisor(
            "pool", children=[worker(Member, name="m", process=True)]
        ))


async def test_a_supervisor_that_gives_up_is_restarted_by_its_parent() -> None:
    tree = supervisor("root", children=[
        supervisor("inner", max_restarts=0, children=[worker(Member, name="m", process=True)]),
    ])
    with trio.fail_after(TIMEOUT):
        async with open_system(tree) as system:
            events = system.events()
            ref = system.ref("root/inner/m")
            old = (await ref.ask(WhoAreYou(), Pid)).pid
            os.kill(old, signal.SIGKILL)
            await next_event(events, SupervisorGaveUp, "root/inner")
            ready = await next_event(events, ActorReady, "root/inner/m")
            assert ready.pid != old
            assert (await ref.ask(WhoAreYou(), Pid)).pid == ready.pid


async def test_a_tree_inside_a_worker_restarts_its_own_children() -> None:
    tree = supervisor("root", children=[worker(PoolOwner, name="owner", process=True)])
    with trio.fail_after(TIMEOUT):
        async with open_system(tree) as system:
            events = system.events()
            ref = system.ref("root/owner/pool/m")
            old = (await ref.ask(WhoAreYou(), Pid)).pid
            owner_pid = next(
                e.pid for e in received(system.events(history=True))
                if isinstance(e, ActorReady) and e.path == "root/owner"
            )
            assert old != owner_pid
            os.kill(old, signal.SIGKILL)
            await wait_exited(old)
            # The worker's own supervisor restarts it; its events reach the master.
            ready = await next_event(events, ActorReady, "root/owner/pool/m")
            assert ready.pid not in (old, owner_pid)
            assert (await ref.ask(WhoAreYou(), Pid)).pid == ready.pid


class TreeOwner(Actor):
    """A process actor with a supervisor of one process and one in-process child, and a
    process child of its own."""

    async def setup(self) -> None:
        await self.ctx.spawn(supervisor("sup", children=[
            worker(Member, name="far", process=True),
            worker(Member, name="near"),
        ]))
        await self.ctx.spawn(Member, name="own", process=True)

    @handler
    async def who(self, msg: WhoAreYou) -> Pid:
        return Pid(pid=os.getpid())


async def test_every_instance_of_a_killed_worker_gets_exactly_one_exit() -> None:
    below = {"owner/sup", "owner/sup/far", "owner/sup/near", "owner/own"}
    with trio.fail_after(TIMEOUT):
        async with open_system() as system:
            events = system.events()
            owner = await system.spawn(TreeOwner, name="owner", process=True)
            pid = (await owner.ask(WhoAreYou(), Pid)).pid
            os.kill(pid, signal.SIGKILL)
            exited: list[str] = []
            async for event in events:
                if isinstance(event, ActorExited):
                    exited.append(event.path)
                    if below | {"owner"} <= set(exited):
                        break
        # (the system stopped meanwhile: whatever came late is in the channel by now)
        exited += [e.path for e in received(events) if isinstance(e, ActorExited)]
    assert sorted(exited) == sorted(below | {"owner"})


class Middle(Actor):
    """A process actor with a supervisor of its own in its process."""

    async def setup(self) -> None:
        await self.ctx.spawn(supervisor("sup", children=[worker(Member, name="near")]))

    @handler
    async def who(self, msg: WhoAreYou) -> Pid:
        return Pid(pid=os.getpid())


class Grandparent(Actor):
    async def setup(self) -> None:
        await self.ctx.spawn(Middle, name="mid", process=True)

    @handler
    async def who(self, msg: WhoAreYou) -> Pid:
        return Pid(pid=os.getpid())


async def test_a_supervisor_killed_below_a_worker_gets_one_exit_when_that_dies_too() -> None:
    below = {"top/mid", "top/mid/sup", "top/mid/sup/near"}
    with trio.fail_after(TIMEOUT):
        async with open_system() as system:
            events = system.events()
            top = await system.spawn(Grandparent, name="top", process=True)
            mid = (await system.ref("top/mid").ask(WhoAreYou(), Pid)).pid
            os.kill(mid, signal.SIGKILL)  # its parent (top) sees it go, and reports
            exited: list[str] = []
            async for event in events:
                if isinstance(event, ActorExited):
                    exited.append(event.path)
                    if below <= set(exited):
                        break
            os.kill((await top.ask(WhoAreYou(), Pid)).pid, signal.SIGKILL)
            async for event in events:
                if isinstance(event, ActorExited):
                    exited.append(event.path)
                    if event.path == "top":
                        break
        exited += [e.path for e in received(events) if isinstance(e, ActorExited)]
    assert sorted(exited) == sorted(below | {"top"})
