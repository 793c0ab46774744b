"""Shared state on every backend (memory, SQLite, a real Redis), through the public API,
in the master and in worker processes."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import trio
import trio.testing

from actors import (
    Actor,
    ActorExited,
    ActorRef,
    Event,
    InvalidKey,
    InvalidStoredValue,
    StateChanged,
    StateResynced,
    handler,
    open_system,
)
from protocol import FrameTooLarge, Message
from tests.leaks import workers
from tests.redis_server import RedisServer, unique_prefix
from tests.waiting import TIMEOUT, eventually


@pytest.fixture(params=["memory", "sqlite", "redis"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> str | None:
    if request.param == "memory":
        return None
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'state.db'}"
    server: RedisServer = request.getfixturevalue("redis")
    return f"{server.url}?prefix={unique_prefix()}"


class AppConfig(Message):
    workers: int
    greeting: str


class Counter(Message):
    value: int


class Other(Message):
    text: str


class Get(Message):
    key: str


class Got(Message):
    greeting: str | None = None
    version: int = 0


class Put(Message):
    key: str
    greeting: str


class Written(Message):
    version: int


class Increment(Message):
    key: str
    times: int


class Done(Message):
    retries: int
    stale: int  # retries made at the very version that had just lost


class Watch(Message):
    prefix: str
    count: int


class Seen(Message):
    changes: list[str]


class StateUser(Actor):
    """Uses ctx.state from wherever it runs."""

    @handler
    async def get(self, msg: Get) -> Got:
        entry = await self.ctx.state.entry(msg.key, AppConfig)
        return Got() if entry is None else Got(greeting=entry.value.greeting,
                                              version=entry.version)

    @handler
    async def put(self, msg: Put) -> Written:
        version = await self.ctx.state.put(msg.key, AppConfig(workers=1, greeting=msg.greeting))
        entry = await self.ctx.state.entry(msg.key, AppConfig)  # read-your-writes
        assert entry is not None
        assert entry.version >= version
        assert entry.value.greeting == msg.greeting or entry.version > version
        return Written(version=version)

    @handler
    async def increment(self, msg: Increment) -> Done:
        state = self.ctx.state
        retries = stale = 0
        for _ in range(msg.times):
            lost = -1
            while True:
                entry = await state.entry(msg.key, Counter)
                current = 0 if entry is None else entry.value.value
                version = 0 if entry is None else entry.version
                stale += version == lost
                if await state.compare_and_set(msg.key, Counter(value=current + 1),
                                               version=version) is not None:
                    break
                retries += 1
                lost = version
        return Done(retries=retries, stale=stale)

    @handler
    async def watch(self, msg: Watch) -> Seen:
        seen: list[str] = []
        async with self.ctx.state.watch(msg.prefix) as changes:
            await self.ctx.ref_to("test").tell(Other(text="watching"))
            async for change in changes:
                assert isinstance(change, StateChanged)
                value = change.value
                text = value.greeting if isinstance(value, AppConfig) else "-"
                seen.append(f"{change.key}@{change.version}={text}")
                if len(seen) == msg.count:
                    return Seen(changes=seen)
        return Seen(changes=seen)


class Signal(Actor):
    """The test's own mailbox: workers tell it when they are ready."""

    def __init__(self, arrived: trio.Event) -> None:
        self.arrived = arrived

    @handler
    async def other(self, msg: Other) -> None:
        self.arrived.set()


async def test_put_get_entry_and_versions(store: str | None) -> None:
    with trio.fail_after(TIMEOUT):
        async with open_system(store=store) as system:
            state = system.state
            assert await state.get("config/app", AppConfig) is None
            v1 = await state.put("config/app", AppConfig(workers=4, greeting="hi"))
            assert await state.get("config/app", AppConfig) == AppConfig(workers=4, greeting="hi")
            v2 = await state.put("config/app", AppConfig(workers=8, greeting="ho"))
            entry = await state.entry("config/app", AppConfig)
            assert entry is not None
            assert (entry.value.workers, entry.version) == (8, v2)
            assert v2 > v1
            deleted = await state.delete("config/app")
            assert deleted is not None
            assert deleted > v2
            assert await state.get("config/app", AppConfig) is None
            assert await state.delete("config/app") is None  # nothing to delete
            v4 = await state.put("config/app", AppConfig(workers=1, greeting="again"))
            assert v4 > deleted  # versions go on increasing across deletes


async def test_reads_of_a_held_key_can_be_cancelled_and_let_others_run() -> None:
    # A key read before is served without IPC and without a full checkpoint per read:
    # every read must still be a cancellation point, and a loop of them let others run.
    with trio.fail_after(TIMEOUT):
        async with open_system() as system:
            state = system.state
            await state.put("hot", Counter(value=1))
            assert await state.get("hot", Counter) == Counter(value=1)  # held from now on
            turns = 0

            async def other() -> None:
                nonlocal turns
                while True:
                    turns += 1
                    await trio.lowlevel.checkpoint()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(other)
                for _ in range(1000):
                    assert await state.get("hot", Counter) == Counter(value=1)
                assert turns >= 10
                nursery.cancel_scope.cancel()
            for read in (state.get, state.entry):
                with trio.CancelScope() as scope:
                    scope.cancel()
                    await read("hot", Counter)
                    raise AssertionError("a cancelled read returned")
                assert scope.cancelled_caught


async def test_compare_and_set(store: str | None) -> None:
    with trio.fail_after(TIMEOUT):
        async with open_system(store=store) as system:
            state = system.state
            first = await state.compare_and_set("c", Counter(value=1), version=0)
            assert first is not None
            assert await state.compare_and_set("c", Counter(value=9), version=0) is None
            assert await state.compare_and_set("c", Counter(value=2), version=first + 7) is None
            second = await state.compare_and_set("c", Counter(value=2), version=first)
            assert second is not None
            assert await state.get("c", Counter) == Counter(value=2)
            gone = await state.delete("c")
            assert gone is not None
            assert await state.compare_and_set("c", Counter(value=3), version=gone) is None
            assert await state.compare_and_set("c", Counter(value=3), version=0) is not None


async def test_values_are_typed_and_keys_checked(store: str | None) -> None:
    with trio.fail_after(TIMEOUT):
        async with open_system(store=store, max_frame_size=64 * 1024) as system:
            state = system.state
            await state.put("k", Other(text="not a config"))
            with pytest.raises(InvalidStoredValue, match="'k' is a Other, not a AppConfig"):
                await state.get("k", AppConfig)
            assert await state.get("k", Other) == Other(text="not a config")
            for bad in ("", "has space", "x" * 600, "tab\t", "ü"):
                with pytest.raises(InvalidKey):
                    await state.put(bad, Other(text="x"))
            with pytest.raises(FrameTooLarge):
                await state.put("big", Other(text="x" * 100_000))
            assert await state.get("big", Other) is None


async def test_workers_read_their_writes_and_see_the_masters(store: str | None) -> None:
    with trio.fail_after(TIMEOUT):
        async with open_system(store=store) as system:
            user = await system.spawn(StateUser, name="user", process=True)
            assert await user.ask(Get(key="config/app")) == Got()
            written = await user.ask(Put(key="config/app", greeting="from a worker"))
            assert isinstance(written, Written)
            entry = await system.state.entry("config/app", AppConfig)
            assert entry is not None
            assert entry.value.greeting == "from a worker"
            version = await system.state.put("config/app", AppConfig(workers=2, greeting="m"))
            await system.state.sync()
            # Pushed to the worker's replica: it sees the new value without asking anyone.
            async def pushed() -> bool:
                return await user.ask(Get(key="config/app")) == Got(greeting="m",
                                                                       version=version)

            await eventually(pushed)


async def test_watchers_see_every_change_in_order(store: str | None) -> None:
    with trio.fail_after(TIMEOUT):
        async with open_system(store=store) as system:
            arrived = trio.Event()
            await system.spawn(Signal, name="test", arrived=arrived)
            watcher = await system.spawn(StateUser, name="watcher", process=True)
            results: list[Message | None] = []

            async def watch_in_worker() -> None:
                results.append(await watcher.ask(Watch(prefix="config/", count=6)))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(watch_in_worker)
                await arrived.wait()
                async with system.state.watch("config/") as here:
                    expected = []
                    for i in range(3):
                        for key in ("config/a", "config/b"):
                            version = await system.state.put(
                                key, AppConfig(workers=i, greeting=f"g{i}")
                            )
                            expected.append(f"{key}@{version}=g{i}")
                    await system.state.put("other/x", AppConfig(workers=0, greeting="no"))
                    seen_here = []
                    async for change in here:
                        assert isinstance(change, StateChanged)
                        assert isinstance(change.value, AppConfig)
                        seen_here.append(f"{change.key}@{change.version}={change.value.greeting}")
                        if len(seen_here) == 6:
                            break
            assert seen_here == expected
            assert results == [Seen(changes=expected)]


async def test_a_watcher_that_falls_behind_is_resynced(store: str | None) -> None:
    with trio.fail_after(TIMEOUT):
        async with open_system(store=store) as system:
            state = system.state
            async with state.watch("n/") as changes:
                for i in range(1100):  # more than a watcher may hold; it does not read
                    await state.put(f"n/{i % 3}", Counter(value=i))
                first = await changes.__anext__()
                assert first == StateResynced(prefix="n/")
                after = [await changes.__anext__() for _ in range(3)]
                assert [c.key for c in after if isinstance(c, StateChanged)] == [
                    "n/0", "n/1", "n/2"
                ]
                assert {c.value for c in after if isinstance(c, StateChanged)} == {
                    Counter(value=1097), Counter(value=1098), Counter(value=1099)
                }


async def test_concurrent_increments_lose_nothing(store: str | None) -> None:
    with trio.fail_after(TIMEOUT):
        async with open_system(store=store) as system:
            users = [await system.spawn(StateUser, name=f"u{i}", process=True)
                     for i in range(4)]
            done: list[Done] = []

            async def increment(user: ActorRef) -> None:
                done.append(await user.ask(Increment(key="counter", times=500), Done))

            async with trio.open_nursery() as nursery:
                for user in users:
                    nursery.start_soon(increment, user)
            assert await system.state.get("counter", Counter) == Counter(value=2000)
            # A compare_and_set that lost brings back what it lost to: the retry never
            # tries the losing version again (waiting for the push to bring it).
            assert [d.stale for d in done] == [0, 0, 0, 0]


async def test_a_killed_worker_leaves_no_subscription(store: str | None) -> None:
    import signal

    with trio.fail_after(TIMEOUT):
        async with open_system(store=store) as system:
            user = await system.spawn(StateUser, name="user", process=True)
            await user.ask(Get(key="config/app"))
            service = system._starter.state._upstream._service  # type: ignore[union-attr]
            assert len(service._remote) == 1
            pid = next(iter(workers()))
            os.kill(pid, signal.SIGKILL)
            await system.state.put("config/app", AppConfig(workers=1, greeting="after"))
            async def forgotten() -> bool:
                await trio.testing.wait_all_tasks_blocked()
                return service._remote == {}

            await eventually(forgotten)


# -- promises kept under an operator's bad day (each of these failed once) ---------------------


class StopNow(Message):
    pass


class SpawnAndStop(Message):
    """Ask a StateUser to start an in-process child and wait for it to stop."""


class SyncThenGet(Message):
    key: str


class Temporary(Actor):
    """An actor that stops when told to (a helper that ends)."""

    @handler
    async def stop_now(self, msg: StopNow) -> None:
        self.ctx.stop()


class SubscribedUser(StateUser):
    @handler
    async def spawn_and_stop(self, msg: SpawnAndStop) -> None:
        child = await self.ctx.spawn(Temporary, name="temporary")
        await child.tell(StopNow())

    @handler
    async def sync_then_get(self, msg: SyncThenGet) -> Got:
        await self.ctx.state.sync()
        return await self.get(Get(key=msg.key))


async def _exited(events: trio.MemoryReceiveChannel[Event], path: str) -> None:
    async for event in events:
        if isinstance(event, ActorExited) and event.path == path:
            return


async def test_an_actor_ending_anywhere_leaves_every_replica_subscribed(
    store: str | None,
) -> None:
    # An in-process actor ending in the master (node "0") or inside a worker (node "0.N")
    # once made the service forget the worker's subscriptions: its replica went stale for
    # good, and sync() did not repair it.
    with trio.fail_after(TIMEOUT):
        async with open_system(store=store) as system:
            events = system.events()
            user = await system.spawn(SubscribedUser, name="user", process=True)
            v1 = await system.state.put("config/app", AppConfig(workers=1, greeting="one"))
            assert await user.ask(Get(key="config/app")) == Got(greeting="one", version=v1)
            helper = await system.spawn(Temporary, name="helper")
            await helper.tell(StopNow())
            await _exited(events, "helper")
            await user.ask(SpawnAndStop())
            await _exited(events, "user/temporary")
            await trio.testing.wait_all_tasks_blocked()
            v2 = await system.state.put("config/app", AppConfig(workers=1, greeting="two"))
            assert await user.ask(SyncThenGet(key="config/app")) == Got(greeting="two",
                                                                        version=v2)

            async def pushed() -> bool:
                return await user.ask(Get(key="config/app")) == Got(greeting="three",
                                                                    version=v2 + 1)

            await system.state.put("config/app", AppConfig(workers=1, greeting="three"))
            await eventually(pushed)


async def test_sync_repairs_a_lost_subscription(store: str | None) -> None:
    # Whatever made the service forget a process's subscriptions, sync() brings them back:
    # the replica is current afterwards, and pushes reach it again.
    with trio.fail_after(TIMEOUT):
        async with open_system(store=store) as system:
            user = await system.spawn(SubscribedUser, name="user", process=True)
            await system.state.put("config/app", AppConfig(workers=1, greeting="one"))
            await user.ask(Get(key="config/app"))
            service = system._starter.state._upstream._service  # type: ignore[union-attr]
            service._remote.clear()  # lost, as a bug once lost them
            v2 = await system.state.put("config/app", AppConfig(workers=1, greeting="two"))
            assert await user.ask(SyncThenGet(key="config/app")) == Got(greeting="two",
                                                                        version=v2)
            v3 = await system.state.put("config/app", AppConfig(workers=1, greeting="three"))

            async def pushed() -> bool:
                return await user.ask(Get(key="config/app")) == Got(greeting="three",
                                                                    version=v3)

            await eventually(pushed)


class Block(Message):
    seconds: float


class Report(Message):
    pass


class Watched(Message):
    values: list[int]
    resynced: int


class BusyWatcher(Actor):
    """Watches a prefix in the background; its event loop can be blocked on demand."""

    def __init__(self) -> None:
        self.values: list[int] = []
        self.resynced = 0
        self.watching = trio.Event()

    @handler
    async def watch(self, msg: Watch) -> None:
        self.ctx.start_soon(self._watch, msg.prefix)
        await self.watching.wait()

    async def _watch(self, prefix: str) -> None:
        async with self.ctx.state.watch(prefix) as changes:
            self.watching.set()
            async for change in changes:
                if isinstance(change, StateResynced):
                    self.resynced += 1
                elif isinstance(change.value, Blob):
                    self.values.append(change.value.n)

    @handler
    async def block(self, msg: Block) -> None:
        import time

        time.sleep(msg.seconds)  # noqa: ASYNC251  (the whole process stops: pushes pile up)

    @handler
    async def report(self, msg: Report) -> Watched:
        return Watched(values=self.values, resynced=self.resynced)


class Blob(Message):
    n: int
    data: str


async def test_pushes_to_a_busy_worker_are_split_to_fit_the_frame_limit(
    store: str | None,
) -> None:
    # Puts far under the frame limit, to a prefix a busy worker watches, once made one
    # batch frame of everything queued: FrameTooLarge ended the whole system.
    limit = 1024 * 1024
    with trio.fail_after(TIMEOUT):
        async with open_system(store=store, max_frame_size=limit) as system:
            watcher = await system.spawn(BusyWatcher, name="watcher", process=True)
            await watcher.ask(Watch(prefix="big/", count=0))
            await watcher.tell(Block(seconds=1.0))
            for n in range(24):
                await system.state.put("big/blob", Blob(n=n, data="x" * (limit // 4)))

            async def all_seen() -> bool:
                report = await watcher.ask(Report(), Watched)
                return bool(report.values) and report.values[-1] == 23

            await eventually(all_seen)
            report = await watcher.ask(Report(), Watched)
            # Every change in order, or a resync (one per fall-behind) then the rest.
            assert report.values == sorted(report.values)
            assert report.resynced or report.values == list(range(24))


class WatchAll(Message):
    prefix: str


class Keys(Message):
    keys: list[str]


class LargeReader(Actor):
    @handler
    async def watch_all(self, msg: WatchAll) -> Keys:
        async with self.ctx.state.watch(msg.prefix):
            pass
        await self.ctx.state.sync()
        keys = []
        for n in range(40):
            blob = await self.ctx.state.get(f"{msg.prefix}{n}", Blob)
            if blob is not None and blob.n == n:
                keys.append(f"{msg.prefix}{n}")
        return Keys(keys=keys)


async def test_a_replica_larger_than_a_frame_can_watch_and_sync(store: str | None) -> None:
    # 40 values each well under the limit, together over it: the answer to a watch (and to a
    # sync) once had to fit in one frame, so such a worker could never watch or sync.
    limit = 1024 * 1024
    with trio.fail_after(TIMEOUT):
        async with open_system(store=store, max_frame_size=limit) as system:
            for n in range(40):
                await system.state.put(f"many/{n}", Blob(n=n, data="y" * (limit // 16)))
            reader = await system.spawn(LargeReader, name="reader", process=True)
            found = await reader.ask(WatchAll(prefix="many/"), Keys)
            assert found.keys == [f"many/{n}" for n in range(40)]


class WriteAndWatch(Message):
    key: str
    times: int
    total: int


class Versions(Message):
    versions: list[int]
    resynced: bool


class WritingWatcher(Actor):
    @handler
    async def write_and_watch(self, msg: WriteAndWatch) -> Versions:
        versions: list[int] = []
        resynced = False
        state = self.ctx.state
        async with state.watch(msg.key) as changes, trio.open_nursery() as nursery:
            async def write() -> None:
                for i in range(msg.times):
                    await state.put(msg.key, Counter(value=i))

            nursery.start_soon(write)
            async for change in changes:
                if isinstance(change, StateResynced):
                    resynced = True
                    continue
                versions.append(change.version)
                if change.version >= msg.total:
                    break
        return Versions(versions=versions, resynced=resynced)


async def test_a_watcher_that_writes_misses_no_other_writers_version(store: str | None) -> None:
    # A write's own answer (applied at once, for read-your-writes) once overtook the push of
    # an earlier change by another writer, which the replica then dropped as older: the
    # watcher silently missed it.
    times, writers = 150, 3
    with trio.fail_after(TIMEOUT):
        async with open_system(store=store) as system:
            users = [await system.spawn(WritingWatcher, name=f"w{i}", process=True)
                     for i in range(writers)]
            results: list[Versions] = []

            async def run(user: ActorRef) -> None:
                results.append(await user.ask(
                    WriteAndWatch(key="shared/n", times=times, total=times * writers),
                    Versions,
                ))

            async with trio.open_nursery() as nursery:
                for user in users:
                    nursery.start_soon(run, user)
    for result in results:
        assert not result.resynced
        first = result.versions[0]
        assert result.versions == list(range(first, times * writers + 1))


async def test_sqlite_urls_follow_sqlalchemys_rule(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # sqlite:///state.db once wrote /state.db, and sqlite:state.db a file of that name.
    monkeypatch.chdir(tmp_path)
    with trio.fail_after(TIMEOUT):
        async with open_system(store="sqlite:///relative.db", control=False) as system:
            await system.state.put("k", Other(text="relative"))
        assert (tmp_path / "relative.db").is_file()
        absolute = tmp_path / "elsewhere" / "state.db"
        absolute.parent.mkdir()
        async with open_system(store=f"sqlite:///{absolute}", control=False) as system:
            await system.state.put("k", Other(text="absolute"))  # four slashes: absolute
        assert absolute.is_file()
        for bad in ("sqlite:state.db", "sqlite://host/state.db", "sqlite://", "sqlite:///",
                    "sqlite:///:memory:", "sqlite:///dir/"):
            with pytest.raises(ValueError, match="sqlite:///"):
                async with open_system(store=bad, control=False):
                    raise AssertionError(f"{bad!r} was taken")
    assert not [name for name in os.listdir(tmp_path) if name.startswith("sqlite")]


async def test_store_configuration_errors_are_raised_as_themselves(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # They once came out of open_system wrapped in an ExceptionGroup.
    with trio.fail_after(TIMEOUT):
        with pytest.raises(ValueError, match="unknown store 'mongodb://h/x'"):
            async with open_system(store="mongodb://h/x", control=False):
                pass
        monkeypatch.setitem(sys.modules, "coredis", None)  # as if it were not installed
        with pytest.raises(ImportError, match=r"pip install 'trio-actors\[redis\]'"):
            async with open_system(store="redis://127.0.0.1:1/0", control=False):
                pass
