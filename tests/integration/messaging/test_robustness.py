"""The runtime under adversarial use: floods, restarts during sends, stalls, limits.

Each test here reproduces a way the runtime used to fail (a deadlock, a lost name, a
killed worker) and checks the behaviour that replaced it.
"""

from __future__ import annotations

import os
import signal
import time

import pytest
import trio
import trio.testing

from actors import (
    Actor,
    ActorExited,
    ActorGone,
    ActorReady,
    ActorRef,
    CallingSelf,
    RemoteError,
    SpawnError,
    handler,
    open_system,
    supervisor,
    worker,
)
from protocol import Message
from tests.events import next_event, received
from tests.leaks import is_fork_server, workers
from tests.processes import wait_exited
from tests.waiting import TIMEOUT, eventually


class Item(Message):
    n: int


class Flood(Message):
    target: ActorRef
    count: int


class Ping(Message):
    pass


class Pong(Message):
    pid: int


class Count(Message):
    pass


class Counted(Message):
    value: int


class Flooder(Actor):
    """Sends ``count`` tells to ``target`` from a background task; answers pings meanwhile."""

    @handler
    async def flood(self, msg: Flood) -> None:
        self.ctx.start_soon(self._flood, msg.target, msg.count)

    async def _flood(self, target: ActorRef, count: int) -> None:
        for i in range(count):
            await target.tell(Item(n=i))

    @handler
    async def ping(self, msg: Ping) -> Pong:
        return Pong(pid=os.getpid())


class Sink(Actor):
    """A small mailbox; on the first item it asks the flooder something, then counts."""

    mailbox_size = 4

    def __init__(self, flooder: str) -> None:
        self.flooder = flooder
        self.count = 0

    @handler
    async def item(self, msg: Item) -> None:
        if msg.n == 0:
            await self.ctx.ref_to(self.flooder).ask(Ping(), Pong)
        assert msg.n == self.count  # in order, none lost
        self.count += 1

    @handler
    async def counted(self, msg: Count) -> Counted:
        return Counted(value=self.count)


async def wait_count(ref: ActorRef, value: int) -> None:
    async def reached() -> bool:
        return (await ref.ask(Count(), Counted)).value >= value

    await eventually(reached)


@pytest.mark.parametrize("sink_in_process", [True, False])
async def test_a_reply_never_waits_behind_tells_to_a_full_mailbox(sink_in_process: bool) -> None:
    # The flooder's tells fill the sink's mailbox; the sink then asks the flooder, whose
    # reply comes on the same channel as the tells. It used to sit behind them for good
    # (the reader blocked on the full mailbox), and leaving the system hung too.
    count = 2_000 if sink_in_process else 30_000  # between processes: past every buffer
    with trio.fail_after(TIMEOUT):
        async with open_system() as system:
            await system.spawn(Flooder, name="flooder", process=True)
            sink = await system.spawn(Sink, name="sink", process=not sink_in_process,
                                      flooder="flooder")
            await system.ref("flooder").tell(Flood(target=sink, count=count))
            await wait_count(sink, count)


class Silent(Actor):
    """Takes asks and never answers them (``asked`` is set at the first)."""

    def __init__(self, asked: trio.Event | None = None) -> None:
        self.asked = asked

    @handler
    async def ping(self, msg: Ping) -> Pong:
        if self.asked is not None:
            self.asked.set()
        await trio.sleep_forever()
        raise AssertionError("unreachable")


async def test_leaving_the_system_mid_flood_is_bounded() -> None:
    with trio.fail_after(TIMEOUT):
        async with open_system() as system:
            asked = trio.Event()
            await system.spawn(Flooder, name="flooder", process=True)
            await system.spawn(Silent, name="silent", shutdown=0.5, asked=asked)
            sink = await system.spawn(Sink, name="sink", flooder="silent")
            await system.ref("flooder").tell(Flood(target=sink, count=100_000))
            await asked.wait()  # the flood is under way, the sink stuck on its first item
            await trio.testing.wait_all_tasks_blocked()  # and its mailbox filled up
        assert not workers()


class Asker(Actor):
    @handler
    async def ping(self, msg: Ping) -> Pong:
        return await self.ctx.ref.ask(Ping(), Pong)  # itself: it would wait forever

    @handler
    async def ping_by_path(self, msg: Count) -> Pong:
        return await self.ctx.ref_to(self.ctx.path).ask(Ping(), Pong)


@pytest.mark.parametrize("process", [False, True])
async def test_an_actor_asking_itself_fails_at_once(process: bool) -> None:
    with trio.fail_after(TIMEOUT):
        async with open_system() as system:
            for i, question in enumerate([Ping(), Count()]):  # by address, then by path
                asker = await system.spawn(Asker, name=f"asker{i}", process=process)
                with pytest.raises(RemoteError, match="asked itself") as info:
                    await asker.ask(question)
                assert info.value.type_name == "actors.CallingSelf"  # a crash, at once
    assert issubclass(CallingSelf, Exception)


class Starting(Actor):
    async def setup(self) -> None:
        await trio.sleep(2)

    @handler
    async def ping(self, msg: Ping) -> Pong:
        return Pong(pid=os.getpid())


async def test_a_cancelled_process_spawn_cleans_up_and_frees_the_name() -> None:
    with trio.fail_after(TIMEOUT):
        async with open_system() as system:
            with trio.move_on_after(0.5) as scope:
                await system.spawn(Starting, name="s", process=True)
            assert scope.cancelled_caught
            assert not workers()  # the worker it had started is gone
            assert "s" not in system.names()
            again = await system.spawn(Starting, name="s", process=True)  # the natural retry
            assert (await again.ask(Ping(), Pong)).pid != os.getpid()


async def test_two_spawns_of_one_name_at_once_give_one_actor() -> None:
    with trio.fail_after(TIMEOUT):
        async with open_system() as system:
            results: list[object] = []

            async def spawn() -> None:
                try:
                    results.append(await system.spawn(Starting, name="s", process=True))
                except SpawnError as exc:
                    results.append(exc)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(spawn)
                nursery.start_soon(spawn)
            refs = [r for r in results if isinstance(r, ActorRef)]
            errors = [r for r in results if isinstance(r, SpawnError)]
            assert len(refs) == 1
            assert len(errors) == 1
            assert "'s' is already taken" in str(errors[0])
            assert await refs[0].ask(Ping(), Pong)
            assert len(workers()) == 1


class Parent(Actor):
    """Spawns a named child in setup; crashes when asked (the suicide signal)."""

    async def setup(self) -> None:
        await self.ctx.spawn(Pinger, name="helper")

    @handler
    async def crash(self, msg: Item) -> None:
        raise RuntimeError("crash")

    async def drain(self) -> None:
        await trio.sleep(0.5)  # the old incarnation lingers while the new one starts


class Pinger(Actor):
    @handler
    async def ping(self, msg: Ping) -> Pong:
        return Pong(pid=os.getpid())


async def test_names_of_a_replaced_workers_children_follow_the_new_incarnation() -> None:
    tree = supervisor("root", children=[worker(Parent, name="p", process=True)])
    with trio.fail_after(TIMEOUT):
        async with open_system(tree) as system:
            events = system.events()
            old = (await system.ref("root/p/helper").ask(Ping(), Pong)).pid
            with pytest.raises(RemoteError):
                await system.ref("root/p").ask(Item(n=0))
            await next_event(events, ActorReady, "root/p")
            exited = await next_event(events, ActorExited, "root/p")
            assert exited.pid == old  # the old incarnation is gone now
            await trio.testing.wait_all_tasks_blocked()
            new = (await system.ref("root/p/helper").ask(Ping(), Pong)).pid
            assert new != old


class SlowStop(Actor):
    async def cleanup(self) -> None:
        await trio.sleep(0.3)

    @handler
    async def ping(self, msg: Ping) -> Pong:
        return Pong(pid=os.getpid())


@pytest.mark.parametrize("process", [False, True])
async def test_sends_by_path_during_sibling_restarts_wait_for_the_successor(
    process: bool,
) -> None:
    # one_for_all: crashing one child stops and restarts the others (slow cleanups), while
    # asks by path keep going to all of them. None may fail.
    tree = supervisor("root", strategy="one_for_all", max_restarts=50, within=60.0, children=[
        worker(SlowStop, name=name, process=process) for name in ("a", "b")
    ] + [worker(Flaky, name="flaky", process=process)])
    with trio.fail_after(TIMEOUT):
        async with open_system(tree) as system:
            failures: list[BaseException] = []
            answered = 0
            wanted = 0
            got_them = trio.Event()
            done = trio.Event()

            async def keep_asking(path: str) -> None:
                nonlocal answered
                while not done.is_set():
                    try:
                        await system.ref(path).ask(Ping(), Pong)
                        answered += 1
                        if answered >= wanted:
                            got_them.set()
                    except Exception as exc:  # what the test is about: none may fail
                        failures.append(exc)
                        await trio.sleep(0.01)  # (a failing send may fail at once)

            async def answers(more: int) -> None:
                nonlocal wanted, got_them
                wanted, got_them = answered + more, trio.Event()
                await got_them.wait()

            async with trio.open_nursery() as nursery:
                for path in ("root/a", "root/b"):
                    nursery.start_soon(keep_asking, path)
                for _ in range(4):
                    await answers(6)  # asks are going to the children of the moment
                    with pytest.raises(RemoteError):
                        await system.ref("root/flaky").ask(Item(n=0))
                await answers(6)  # and to their successors, once restarted
                done.set()
            assert failures == []
            assert answered > 10


class Flaky(Actor):
    @handler
    async def crash(self, msg: Item) -> None:
        raise RuntimeError("crash")


class StopYourself(Message):
    pass


class Stoppable(Actor):
    @handler
    async def ping(self, msg: Ping) -> Pong:
        return Pong(pid=os.getpid())

    @handler
    async def stop_yourself(self, msg: StopYourself) -> None:
        self.ctx.stop()


async def test_a_temporary_child_of_the_tree_that_ended_can_be_added_again() -> None:
    spec = worker(Stoppable, name="w", restart="temporary")
    with trio.fail_after(TIMEOUT):
        async with open_system(supervisor("root", children=[spec])) as system:
            events = system.events()
            await system.ref("root/w").tell(StopYourself())
            await next_event(events, ActorExited, "root/w")
            await trio.testing.wait_all_tasks_blocked()  # its supervisor has seen it go
            ref = await system.spawn(spec)  # it used to be "already has a child named 'w'"
            assert await ref.ask(Ping(), Pong)


class Nested(Actor):
    """A worker with a tree of four ready descendants."""

    async def setup(self) -> None:
        await self.ctx.spawn(Pinger, name="a")
        b = await self.ctx.spawn(Parentless, name="b")
        await b.ask(Ping(), Pong)

    @handler
    async def ping(self, msg: Ping) -> Pong:
        return Pong(pid=os.getpid())


class Parentless(Actor):
    async def setup(self) -> None:
        await self.ctx.spawn(Pinger, name="c")
        await self.ctx.spawn(Pinger, name="d", process=True)

    @handler
    async def ping(self, msg: Ping) -> Pong:
        return Pong(pid=os.getpid())


async def test_descendants_of_a_killed_worker_get_their_exit_events() -> None:
    with trio.fail_after(TIMEOUT):
        async with open_system() as system:
            events = system.events()
            nested = await system.spawn(Nested, name="n", process=True)
            pid = (await nested.ask(Ping(), Pong)).pid
            descendants = {"n/a", "n/b", "n/b/c", "n/b/d"}
            assert descendants <= set(system.names())
            os.kill(pid, signal.SIGKILL)
            exits: dict[str, ActorExited] = {}
            async for event in events:
                if isinstance(event, ActorExited):
                    exits[event.path] = event
                    if event.path == "n":
                        break
            # d's own process may report its exit itself (it dies with its channel)
            assert descendants <= set(exits) | {"n/b/d"}
            for path in descendants & set(exits):
                assert exits[path].reason.kind in ("killed", "shutdown", "normal"), path
            await trio.testing.wait_all_tasks_blocked()
            assert not descendants & set(system.names())


class Big(Message):
    data: str


class Echoer(Actor):
    @handler
    async def echo(self, msg: Big) -> Big:
        return msg

    @handler
    async def grow(self, msg: Item) -> Big:
        return Big(data="x" * msg.n)

    @handler
    async def ping(self, msg: Ping) -> Pong:
        return Pong(pid=os.getpid())


async def test_every_process_uses_the_systems_frame_limit() -> None:
    limit = 32 * 1024 * 1024
    with trio.fail_after(TIMEOUT):
        async with open_system(max_frame_size=limit) as system:
            echoer = await system.spawn(Echoer, name="e", process=True)
            big = Big(data="y" * (20 * 1024 * 1024))
            assert await echoer.ask(big) == big
            assert await echoer.ask(Ping(), Pong)


async def test_a_reply_over_the_limit_is_a_typed_error_and_the_actor_lives() -> None:
    with trio.fail_after(TIMEOUT):
        async with open_system(max_frame_size=1024 * 1024) as system:
            echoer = await system.spawn(Echoer, name="e", process=True)
            with pytest.raises(RemoteError) as info:
                await echoer.ask(Item(n=2 * 1024 * 1024))
            assert info.value.type_name == "protocol.FrameTooLarge"
            assert await echoer.ask(Ping(), Pong)  # alive and well


async def test_a_frame_at_the_limit_sent_by_path_fails_alone() -> None:
    # The master resolves a path to a longer route: the frame it would forward is over the
    # limit. That one send fails; the receiving worker lives.
    limit = 64 * 1024
    with trio.fail_after(TIMEOUT):
        async with open_system(max_frame_size=limit) as system:
            await system.spawn(Echoer, name="e", process=True)
            relay = await system.spawn(PathRelay, name="r", process=True)
            sizes = await relay.ask(Probe(path="e", limit=limit))
            assert isinstance(sizes, Probed)
            assert sizes.failed == "protocol.FrameTooLarge"
            assert await system.ref("e").ask(Ping(), Pong)


class Probe(Message):
    path: str
    limit: int


class Probed(Message):
    failed: str


class PathRelay(Actor):
    @handler
    async def probe(self, msg: Probe) -> Probed:
        # A Big whose frame to "0/@e" is exactly at the limit.
        route = f"0/@{msg.path}|{self.ctx.node}"
        overhead = len(Big.message_tag) + len(route) + len('{"data":""}')
        big = Big(data="z" * (msg.limit - overhead))
        try:
            await self.ctx.ref_to(msg.path).ask(big)
        except RemoteError as exc:
            return Probed(failed=exc.type_name)
        return Probed(failed="")


class Member(Actor):
    @handler
    async def ping(self, msg: Ping) -> Pong:
        return Pong(pid=os.getpid())


async def test_a_stalled_master_does_not_get_healthy_workers_killed() -> None:
    tree = supervisor("root", children=[
        worker(Member, name=str(i), process=True, heartbeat_timeout=1.0) for i in range(4)
    ])
    with trio.fail_after(TIMEOUT):
        async with open_system(tree) as system:
            events = system.events()
            for _ in range(3):
                time.sleep(1.5)  # noqa: ASYNC251 (the point: the master's loop stalls)
                await trio.sleep(0.6)
            exits = [e for e in received(events) if isinstance(e, ActorExited)]
            assert exits == []


async def test_killing_the_fork_server_keeps_workers_and_restarts_it() -> None:
    tree = supervisor("root", max_restarts=3, children=[
        worker(Member, name="m", process=True),
    ])
    with trio.fail_after(TIMEOUT):
        async with open_system(tree) as system:
            events = system.events()
            pid = (await system.ref("root/m").ask(Ping(), Pong)).pid
            server = _fork_server()
            os.kill(server, signal.SIGKILL)
            await wait_exited(server)
            assert (await system.ref("root/m").ask(Ping(), Pong)).pid == pid  # still serving
            os.kill(pid, signal.SIGKILL)  # its restart works (cold, or from a new server)
            await next_event(events, ActorReady, "root/m")
            assert (await system.ref("root/m").ask(Ping(), Pong)).pid != pid
            assert [e for e in received(events) if isinstance(e, ActorExited)
                    and e.path == "root"] == []


def _fork_server() -> int:
    me = os.getpid()
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as stat:
                ppid = int(stat.read().rsplit(")", 1)[1].split()[1])
        except OSError:
            continue
        if ppid == me and is_fork_server(int(pid)):
            return int(pid)
    raise AssertionError("no fork server")


@pytest.mark.parametrize("process", [False, True])
async def test_gone_errors_name_the_actor_and_why(process: bool) -> None:
    with trio.fail_after(TIMEOUT):
        async with open_system() as system:
            events = system.events()
            flaky = await system.spawn(Flaky, name="flaky", process=process)
            with pytest.raises(RemoteError):
                await flaky.ask(Item(n=0))
            await next_event(events, ActorExited, "flaky")
            with pytest.raises(ActorGone, match="flaky"):
                await flaky.ask(Item(n=1))


class Hangs(Actor):
    @handler
    async def ping(self, msg: Ping) -> Pong:
        await trio.sleep_forever()
        raise AssertionError("unreachable")


class AsksOnward(Actor):
    @handler
    async def ping(self, msg: Ping) -> Pong:
        return await self.ctx.ref_to("hangs").ask(Ping(), Pong)


async def test_an_ask_cut_short_by_the_shutdown_is_not_a_crash(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with trio.fail_after(TIMEOUT):
        async with open_system() as system:
            events = system.events()
            asker = await system.spawn(AsksOnward, name="asker")
            await system.spawn(Hangs, name="hangs", shutdown=0.2)  # stops first, killed
            system.nursery.start_soon(asker.tell, Ping())
            await trio.testing.wait_all_tasks_blocked()
        exits = {e.path: e.reason.kind for e in received(events) if isinstance(e, ActorExited)}
    assert exits == {"hangs": "killed", "asker": "shutdown"}
    assert "crashed" not in caplog.text
    assert "Traceback" not in caplog.text


async def test_a_subscriber_that_never_reads_is_let_go_with_one_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with trio.fail_after(TIMEOUT):
        async with open_system() as system:
            forgotten = system.events()  # never read
            for i in range(600):  # three events each: far past the 1024 it may hold
                ref = await system.spawn(Pinger, name=f"p{i}")
                await system.ref(f"p{i}").tell(Ping())
                del ref
            await system.stop()
            held = received(forgotten)
    assert len(held) == 1024
    assert caplog.text.count("fell 1024 events behind") == 1
