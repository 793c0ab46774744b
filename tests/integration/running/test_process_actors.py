"""Process actors end to end: real worker processes, real channels."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import trio

from actors import (
    Actor,
    ActorExited,
    ActorGone,
    ActorNotFound,
    ActorRef,
    InvalidArguments,
    RemoteError,
    SpawnError,
    handler,
    open_system,
)
from actors._running._processes import ForkedChild
from protocol import Message
from tests.events import next_event
from tests.leaks import child_processes, descendants, is_fork_server, workers
from tests.processes import is_running, wait_exited
from tests.waiting import TIMEOUT


class Add(Message):
    a: int
    b: int


class Total(Message):
    value: int


class Fail(Message):
    text: str


class WhoAreYou(Message):
    pass


class Identity(Message):
    pid: int
    path: str
    node: str


class Hang(Message):
    pass


class Handling(Message):
    pass


class HangAfterTelling(Message):
    witness: ActorRef


class Adder(Actor):
    def __init__(self, base: int = 0) -> None:
        self.base = base

    @handler
    async def add(self, msg: Add) -> Total:
        return Total(value=msg.a + msg.b + self.base)

    @handler
    async def fail(self, msg: Fail) -> None:
        raise KeyError(msg.text)

    @handler
    async def who(self, msg: WhoAreYou) -> Identity:
        return Identity(pid=os.getpid(), path=self.ctx.path, node=self.ctx.node)

    @handler
    async def hang(self, msg: Hang) -> None:
        await trio.sleep_forever()

    @handler
    async def hang_after_telling(self, msg: HangAfterTelling) -> None:
        await msg.witness.tell(Handling())
        await trio.sleep_forever()


class Witness(Actor):
    """Lets a test wait until a worker is in the middle of handling something."""

    def __init__(self, seen: trio.Event) -> None:
        self.seen = seen

    @handler
    async def handling(self, msg: Handling) -> None:
        self.seen.set()


class Forward(Message):
    target: ActorRef
    a: int
    b: int


class Relay(Actor):
    """Asks whatever actor it is sent, from its own process."""

    @handler
    async def forward(self, msg: Forward) -> Total:
        return await msg.target.ask(Add(a=msg.a, b=msg.b), Total)


class StartChildren(Message):
    process: bool


class Children(Message):
    child: ActorRef
    pid: int


class Parent(Actor):
    @handler
    async def start(self, msg: StartChildren) -> Children:
        child = await self.ctx.spawn(Adder, name="child", process=msg.process, base=100)
        ident = await child.ask(WhoAreYou(), Identity)
        return Children(child=child, pid=ident.pid)


class BadSetup(Actor):
    async def setup(self) -> None:
        raise RuntimeError("no database")


class Loose(Actor):
    def __init__(self, **options: object) -> None:
        self.options = options


class Stubborn(Adder):
    """Takes far longer to clean up than its shutdown timeout allows."""

    async def cleanup(self) -> None:
        with trio.CancelScope(shield=True):
            await trio.sleep_forever()  # until killed


@pytest.mark.parametrize("start_method", ["forkserver", "spawn"])
async def test_tell_and_ask_a_process_actor(start_method: str) -> None:
    with trio.fail_after(TIMEOUT):
        async with open_system(start_method=start_method) as system:  # type: ignore[arg-type]
            adder = await system.spawn(Adder, name="adder", process=True, base=10)
            assert await adder.ask(Add(a=1, b=2)) == Total(value=13)
            for i in range(100):
                await adder.tell(Add(a=i, b=i))
            ident = await adder.ask(WhoAreYou(), Identity)
            assert ident.pid != os.getpid()
            assert ident.path == "adder"
            assert ident.node != "0"
            with open(f"/proc/{ident.pid}/comm") as comm:  # noqa: ASYNC230 (procfs)
                assert comm.read().strip() == "adder"  # the worker is named after its actor
            assert await system.ref("adder").ask(Add(a=2, b=2), Total) == Total(value=14)


async def test_handler_error_reaches_asker_with_type_and_traceback() -> None:
    with trio.fail_after(TIMEOUT):
        async with open_system() as system:
            adder = await system.spawn(Adder, name="adder", process=True)
            with pytest.raises(RemoteError) as info:
                await adder.ask(Fail(text="boom"))
            assert info.value.type_name == "KeyError"
            assert "boom" in info.value.message
            assert "raise KeyError(msg.text)" in info.value.traceback
            # The crash ended the actor, and with it its worker: later asks fail promptly.
            with pytest.raises(ActorGone):
                await adder.ask(Add(a=1, b=1))


async def test_ask_fails_promptly_when_the_worker_is_killed_mid_question() -> None:
    with trio.fail_after(TIMEOUT):
        async with open_system() as system:
            events = system.events()
            handling = trio.Event()
            witness = await system.spawn(Witness, name="witness", seen=handling)
            adder = await system.spawn(Adder, name="adder", process=True)
            ident = await adder.ask(WhoAreYou(), Identity)

            async def kill_once_handling() -> None:
                await handling.wait()
                os.kill(ident.pid, signal.SIGKILL)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(kill_once_handling)
                with trio.fail_after(5), pytest.raises(ActorGone) as info:
                    await adder.ask(HangAfterTelling(witness=witness))
            assert info.value.in_doubt  # it was being handled: it may have done something
            with pytest.raises(ActorGone):
                await adder.tell(Add(a=1, b=1))
            exited = await next_event(events, ActorExited, "adder")
            # The exit status decides: a broken channel does not make it a crash.
            assert exited.reason.kind == "killed"
            assert exited.reason.signal == signal.SIGKILL


async def test_unknown_path_and_bad_arguments_start_nothing() -> None:
    with trio.fail_after(TIMEOUT):
        async with open_system() as system:
            before = set(workers())
            with pytest.raises(ActorNotFound):
                await system.ref("nobody").ask(Add(a=1, b=1))
            with pytest.raises(InvalidArguments, match="base"):
                await system.spawn(Adder, name="a", process=True, base="not a number")
            with pytest.raises(InvalidArguments, match="unexpected"):
                await system.spawn(Adder, name="b", process=True, unexpected=1)
            with pytest.raises(InvalidArguments, match="JSON"):
                await system.spawn(Loose, name="c", process=True, anything=object())
            assert set(workers()) == before


async def test_setup_failure_is_a_spawn_error_with_the_worker_traceback() -> None:
    with trio.fail_after(TIMEOUT):
        async with open_system() as system:
            before = set(workers())
            with pytest.raises(SpawnError, match="no database") as info:
                await system.spawn(BadSetup, name="bad", process=True)
            assert "RuntimeError" in str(info.value)
            assert set(workers()) == before
            assert "bad" not in system.names()


async def test_refs_travel_in_messages_between_workers() -> None:
    with trio.fail_after(TIMEOUT):
        async with open_system() as system:
            adder = await system.spawn(Adder, name="adder", process=True, base=1)
            relay = await system.spawn(Relay, name="relay", process=True)
            local = await system.spawn(Adder, name="local", base=1000)
            assert await relay.ask(Forward(target=adder, a=1, b=2), Total) == Total(value=4)
            assert await relay.ask(Forward(target=local, a=1, b=2), Total) == Total(value=1003)
            by_path = system.ref("adder")
            assert await relay.ask(Forward(target=by_path, a=5, b=5), Total) == Total(value=11)


async def test_actor_spawns_children_bounded_by_its_lifetime() -> None:
    with trio.fail_after(TIMEOUT):
        async with open_system() as system:
            parent = await system.spawn(Parent, name="parent", process=True)
            result = await parent.ask(StartChildren(process=True), Children)
            assert result.pid not in (os.getpid(),)
            assert await result.child.ask(Add(a=1, b=1), Total) == Total(value=102)
            assert await system.ref("parent/child").ask(Add(a=0, b=0), Total) == Total(value=100)
            await system.stop()
            with trio.fail_after(5):
                await wait_exited(result.pid)


async def test_in_process_parent_with_process_child() -> None:
    with trio.fail_after(TIMEOUT):
        async with open_system() as system:
            parent = await system.spawn(Parent, name="parent")
            result = await parent.ask(StartChildren(process=True), Children)
            assert result.pid != os.getpid()
            assert await result.child.ask(Add(a=1, b=1), Total) == Total(value=102)


async def test_worker_ignores_sigint_and_finishes_on_sigterm() -> None:
    with trio.fail_after(TIMEOUT):
        async with open_system() as system:
            adder = await system.spawn(Adder, name="adder", process=True)
            ident = await adder.ask(WhoAreYou(), Identity)
            os.kill(ident.pid, signal.SIGINT)
            assert await adder.ask(Add(a=1, b=1), Total) == Total(value=2)
            os.kill(ident.pid, signal.SIGTERM)
            await wait_exited(ident.pid)
            with pytest.raises(ActorGone):
                await adder.ask(Add(a=1, b=1))


async def test_leaving_the_system_kills_a_worker_that_will_not_stop() -> None:
    with trio.fail_after(TIMEOUT):
        async with open_system() as system:
            stubborn = await system.spawn(Stubborn, name="stubborn", process=True, shutdown=0.5)
            pid = (await stubborn.ask(WhoAreYou(), Identity)).pid
            assert pid in workers()
            start = trio.current_time()
        assert trio.current_time() - start < 10
        assert not descendants()


async def test_a_cancelled_system_block_still_reaps_its_workers() -> None:
    # The cancellation reaches every task of the system, the one that learns of forked
    # workers' exits included; the shutdown that follows must still see them go.
    pids = []
    with trio.fail_after(TIMEOUT):
        with trio.move_on_after(2) as scope:
            async with open_system() as system:
                for actor in (Stubborn, Adder):
                    ref = await system.spawn(actor, name=actor.__name__.lower(),
                                             process=True, shutdown=0.5)
                    pids.append((await ref.ask(WhoAreYou(), Identity)).pid)
                await trio.sleep_forever()
        assert scope.cancelled_caught
        assert not descendants()
    # Not merely gone from below us: gone. (The stubborn one, stuck in a shielded cleanup,
    # once outlived the test as an orphan of its fork server, closed too early.)
    assert not [pid for pid in pids if is_running(pid)]


def _fork_server_pid() -> int:
    for pid in child_processes():
        if is_fork_server(pid):
            return pid
    raise AssertionError("no fork server among this process's children")


async def test_a_fork_server_that_stops_answering_does_not_hang_the_shutdown() -> None:
    # A stopped fork server reports no worker's exit. Leaving the system must still end,
    # bounded (the waits involved are shielded: a hang here would defeat fail_after, so a
    # rescuer resumes the server after a while and the test fails if it had to).
    rescued = False

    async def rescue(server: int) -> None:
        nonlocal rescued
        await trio.sleep(25)
        rescued = True
        os.kill(server, signal.SIGCONT)

    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            async with open_system() as system:
                await system.spawn(Adder, name="adder", process=True, shutdown=0.5)
                server = _fork_server_pid()
                os.kill(server, signal.SIGSTOP)
                nursery.start_soon(rescue, server)
                started = trio.current_time()
            elapsed = trio.current_time() - started
            nursery.cancel_scope.cancel()
    assert not rescued
    assert elapsed < 20
    assert not descendants()


async def test_a_system_without_process_actors_starts_no_process() -> None:
    with trio.fail_after(TIMEOUT):
        async with open_system() as system:
            adder = await system.spawn(Adder, name="adder")
            assert await adder.ask(Add(a=1, b=1)) == Total(value=2)
            assert not descendants()  # no fork server until a worker is wanted
            await system.spawn(Adder, name="worker", process=True)
            assert len(descendants()) == 2  # the fork server and the worker


class FailsInTheBackground(Adder):
    async def setup(self) -> None:
        async def fail_soon() -> None:
            raise ValueError("background task failed")

        self.ctx.start_soon(fail_soon)
        await trio.sleep_forever()  # still in setup when the task fails


async def test_a_task_failing_during_a_workers_setup_is_a_failed_start() -> None:
    # It used to be taken for a suicide of a running actor: the worker exited 0, nothing
    # replaced it, and the start waited for a Ready that never came.
    with trio.fail_after(TIMEOUT):
        async with open_system() as system:
            events = system.events()
            with pytest.raises(SpawnError, match="background task failed"):
                await system.spawn(FailsInTheBackground, name="doomed", process=True)
            exited = await next_event(events, ActorExited, "doomed")
            assert exited.reason.kind == "crashed"
            assert exited.reason.error_type == "ValueError"
            assert not workers()


FORK_SERVER_SCRIPT = Path(__file__).with_name("fork_server_script.py")


def _fork_server_of(*args: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, str(FORK_SERVER_SCRIPT), *args], capture_output=True, text=True,
        timeout=TIMEOUT, check=True,
    )
    report: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    return report


def test_the_first_fork_server_is_a_fork_of_the_master() -> None:
    # A fresh interpreter imports everything before its first fork: the whole wait for a
    # system's first worker (~0.3 s). A fork of the master has it all already.
    report = _fork_server_of()
    assert report["server_parent"] == report["master"]
    assert report["server_cmdline"] == report["master_cmdline"]  # (no exec)
    # None of the master's fds (the rest are /dev/null, so that their numbers are never
    # reused): as many as a fresh server holds (stdio, its socket, what it waits on).
    fresh = _fork_server_of("--thread")

    def held(fds: list[str]) -> int:
        return len([target for target in fds if target != "/dev/null"])

    assert held(report["server_fds"]) == held(fresh["server_fds"])
    assert len(report["server_fds"]) > len(fresh["server_fds"])  # the placeholders


def test_a_master_with_a_thread_running_is_not_forked() -> None:
    # A fork copies the other threads' locks, not the threads: the server is then a fresh
    # interpreter.
    report = _fork_server_of("--thread")
    assert report["server_parent"] == report["master"]
    assert "actors._system._zygote" in report["server_cmdline"]


async def test_a_forked_child_is_watched_and_reaped_with_its_status() -> None:
    # (What the master sees of a fork server forked from it.)
    with trio.fail_after(TIMEOUT):
        pid = os.fork()
        if pid == 0:
            os._exit(3)  # (only async-signal-safe calls in the child of a threaded parent)
        assert await ForkedChild(pid).wait() == 3
        pid = os.fork()
        if pid == 0:
            signal.pause()
            os._exit(0)
        child = ForkedChild(pid)
        child.kill()
        assert await child.wait() == -signal.SIGKILL
        child.kill()  # (reaped: the pid is no longer its to signal)
    assert not child_processes()
