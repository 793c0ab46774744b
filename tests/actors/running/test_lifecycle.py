"""One lifecycle state per child, and the one way a child ends: on a bare child, then on a
cell (an actor in this process) through its states, on a virtual clock."""

from __future__ import annotations

import gc
import math
import os

import pytest
import trio
import trio.testing

from actors import (
    Actor,
    ActorExited,
    ActorRef,
    Event,
    ExitReason,
    SpawnError,
    handler,
    open_system,
)
from actors._base._tree import ChildBase, ChildKind, Lifecycle, Root
from actors._messaging._names import NameRegistry
from actors._messaging._outbox import MASTER_NODE
from actors._messaging._router import Router
from actors._running._cell import Cell, Retirement
from protocol import Message

# -- a bare child ----------------------------------------------------------------------------


class Witness:
    """Hears of ends, as the router does."""

    def __init__(self) -> None:
        self.gone: list[tuple[str, str, ExitReason]] = []
        self.events: list[Event] = []

    def departed(self, address: str, path: str, reason: ExitReason) -> None:
        self.gone.append((address, path, reason))

    def publish(self, event: Event) -> None:
        self.events.append(event)


class Bare(ChildBase):
    kind: ChildKind = "actor"

    @property
    def ref(self) -> ActorRef:
        raise AssertionError("not used")

    async def shutdown(self, grace: float) -> None:
        raise AssertionError("not used")


def bare(parent: Root | None = None) -> Bare:
    root = parent or Root("", nursery=None)  # type: ignore[arg-type]
    child = Bare("a", root, 1.0)
    root.running.append(child)
    return child


def test_a_child_only_moves_forward() -> None:
    child = bare()
    assert child.state is Lifecycle.STARTING
    assert child._move(Lifecycle.RUNNING)
    assert child._move(Lifecycle.STOPPING)  # (a state may be skipped: RETIRING here)
    assert not child._move(Lifecycle.RETIRING)
    assert not child._move(Lifecycle.STOPPING)
    assert child.state is Lifecycle.STOPPING


@pytest.mark.parametrize(("causes", "kind"), [
    ([], "shutdown"),  # cancelled with whatever contains it
    (["itself"], "normal"),
    (["asked"], "shutdown"),
    (["itself", "asked"], "shutdown"),  # the parent's stop outranks the child's own
    (["asked", "itself"], "shutdown"),
    (["at_once", "itself"], "shutdown"),
])
def test_who_began_the_stop_decides_between_normal_and_shutdown(
    causes: list[str], kind: str
) -> None:
    child = bare()
    child._move(Lifecycle.RUNNING)
    for cause in causes:
        child._stopping(cause)  # type: ignore[arg-type]
    assert child._finish(None).kind == kind


def test_the_first_explanation_wins_over_what_ended_it() -> None:
    child = bare()
    child._explain(ExitReason(kind="memory", detail="first"))
    child._explain(ExitReason(kind="unresponsive", detail="second"))
    child._killed = "did not stop within 1.0 s"
    reason = child._finish(None, failure=RuntimeError("boom"), returncode=-9)
    assert (reason.kind, reason.detail, reason.signal) == ("memory", "first", 9)


def test_a_failure_outranks_our_kill_which_outranks_the_exit_status() -> None:
    child = bare()
    child._killed = "did not stop within 1.0 s"
    assert child._finish(None, failure=RuntimeError("boom"), returncode=1).kind == "crashed"
    child = bare()
    child._killed = "did not stop within 1.0 s"
    assert child._finish(None, returncode=-9).detail == "did not stop within 1.0 s"


async def test_finishing_records_once_leaves_the_parent_and_tells_the_witness() -> None:
    root = Root("", nursery=None)  # type: ignore[arg-type]
    child = bare(root)
    witness = Witness()
    waiter_saw: list[Lifecycle] = []

    async def wait() -> None:
        await child._wait_for(Lifecycle.STOPPING)
        waiter_saw.append(child.state)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(wait)
        await trio.testing.wait_all_tasks_blocked()
        child._move(Lifecycle.RUNNING)
        await trio.testing.wait_all_tasks_blocked()
        assert waiter_saw == []  # RUNNING is not STOPPING yet
        reason = child._finish(witness, address="0/1", node="0.1")
    assert waiter_saw == [Lifecycle.EXITED]  # a later state satisfies the wait
    assert child.done.is_set()
    assert child.exit_reason is reason
    assert root.running == []
    assert witness.gone == [("0/1", "a", reason)]
    [event] = witness.events
    assert isinstance(event, ActorExited)
    assert (event.address, event.node, event.reason) == ("0/1", "0.1", reason)
    with pytest.raises(AssertionError, match="ended twice"):
        child._finish(witness)


class Counted(Bare):
    """A sibling that counts how often a scan of its parent's list compared it."""

    compared = 0

    def __eq__(self, other: object) -> bool:
        Counted.compared += 1
        return self is other

    __hash__ = Bare.__hash__


def test_children_ending_last_first_do_not_scan_their_siblings() -> None:
    # Stopping N children (the last started first, as stop_children does) must not cost
    # N scans of the parent's list: that made stopping 10 000 actors take seconds.
    root = Root("", nursery=None)  # type: ignore[arg-type]
    children = [Counted("a", root, 1.0) for _ in range(50)]
    root.running.extend(children)
    Counted.compared = 0
    for child in reversed(children):
        child._finish(None)
    assert root.running == []
    assert Counted.compared == 0
    middle = Counted("b", root, 1.0)  # one that ends out of order still leaves the list
    first, last = Bare("x", root, 1.0), Bare("y", root, 1.0)
    root.running.extend([first, middle, last])
    middle._finish(None)
    assert root.running == [first, last]


def test_an_end_without_an_address_departs_nothing_and_may_stay_unreported() -> None:
    child = bare()
    witness = Witness()
    child._finish(witness, report=False)
    assert witness.gone == []
    assert witness.events == []


# -- a cell ----------------------------------------------------------------------------------


class Go(Message):
    pass


class Crash(Message):
    pass


class Replace(Message):
    pass


class Stop(Message):
    pass


class Slow(Actor):
    def __init__(self, ready: trio.Event | None = None) -> None:
        self.ready = ready

    async def setup(self) -> None:
        if self.ready is not None:
            await self.ready.wait()

    @handler
    async def go(self, msg: Go) -> Go:
        return msg

    @handler
    async def crash(self, msg: Crash) -> None:
        raise RuntimeError("asked to crash")

    @handler
    async def replace(self, msg: Replace) -> None:
        self.ctx.request_replacement("asked by the test")

    @handler
    async def stop(self, msg: Stop) -> None:
        self.ctx.stop()


async def _no_spawn(*args: object, **kwargs: object) -> ActorRef:
    raise SpawnError("no children here")


def ended(child: ChildBase) -> ExitReason:
    assert child.exit_reason is not None
    return child.exit_reason


def cell(
    nursery: trio.Nursery,
    actor: Actor,
    retirements: trio.MemorySendChannel[Retirement] | None = None,
) -> tuple[Cell, Root]:
    router = Router(MASTER_NODE, nursery, names=NameRegistry())
    root = Root("", nursery)
    made = Cell(router, actor, path="slow", parent=root, shutdown_timeout=4.0,
                spawn=_no_spawn, report_events=False, retirements=retirements)
    root.running.append(made)
    return made, root


async def test_a_cell_starts_runs_stops_and_exits(
    autojump_clock: trio.testing.MockClock,
) -> None:
    ready = trio.Event()
    async with trio.open_nursery() as nursery:
        slow, root = cell(nursery, Slow(ready))
        assert slow.state is Lifecycle.STARTING
        assert slow.address is None  # (until it is ready)
        started = trio.Event()

        async def start() -> None:
            await nursery.start(slow.run)
            started.set()

        nursery.start_soon(start)
        await trio.testing.wait_all_tasks_blocked()
        assert slow.state is Lifecycle.STARTING  # its setup waits
        ready.set()
        await started.wait()
        assert slow.state is Lifecycle.RUNNING
        assert slow.address == slow.mailbox.address
        assert await slow.ref.ask(Go()) == Go()
        await slow.ref.tell(Stop())
        await slow.done.wait()
    assert slow.state is Lifecycle.EXITED
    assert ended(slow).kind == "normal"
    assert root.running == []


async def test_a_cell_stopped_during_its_setup_never_opens_its_mailbox(
    autojump_clock: trio.testing.MockClock,
) -> None:
    ready = trio.Event()
    async with trio.open_nursery() as nursery:
        slow, _ = cell(nursery, Slow(ready))
        nursery.start_soon(slow.run)
        await trio.testing.wait_all_tasks_blocked()
        slow.stop("asked")
        assert slow.state is Lifecycle.STOPPING
        ready.set()
        await slow.done.wait()
    assert not slow.mailbox.accepting
    assert ended(slow).kind == "shutdown"


async def test_a_cell_asked_to_shut_down_exits_as_shutdown(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trio.open_nursery() as nursery:
        slow, _ = cell(nursery, Slow())
        await nursery.start(slow.run)
        await slow.ref.tell(Stop())  # (it stops itself too, but the parent asked)
        await slow.shutdown(1.0)
    assert ended(slow).kind == "shutdown"


async def test_a_crashed_cell_with_a_successor_to_wait_for_retires_until_relieved(
    autojump_clock: trio.testing.MockClock,
) -> None:
    retirements, retired = trio.open_memory_channel[Retirement](2)
    async with trio.open_nursery() as nursery:
        slow, _ = cell(nursery, Slow(), retirements)
        await nursery.start(slow.run)
        with pytest.raises(Exception, match="asked to crash"):
            await slow.ref.ask(Crash())
        retirement = await retired.receive()
        assert isinstance(retirement.failure, RuntimeError)
        await trio.sleep(1.0)
        assert slow.state is Lifecycle.RETIRING  # drained: it waits for its successor
        assert not slow.done.is_set()
        slow.relieve()
        await slow.done.wait()
    assert ended(slow).kind == "crashed"


async def test_a_cell_that_asks_for_a_successor_serves_on_until_relieved(
    autojump_clock: trio.testing.MockClock,
) -> None:
    retirements, retired = trio.open_memory_channel[Retirement](2)
    async with trio.open_nursery() as nursery:
        slow, _ = cell(nursery, Slow(), retirements)
        await nursery.start(slow.run)
        await slow.ref.tell(Replace())
        retirement = await retired.receive()
        assert (retirement.reason, retirement.failure) == ("asked by the test", None)
        assert slow.state is Lifecycle.RETIRING
        assert await slow.ref.ask(Go()) == Go()  # it still serves
        slow.relieve()
        await slow.done.wait()
    assert ended(slow).kind == "normal"
    with pytest.raises(trio.EndOfChannel):  # the cell closed it as it ended
        await retired.receive()


class Stuck(Actor):
    async def drain(self) -> None:
        await trio.sleep(math.inf)


async def test_a_cell_whose_drain_overstays_its_shutdown_is_killed(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trio.open_nursery() as nursery:
        stuck, _ = cell(nursery, Stuck())
        await nursery.start(stuck.run)
        await stuck.shutdown(1.0)
    assert (ended(stuck).kind, ended(stuck).detail) == ("killed", "did not stop within 4.0 s")


class Plain(Actor):
    """No setup of its own: ready as soon as it exists."""

    @handler
    async def go(self, msg: Go) -> Go:
        return msg


async def test_a_cell_without_setup_is_ready_before_its_task_runs(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trio.open_nursery() as nursery:
        plain, root = cell(nursery, Plain())
        ref = plain.start_at_once(nursery)
        assert (plain.state, plain.address) == (Lifecycle.RUNNING, plain.mailbox.address)
        assert ref == plain.ref
        assert plain.mailbox.accepting
        assert await ref.ask(Go()) == Go()  # served once its task runs
        stopped, _ = cell(nursery, Plain())
        stopped.start_at_once(nursery)
        stopped.stop("asked")  # before its task ever ran: it still ends, once
        await stopped.done.wait()
        await plain.shutdown(1.0)
    assert ended(plain).kind == "shutdown"
    assert ended(stopped).kind == "shutdown"
    assert root.running == []


async def test_a_cell_with_a_setup_is_not_started_at_once() -> None:
    async with trio.open_nursery() as nursery:
        slow, _ = cell(nursery, Slow())
        with pytest.raises(RuntimeError, match="setup"):
            slow.start_at_once(nursery)
        nursery.cancel_scope.cancel()


class Steps(trio.abc.Instrument):
    """Records, in order, the steps of the tasks that serve actors."""

    def __init__(self, log: list[str]) -> None:
        self.log = log

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        if task.name.endswith("Cell.run"):
            self.log.append("actor's task ran")


async def test_spawn_of_an_actor_without_setup_does_not_wait_for_its_task() -> None:
    # nursery.start costs several scheduling passes per spawn: an actor with nothing to set
    # up is ready as it exists, so spawn returns before its task first runs.
    log: list[str] = []
    async with open_system(name=f"at-once-{os.getpid()}") as system:
        trio.lowlevel.add_instrument(Steps(log))
        ref = await system.spawn(Plain)
        log.append("spawn returned")
        assert await ref.ask(Go()) == Go()
    assert log[:2] == ["spawn returned", "actor's task ran"]


async def test_an_events_subscriber_keeps_up_with_a_burst_of_spawns() -> None:
    # Each spawn publishes two events; a subscriber reading one a scheduling pass must not
    # fall 1024 behind (and be let go) while a loop spawns actors ready at once.
    spawns = 1500
    async with open_system(name=f"burst-{os.getpid()}") as system:
        seen: list[Event] = []
        events = system.events()

        async def follow() -> None:
            async for event in events:
                seen.append(event)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(follow)
            for _ in range(spawns):
                await system.spawn(Plain)
            await trio.testing.wait_all_tasks_blocked()
            nursery.cancel_scope.cancel()
        events.close()
    assert len(seen) == 2 * spawns


async def test_an_idle_actor_holds_few_objects_for_the_collector() -> None:
    # Each object the cyclic collector tracks is walked by every full collection: with
    # ~60 per idle actor, collections were most of the time of spawning 10 000 of them.
    # (Its task and mailbox alone, in trio, are ~30.)
    count = 500
    async with open_system(name=f"footprint-{os.getpid()}") as system:
        await system.spawn(Plain)  # first-use costs are not counted
        gc.collect()
        before = len(gc.get_objects())
        refs = [await system.spawn(Plain) for _ in range(count)]
        gc.collect()
        per_actor = (len(gc.get_objects()) - before) / count
        assert await refs[-1].ask(Go()) == Go()
    assert per_actor <= 28  # (52 with a trio memory channel as its mailbox and a nursery)
