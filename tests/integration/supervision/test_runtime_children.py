"""Children managed at runtime on supervisors in worker processes, from the master and
from actors in other processes; process children restarting while operations come."""

from __future__ import annotations

import os
import signal

import pytest
import trio

from actors import (
    Actor,
    ActorExited,
    ActorNotFound,
    ActorReady,
    Backoff,
    ChildCount,
    ChildExists,
    ChildRunning,
    RemoteError,
    handler,
    open_system,
    supervisor,
    worker,
)
from protocol import Message
from tests.events import next_event
from tests.processes import wait_exited
from tests.waiting import TIMEOUT, eventually


class WhoAreYou(Message):
    pass


class Pid(Message):
    pid: int


class Member(Actor):
    def __init__(self, tag: str = "") -> None:
        self.tag = tag

    @handler
    async def who(self, msg: WhoAreYou) -> Pid:
        return Pid(pid=os.getpid())


class TeamOwner(Actor):
    """A process actor that runs a supervisor of its own, ``team``."""

    async def setup(self) -> None:
        await self.ctx.spawn(supervisor("team", children=[worker(Member, name="m")]))

    @handler
    async def who(self, msg: WhoAreYou) -> Pid:
        return Pid(pid=os.getpid())


class Hire(Message):
    supervisor: str
    name: str
    process: bool


class Manager(Actor):
    """Manages children of supervisors in other processes through its context."""

    @handler
    async def hire(self, msg: Hire) -> Pid:
        ref = await self.ctx.start_child(
            msg.supervisor, worker(Member, name=msg.name, process=msg.process, tag="x"))
        return await ref.ask(WhoAreYou(), Pid)

    @handler
    async def count(self, msg: WhoAreYou) -> ChildCount:
        await self.ctx.terminate_child("root/owner/team/m")
        await self.ctx.restart_child("root/owner/team/m")
        return await self.ctx.count_children("root/owner/team")


def tree() -> object:
    return supervisor("root", children=[
        worker(TeamOwner, name="owner", process=True),
        worker(Manager, name="manager", process=True),
    ])


async def test_the_master_manages_a_supervisor_inside_a_worker() -> None:
    with trio.fail_after(TIMEOUT):
        async with open_system(tree()) as system:  # type: ignore[arg-type]
            events = system.events()
            owner_pid = (await system.ref("root/owner").ask(WhoAreYou(), Pid)).pid
            ref = await system.start_child(
                "root/owner/team", worker(Member, name="p", process=True))
            p_pid = (await ref.ask(WhoAreYou(), Pid)).pid
            assert p_pid != owner_pid
            rows = {r.name: r for r in await system.which_children("root/owner/team")}
            assert set(rows) == {"m", "p"}
            assert (rows["m"].kind, rows["m"].pid, rows["m"].state) == (
                "actor", owner_pid, "running")
            assert (rows["p"].kind, rows["p"].pid) == ("worker", p_pid)
            with pytest.raises(ChildExists):
                await system.start_child("root/owner/team", worker(Member, name="p"))
            with pytest.raises(ActorNotFound):
                await system.which_children("root/owner/nobody")

            await system.terminate_child("root/owner/team/p")
            await wait_exited(p_pid)
            exited = await next_event(events, ActorExited, "root/owner/team/p")
            assert exited.reason.kind == "shutdown"
            with pytest.raises(ChildRunning):
                await system.delete_child("root/owner/team/m")
            ref = await system.restart_child("root/owner/team/p")
            assert (await ref.ask(WhoAreYou(), Pid)).pid not in (p_pid, owner_pid)
            await system.terminate_child("root/owner/team/p")
            await system.delete_child("root/owner/team/p")
            assert await system.count_children("root/owner/team") == ChildCount(
                specs=1, active=1, supervisors=0, workers=1)


async def test_an_actor_in_a_worker_manages_supervisors_in_other_processes() -> None:
    with trio.fail_after(TIMEOUT):
        async with open_system(tree()) as system:  # type: ignore[arg-type]
            manager = system.ref("root/manager")
            # On the master's root supervisor, as a process of its own, and in-process.
            far = await manager.ask(Hire(supervisor="root", name="far", process=True), Pid)
            near = await manager.ask(Hire(supervisor="root", name="near", process=False), Pid)
            assert near.pid == os.getpid()
            assert far.pid != os.getpid()
            # On the supervisor inside another worker.
            owner_pid = (await system.ref("root/owner").ask(WhoAreYou(), Pid)).pid
            there = await manager.ask(
                Hire(supervisor="root/owner/team", name="h", process=False), Pid)
            assert there.pid == owner_pid
            assert await manager.ask(WhoAreYou(), ChildCount) == ChildCount(
                specs=2, active=2, supervisors=0, workers=2)
            with pytest.raises(RemoteError, match="ActorNotFound"):
                await manager.ask(Hire(supervisor="root/none", name="x", process=False))


async def test_operations_during_a_restart_of_a_process_child() -> None:
    tree = supervisor("root", children=[
        # (a backoff keeps the restart under way while the operations come)
        supervisor("team", max_restarts=10, backoff=Backoff(initial=0.5, jitter=0.0),
                   children=[worker(Member, name="a", process=True),
                             worker(Member, name="b", process=True)]),
    ])
    with trio.fail_after(TIMEOUT):
        async with open_system(tree) as system:
            events = system.events()
            old = (await system.ref("root/team/a").ask(WhoAreYou(), Pid)).pid
            os.kill(old, signal.SIGKILL)
            await next_event(events, ActorExited, "root/team/a")
            # Its restart is under way (a new process starting): operations meanwhile.
            rows = {r.name: r.state for r in await system.which_children("root/team")}
            assert rows["a"] in ("exited", "restarting")
            async with trio.open_nursery() as nursery:
                nursery.start_soon(system.start_child, "root/team",
                                   worker(Member, name="c", process=True))
                nursery.start_soon(system.terminate_child, "root/team/b")
            ready = await next_event(events, ActorReady, "root/team/a")
            assert ready.pid != old

            async def states() -> dict[str, str]:
                return {r.name: r.state for r in await system.which_children("root/team")}

            async def settled() -> bool:  # (its supervisor takes it in just after)
                return (await states())["a"] == "running"

            await eventually(settled)
            assert await states() == {"a": "running", "b": "terminated", "c": "running"}
            await system.terminate_child("root/team/a")  # a restarted child terminates too
            assert await states() == {"a": "terminated", "b": "terminated", "c": "running"}
