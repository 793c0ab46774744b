"""Supervision trees with real worker processes."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
import trio
import trio.testing

from actors import (
    Actor,
    ActorExited,
    ActorReady,
    ActorStarted,
    ActorSuicided,
    Event,
    RemoteError,
    RestartLimitExceeded,
    handler,
    open_system,
    supervisor,
    worker,
)
from protocol import Message
from tests.events import next_event, received
from tests.leaks import descendants
from tests.processes import is_running, wait_exited
from tests.trees import three
from tests.waiting import TIMEOUT


class WhoAreYou(Message):
    pass


class Pid(Message):
    pid: int


class Crash(Message):
    pass


class Freeze(Message):
    pass


class Member(Actor):
    def __init__(self, journal: str = "") -> None:
        self.journal = journal

    async def setup(self) -> None:
        if self.journal:
            with open(self.journal, "a") as out:  # noqa: ASYNC230 (a line, in a test)
                out.write(f"start {os.getpid()}\n")

    @handler
    async def who(self, msg: WhoAreYou) -> Pid:
        return Pid(pid=os.getpid())

    @handler
    async def crash(self, msg: Crash) -> None:
        raise RuntimeError("asked to crash")

    @handler
    async def freeze(self, msg: Freeze) -> None:
        time.sleep(60)  # noqa: ASYNC251 (the point: block the loop, so no heartbeat goes out)


class FailsAtStart(Member):
    async def setup(self) -> None:
        await super().setup()
        raise RuntimeError("cannot start")


class SlowDrain(Member):
    """Takes a while to drain after a suicide, so that the order of events shows."""

    async def drain(self) -> None:
        await trio.sleep(1.0)


class IgnoresStop(Member):
    async def cleanup(self) -> None:
        with trio.CancelScope(shield=True):
            await trio.sleep_forever()  # until killed


class Grow(Message):
    megabytes: int


class Recycle(Message):
    pass


class Lingers(IgnoresStop):
    """Goes on after it is replaced: a handler that never returns (after growing past
    its max_memory, or asking for its replacement), or a cleanup that never returns
    (after a crash)."""

    def __init__(self) -> None:
        super().__init__()
        self.kept: list[bytes] = []

    @handler
    async def grow(self, msg: Grow) -> None:
        self.kept.append(b"x" * (msg.megabytes * 2**20))  # written: resident
        await trio.sleep_forever()

    @handler
    async def recycle(self, msg: Recycle) -> None:
        self.ctx.request_replacement("asked by the test")
        await trio.sleep_forever()


async def pids(system, names=("a", "b", "c")) -> dict[str, int]:  # type: ignore[no-untyped-def]
    return {name: (await system.ref(f"root/{name}").ask(WhoAreYou(), Pid)).pid for name in names}


async def ready_pid(events: trio.MemoryReceiveChannel[Event], path: str) -> int:
    pid = (await next_event(events, ActorReady, path)).pid
    assert pid is not None
    return pid


@pytest.mark.parametrize(
    ("strategy", "restarted"),
    [("one_for_one", {"b"}), ("one_for_all", {"a", "b", "c"}), ("rest_for_one", {"b", "c"})],
)
async def test_sigkill_restarts_per_strategy(strategy: str, restarted: set[str]) -> None:
    with trio.fail_after(TIMEOUT):
        async with open_system(three(Member, strategy, process=True, max_restarts=5,
                                     within=10.0)) as system:
            events = system.events()
            before = await pids(system)
            os.kill(before["b"], signal.SIGKILL)
            await ready_pid(events, "root/b")
            if strategy != "one_for_one":
                await ready_pid(events, "root/c")  # the last to start again
            after = await pids(system)
            changed = {name for name in before if before[name] != after[name]}
            assert changed == restarted


async def test_crash_at_start_gives_up_after_max_restarts_plus_one(tmp_path: Path) -> None:
    journal = tmp_path / "starts"
    tree = supervisor(
        "root", max_restarts=2, within=30.0,
        children=[worker(FailsAtStart, name="flaky", process=True, journal=str(journal))],
    )
    with trio.fail_after(TIMEOUT), pytest.raises(RestartLimitExceeded) as info:
        await _enter(tree)
    assert "cannot start" in str(info.value)
    assert len(journal.read_text().splitlines()) == 3  # the start and max_restarts restarts
    assert not descendants()


async def test_crashing_every_two_seconds_under_one_per_second_never_trips() -> None:
    tree = supervisor(
        "root", max_restarts=1, within=1.0, children=[worker(Member, name="m", process=True)],
    )
    with trio.fail_after(TIMEOUT):
        async with open_system(tree) as system:
            events = system.events()
            member = system.ref("root/m")
            for _ in range(3):
                await trio.sleep(2.0)
                with pytest.raises(RemoteError):
                    await member.ask(Crash())
                await ready_pid(events, "root/m")
            assert (await member.ask(WhoAreYou(), Pid)).pid


async def test_root_giving_up_ends_the_system_with_a_typed_error() -> None:
    tree = supervisor(
        "root", max_restarts=1, within=30.0, children=[worker(Member, name="m", process=True)],
    )
    with trio.fail_after(TIMEOUT), pytest.raises(RestartLimitExceeded, match="gave up"):
        await _kill_until_it_gives_up(tree)
    assert not descendants()


@pytest.mark.parametrize("member", [Member, SlowDrain])
async def test_suicide_replacement_ready_before_the_old_worker_exits(member: type[Actor]) -> None:
    tree = supervisor("root", children=[worker(member, name="w", process=True)])
    with trio.fail_after(TIMEOUT):
        async with open_system(tree) as system:
            events = system.events()
            old = (await system.ref("root/w").ask(WhoAreYou(), Pid)).pid
            with pytest.raises(RemoteError, match="asked to crash"):
                await system.ref("root/w").ask(Crash())
            order: list[str] = []
            new = 0
            async for event in events:
                if isinstance(event, ActorSuicided) and event.pid == old:
                    order.append("suicide")
                elif isinstance(event, ActorReady) and event.path == "root/w":
                    new = event.pid or 0
                    order.append("replacement ready")
                elif isinstance(event, ActorExited) and event.pid == old:
                    order.append("old exited")
                    assert event.reason.kind == "suicide"
                    break
            assert order == ["suicide", "replacement ready", "old exited"]
            assert new != old
            await trio.testing.wait_all_tasks_blocked()
            assert (await system.ref("root/w").ask(WhoAreYou(), Pid)).pid == new
            with system.events(history=True) as everything:
                starts = [e for e in received(everything)
                          if isinstance(e, ActorStarted) and e.path == "root/w"]
            assert len(starts) == 2  # no third start


async def test_worker_ignoring_stop_is_killed_at_its_shutdown_timeout() -> None:
    tree = supervisor(
        "root", children=[worker(IgnoresStop, name="w", process=True, shutdown=0.5)],
    )
    with trio.fail_after(TIMEOUT):
        async with open_system(tree) as system:
            events = system.events()
            pid = (await system.ref("root/w").ask(WhoAreYou(), Pid)).pid
            start = trio.current_time()
        elapsed = trio.current_time() - start
        exits = [e for e in received(events) if isinstance(e, ActorExited) and e.pid == pid]
    assert [e.reason.kind for e in exits] == ["killed"]
    assert "0.5" in exits[0].reason.detail
    assert exits[0].reason.signal == signal.SIGKILL
    assert elapsed < 30
    assert not descendants()


@pytest.mark.parametrize(("trigger", "kind"), [
    (Grow(megabytes=200), "memory"), (Crash(), "suicide"), (Recycle(), "recycled"),
], ids=["memory", "suicide", "recycled"])
async def test_a_replaced_worker_that_goes_on_is_killed_after_its_shutdown_time(
    trigger: Message, kind: str
) -> None:
    tree = supervisor("root", children=[
        worker(Lingers, name="w", process=True, max_memory=100 * 2**20, shutdown=1.0),
    ])
    with trio.fail_after(TIMEOUT):
        async with open_system(tree) as system:
            events = system.events()
            old = (await system.ref("root/w").ask(WhoAreYou(), Pid)).pid
            await system.ref("root/w").tell(trigger)
            new = await ready_pid(events, "root/w")
            assert new != old
            # Released once its successor is up, it has its shutdown time (1 s) to go;
            # then its process group is killed, the reason still why it was replaced.
            async for event in events:
                if isinstance(event, ActorExited) and event.pid == old:
                    assert event.reason.kind == kind
                    assert event.reason.signal == signal.SIGKILL
                    break
            assert not is_running(old)
            assert (await system.ref("root/w").ask(WhoAreYou(), Pid)).pid == new


async def test_unresponsive_worker_is_killed_and_restarted() -> None:
    tree = supervisor(
        "root", children=[worker(Member, name="w", process=True, heartbeat_timeout=1.0)],
    )
    with trio.fail_after(TIMEOUT):
        async with open_system(tree) as system:
            events = system.events()
            old = (await system.ref("root/w").ask(WhoAreYou(), Pid)).pid
            await system.ref("root/w").tell(Freeze())
            async for event in events:
                if isinstance(event, ActorExited) and event.pid == old:
                    assert event.reason.kind == "unresponsive"
                    break
            new = await ready_pid(events, "root/w")
            assert new != old


async def test_path_ref_follows_restarts_and_waits_while_restarting() -> None:
    tree = supervisor("root", children=[worker(Member, name="w", process=True)])
    with trio.fail_after(TIMEOUT):
        async with open_system(tree) as system:
            ref = system.ref("root/w")
            old = (await ref.ask(WhoAreYou(), Pid)).pid
            os.kill(old, signal.SIGKILL)
            await wait_exited(old)
            # Asked while the new worker is still starting: the ask waits for it.
            new = (await ref.ask(WhoAreYou(), Pid)).pid
            assert new != old


async def _kill_until_it_gives_up(tree: object) -> None:
    async with open_system(tree) as system:  # type: ignore[arg-type]
        while True:  # the second kill within the window exceeds max_restarts=1
            pid = (await system.ref("root/m").ask(WhoAreYou(), Pid)).pid
            os.kill(pid, signal.SIGKILL)
            await wait_exited(pid)


async def _enter(tree: object) -> None:
    async with open_system(tree):  # type: ignore[arg-type]
        pytest.fail("the tree cannot start")
