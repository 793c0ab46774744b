"""Children managed at runtime (OTP's supervisor API) on in-process trees, on a virtual
clock: start, terminate, restart, delete, which and count, their errors, and operations
while a restart is in progress."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from actors import (
    Actor,
    ActorExited,
    ActorNotFound,
    ActorReady,
    ActorRef,
    Backoff,
    ChildCount,
    ChildExists,
    ChildRunning,
    RemoteError,
    SpawnError,
    handler,
    open_system,
    supervisor,
    worker,
)
from protocol import Message
from tests.events import next_event, received


class Crash(Message):
    pass


class Where(Message):
    pass


class Address(Message):
    address: str


class Member(Actor):
    @handler
    async def crash(self, msg: Crash) -> None:
        raise RuntimeError("asked to crash")

    @handler
    async def where(self, msg: Where) -> Address:
        return Address(address=self.ctx.ref.wire())


class Hire(Message):
    supervisor: str
    name: str


class Manager(Actor):
    """Manages another supervisor's children from its handlers, through its context."""

    @handler
    async def hire(self, msg: Hire) -> Address:
        ref = await self.ctx.start_child(msg.supervisor, worker(Member, name=msg.name))
        rows = await self.ctx.which_children(msg.supervisor)
        assert msg.name in [row.name for row in rows]
        return Address(address=ref.wire())

    @handler
    async def fire(self, msg: Where) -> ChildCount:
        await self.ctx.terminate_child("root/team/hired")
        await self.ctx.delete_child("root/team/hired")
        return await self.ctx.count_children("root/team")


def nested() -> object:
    return supervisor("root", children=[
        worker(Member, name="a"),
        supervisor("team", max_restarts=10, children=[worker(Member, name="m")]),
    ])


async def test_start_a_child_on_a_nested_supervisor_and_list_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_system(nested()) as system:  # type: ignore[arg-type]
        ref = await system.start_child("root/team", worker(Member, name="new"))
        assert isinstance(ref, ActorRef)
        assert await system.ref("root/team/new").ask(Where(), Address)
        rows = await system.which_children("root/team")
        assert [(r.name, r.path, r.kind, r.state, r.restarts) for r in rows] == [
            ("m", "root/team/m", "actor", "running", 0),
            ("new", "root/team/new", "actor", "running", 0),
        ]
        assert all(row.pid is not None for row in rows)
        top = await system.which_children("root")
        assert [(r.name, r.kind) for r in top] == [("a", "actor"), ("team", "supervisor")]
        assert await system.count_children("root") == ChildCount(
            specs=2, active=2, supervisors=1, workers=1)


async def test_terminate_keeps_the_spec_restart_starts_it_again_delete_forgets_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_system(nested()) as system:  # type: ignore[arg-type]
        events = system.events()
        old = (await system.ref("root/team/m").ask(Where(), Address)).address
        await system.terminate_child("root/team/m")
        exited = await next_event(events, ActorExited, "root/team/m")
        assert exited.reason.kind == "shutdown"
        await trio.testing.wait_all_tasks_blocked()
        assert "root/team/m" not in system.names()  # and nothing restarts it
        assert not [e for e in received(events) if e.path == "root/team/m"]
        [row] = await system.which_children("root/team")
        assert (row.state, row.pid) == ("terminated", None)
        assert await system.count_children("root/team") == ChildCount(
            specs=1, active=0, supervisors=0, workers=0)

        with pytest.raises(ChildExists):  # the kept spec holds the name
            await system.start_child("root/team", worker(Member, name="m"))
        ref = await system.restart_child("root/team/m")
        assert (await ref.ask(Where(), Address)).address not in ("", old)
        with pytest.raises(ChildRunning):
            await system.restart_child("root/team/m")
        with pytest.raises(ChildRunning):
            await system.delete_child("root/team/m")

        await system.terminate_child("root/team/m")
        await system.delete_child("root/team/m")
        assert await system.which_children("root/team") == []
        with pytest.raises(ActorNotFound):
            await system.restart_child("root/team/m")
        await system.start_child("root/team", worker(Member, name="m"))  # a new spec


async def test_a_terminated_temporary_child_leaves_no_spec(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_system(nested()) as system:  # type: ignore[arg-type]
        await system.start_child("root/team", worker(Member, name="t", restart="temporary"))
        await system.terminate_child("root/team/t")
        assert [row.name for row in await system.which_children("root/team")] == ["m"]


async def test_bad_operations_are_typed_errors_and_the_tree_runs_on(
    autojump_clock: trio.testing.MockClock,
) -> None:
    class Broken(Member):
        async def setup(self) -> None:
            raise ValueError("no")

    async with open_system(nested()) as system:  # type: ignore[arg-type]
        with pytest.raises(ActorNotFound):
            await system.start_child("root/nobody", worker(Member, name="x"))
        with pytest.raises(ActorNotFound):
            await system.start_child("root/a", worker(Member, name="x"))  # not a supervisor
        with pytest.raises(ActorNotFound):
            await system.which_children("root/nobody")
        with pytest.raises(ActorNotFound):
            await system.terminate_child("root/team/nobody")
        with pytest.raises(ActorNotFound):
            await system.terminate_child("root")
        with pytest.raises(ChildExists):
            await system.start_child("root", worker(Member, name="team"))
        with pytest.raises(SpawnError, match="no"):
            await system.start_child("root/team", worker(Broken, name="broken"))
        assert [row.name for row in await system.which_children("root/team")] == ["m"]
        assert await system.ref("root/team/m").ask(Where(), Address)


async def test_operations_wait_for_a_restart_in_progress_and_then_act(
    autojump_clock: trio.testing.MockClock,
) -> None:
    tree = supervisor("root", children=[
        supervisor("team", max_restarts=10, backoff=Backoff(initial=5.0, jitter=0.0),
                   children=[worker(Member, name="m"), worker(Member, name="n")]),
    ])
    async with open_system(tree) as system:
        events = system.events()
        with pytest.raises(RemoteError):
            await system.ref("root/team/m").ask(Crash())
        await next_event(events, ActorExited, "root/team/m")
        await trio.testing.wait_all_tasks_blocked()  # its restart waits out its backoff
        rows = {row.name: row.state for row in await system.which_children("root/team")}
        assert rows == {"m": "restarting", "n": "running"}
        began = trio.current_time()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(system.start_child, "root/team", worker(Member, name="o"))
            nursery.start_soon(system.terminate_child, "root/team/m")
        assert trio.current_time() - began >= 5.0  # both waited for the restart
        rows = {row.name: row.state for row in await system.which_children("root/team")}
        assert rows == {"m": "terminated", "n": "running", "o": "running"}
        await trio.testing.wait_all_tasks_blocked()
        assert "root/team/m" not in system.names()


async def test_an_actor_manages_children_through_its_context(
    autojump_clock: trio.testing.MockClock,
) -> None:
    tree = supervisor("root", children=[
        supervisor("team", children=[]),
        worker(Manager, name="boss"),
    ])
    async with open_system(tree) as system:
        events = system.events()
        boss = system.ref("root/boss")
        hired = await boss.ask(Hire(supervisor="root/team", name="hired"), Address)
        ready = await next_event(events, ActorReady, "root/team/hired")
        assert ready.address == hired.address
        count = await boss.ask(Where(), ChildCount)
        assert count == ChildCount(specs=0, active=0, supervisors=0, workers=0)
        with pytest.raises(RemoteError, match="ActorNotFound"):
            await boss.ask(Hire(supervisor="root/none", name="x"))
