"""Shared state when things go wrong, and across masters: a killed master (SQLite),
two masters on one Redis (and on two network namespaces), Redis going away, bad data."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from actors import (
    Actor,
    InvalidStoredValue,
    StateChanged,
    StateResynced,
    StoreDisconnected,
    StoreInUse,
    StoreReconnected,
    StoreReset,
    StoreUnavailable,
    handler,
    open_system,
)
from protocol import Message
from tests.events import next_event
from tests.integration.state.state_master import Counter, Text
from tests.processes import wait_exited
from tests.redis_server import RedisServer, require_redis_server, unique_prefix
from tests.repository import ROOT
from tests.waiting import TIMEOUT, eventually


def master(store: str, *arguments: str, prefix: list[str] | None = None
           ) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*(prefix or []), sys.executable, "-m", "tests.integration.state.state_master",
         "--store", store, *arguments],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def lines_until(process: subprocess.Popen[str], last: str) -> list[str]:
    """Its output lines up to (and with) the first that starts with ``last``."""
    assert process.stdout is not None
    found = []
    for line in process.stdout:
        found.append(line.strip())
        if line.startswith(last):
            return found
    assert process.stderr is not None
    raise AssertionError(f"ended before {last!r}: {found} {process.stderr.read()}")


def finish(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        process.kill()
    process.communicate(timeout=TIMEOUT)


async def test_a_killed_master_loses_no_acknowledged_write_with_sqlite(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'state.db'}"
    writer = master(store, "write", "--count", "100000")
    try:
        acked: dict[str, int] = {}
        assert writer.stdout is not None

        def read_some() -> None:
            for line in writer.stdout:  # type: ignore[union-attr]
                _, key, version = line.split()
                acked[key] = int(version)
                if len(acked) >= 150:
                    writer.send_signal(signal.SIGKILL)  # in the middle of writing
                    return

        await trio.to_thread.run_sync(read_some)
        await trio.to_thread.run_sync(writer.wait)
        for line in writer.stdout:  # what it acknowledged before it died
            if line.startswith("acked"):
                _, key, version = line.split()
                acked[key] = int(version)
    finally:
        finish(writer)
    with trio.fail_after(TIMEOUT):
        async with open_system(store=store) as system:
            for key, version in acked.items():
                entry = await system.state.entry(key, Counter)
                assert entry is not None, key
                assert entry.version == version
                assert entry.value == Counter(value=int(key[1:]))


async def test_two_masters_on_one_redis_see_each_others_writes(own_redis: RedisServer
                                                               ) -> None:
    store = f"{own_redis.url}?prefix={unique_prefix()}"
    watcher = master(store, "watch", "--workers", "2", "--key", "config/greeting",
                     "--value", "hello from A")
    try:
        assert await trio.to_thread.run_sync(lines_until, watcher, "ready") == ["ready"]
        writer = master(store, "put", "--key", "config/greeting", "--value", "hello from A")
        try:
            assert await trio.to_thread.run_sync(lines_until, writer, "put") == ["put"]
        finally:
            finish(writer)

        def two_seen() -> list[str]:
            return [lines_until(watcher, "seen")[-1], lines_until(watcher, "seen")[-1]]

        seen = await trio.to_thread.run_sync(two_seen)
        assert len({line.split()[1] for line in seen}) == 2  # two different workers
        assert all(line.endswith("hello from A") for line in seen)
    finally:
        finish(watcher)


def _netns_usable() -> str:
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "iproute2 (ip) is not installed"
    probe = subprocess.run(["ip", "netns", "add", "trio-actors-probe"], capture_output=True,
                           check=False)
    if probe.returncode != 0:
        return f"ip netns does not work here: {probe.stderr.decode().strip()}"
    subprocess.run(["ip", "netns", "delete", "trio-actors-probe"], check=False)
    return ""


@pytest.fixture
def two_hosts() -> Iterator[tuple[str, str]]:
    """Two network namespaces joined by a veth pair: 10.77.0.1 and 10.77.0.2."""
    why = _netns_usable()
    if why:
        pytest.skip(why)
    tag = f"{os.getpid() % 100000}"
    one, two = f"ta{tag}a", f"ta{tag}b"
    commands = [
        ["ip", "netns", "add", one], ["ip", "netns", "add", two],
        ["ip", "link", "add", f"v{tag}a", "type", "veth", "peer", "name", f"v{tag}b"],
        ["ip", "link", "set", f"v{tag}a", "netns", one],
        ["ip", "link", "set", f"v{tag}b", "netns", two],
        ["ip", "-n", one, "addr", "add", "10.77.0.1/24", "dev", f"v{tag}a"],
        ["ip", "-n", two, "addr", "add", "10.77.0.2/24", "dev", f"v{tag}b"],
        ["ip", "-n", one, "link", "set", f"v{tag}a", "up"],
        ["ip", "-n", two, "link", "set", f"v{tag}b", "up"],
        ["ip", "-n", one, "link", "set", "lo", "up"],
        ["ip", "-n", two, "link", "set", "lo", "up"],
    ]
    try:
        for command in commands:
            subprocess.run(command, check=True, capture_output=True)
        yield one, two
    finally:
        subprocess.run(["ip", "netns", "delete", one], check=False, capture_output=True)
        subprocess.run(["ip", "netns", "delete", two], check=False, capture_output=True)


async def test_two_masters_in_two_network_namespaces(
    two_hosts: tuple[str, str], tmp_path: Path
) -> None:
    require_redis_server()
    one, two = two_hosts
    server = RedisServer(tmp_path, host="10.77.0.1", port=6380)
    server.start(wrap=["ip", "netns", "exec", one])
    try:
        store = f"{server.url}?prefix={unique_prefix()}"
        watcher = master(store, "watch", "--workers", "2", "--key", "k", "--value", "across",
                         prefix=["ip", "netns", "exec", two])
        try:
            assert await trio.to_thread.run_sync(lines_until, watcher, "ready") == ["ready"]
            writer = master(store, "put", "--key", "k", "--value", "across",
                            prefix=["ip", "netns", "exec", one])
            try:
                await trio.to_thread.run_sync(lines_until, writer, "put")
            finally:
                finish(writer)
            seen = [await trio.to_thread.run_sync(lines_until, watcher, "seen")
                    for _ in range(2)]
            assert all(lines[-1].endswith("across") for lines in seen)
        finally:
            finish(watcher)
    finally:
        server.stop()


async def test_redis_going_away_fails_writes_promptly_and_resyncs_on_return(
    own_redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.CRITICAL, logger="actors")  # the outage is expected here
    store = f"{own_redis.url}?prefix={unique_prefix()}"
    with trio.fail_after(TIMEOUT):
        async with open_system(store=store, store_timeout=1.0) as system:
            events = system.events()
            state = system.state
            acked = {}
            for i in range(20):
                acked[f"k{i}"] = await state.put(f"k{i}", Counter(value=i))
            async with state.watch("k") as changes:
                own_redis.stop()
                await next_event(events, StoreDisconnected, "state")
                started = trio.current_time()
                with pytest.raises(StoreUnavailable):
                    await state.put("k0", Counter(value=-1))
                assert trio.current_time() - started < 2.0  # bounded by store_timeout
                # Reads come from the replica meanwhile.
                assert await state.get("k3", Counter) == Counter(value=3)
                own_redis.start()
                await next_event(events, StoreReconnected, "state")
                assert await changes.__anext__() == StateResynced(prefix="k")
                resynced = [await changes.__anext__() for _ in range(20)]
                assert {c.key for c in resynced if isinstance(c, StateChanged)} == set(acked)
            # Nothing acknowledged was lost; writing works again.
            for key, version in acked.items():
                entry = await state.entry(key, Counter)
                assert entry is not None
                assert entry.version == version
            assert await state.put("k0", Counter(value=100)) == acked["k0"] + 1


async def test_bad_data_fails_its_key_only(own_redis: RedisServer,
                                           caplog: pytest.LogCaptureFixture) -> None:
    import coredis

    prefix = unique_prefix()
    store = f"{own_redis.url}?prefix={prefix}"
    with trio.fail_after(TIMEOUT):
        async with open_system(store=store) as system:
            state = system.state
            await state.put("good", Text(text="fine"))
            async with coredis.Redis.from_url(own_redis.url) as other:  # another program
                await other.hset(f"{prefix}:state:bad", {"v": "3", "t": Text.message_tag,
                                                        "b": b'{"text": 12}'})
                await other.hset(f"{prefix}:state:alien", {"v": "1", "t": "no:Such",
                                                          "b": b"{}"})
                await other.publish(f"{prefix}:state-changes", b"\x00garbled")
            with pytest.raises(InvalidStoredValue, match="'bad'"):
                await state.get("bad", Text)
            with pytest.raises(InvalidStoredValue, match="'alien'"):
                await state.get("alien", Text)
            assert await state.get("good", Text) == Text(text="fine")
            await state.put("good", Text(text="still fine"))
            assert await state.get("good", Text) == Text(text="still fine")
    assert "garbled change notice" in caplog.text


async def test_a_master_that_is_killed_leaves_no_worker(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'state.db'}"
    watcher = master(store, "watch", "--workers", "2", "--key", "k", "--value", "x")
    try:
        await trio.to_thread.run_sync(lines_until, watcher, "ready")
        watcher.send_signal(signal.SIGKILL)
        with trio.fail_after(10):
            await wait_exited(watcher.pid)
    finally:
        finish(watcher)


class Read(Message):
    key: str


class Seen(Message):
    text: str | None
    version: int


class Reader(Actor):
    """Reads (and syncs first, when asked to) from its process's replica."""

    @handler
    async def read(self, msg: Read) -> Seen:
        await self.ctx.state.sync()
        entry = await self.ctx.state.entry(msg.key, Text)
        return Seen(text=None if entry is None else entry.value.text,
                    version=0 if entry is None else entry.version)


async def _redis_command(server: RedisServer, *words: str) -> bytes:
    stream = await trio.open_tcp_stream(server.host, server.port)
    async with stream:
        command = f"*{len(words)}\r\n" + "".join(f"${len(w)}\r\n{w}\r\n" for w in words)
        await stream.send_all(command.encode())
        return await stream.receive_some(1024)


@pytest.mark.parametrize("how", ["restarted without persistence", "FLUSHDB"])
async def test_redis_that_lost_its_data_is_noticed_and_every_replica_starts_over(
    tmp_path: Path, how: str, caplog: pytest.LogCaptureFixture
) -> None:
    # Versions restart at 1 in a Redis that lost its data: the runtime once kept its higher
    # cached versions, so an acknowledged put read back as the old value everywhere.
    require_redis_server()
    caplog.set_level(logging.CRITICAL, logger="actors")  # the outage is expected here
    server = RedisServer(tmp_path, durable=False)
    server.start()
    try:
        store = f"{server.url}?prefix={unique_prefix()}"
        with trio.fail_after(TIMEOUT):
            async with open_system(store=store, store_timeout=1.0) as system:
                events = system.events()
                state = system.state
                reader = await system.spawn(Reader, name="reader", process=True)
                for n in range(3):
                    await state.put("k", Text(text=f"old {n}"))
                assert await reader.ask(Read(key="k")) == Seen(text="old 2", version=3)
                async with state.watch("k") as changes:
                    if how == "FLUSHDB":  # emptied while up: the next write finds out
                        assert await _redis_command(server, "FLUSHDB") == b"+OK\r\n"
                        version = await state.put("k", Text(text="new"))
                        reset = await next_event(events, StoreReset, "state")
                    else:  # back empty: found out when it is back
                        server.stop()
                        await next_event(events, StoreDisconnected, "state")
                        server.start()
                        reset = await next_event(events, StoreReset, "state")
                        await next_event(events, StoreReconnected, "state")
                        version = await state.put("k", Text(text="new"))
                    assert "epoch" in reset.detail
                    assert version == 1  # what the store says: it starts again
                    assert await state.get("k", Text) == Text(text="new")
                    assert await reader.ask(Read(key="k")) == Seen(text="new", version=1)
                    assert await changes.__anext__() == StateResynced(prefix="k")
                    current = await changes.__anext__()
                    assert isinstance(current, StateChanged)
                    assert (current.key, current.value) == ("k", Text(text="new"))
            # A second system on that Redis reads the same.
            async with open_system(store=store, control=False) as other:
                entry = await other.state.entry("k", Text)
                assert entry is not None
                assert (entry.value, entry.version) == (Text(text="new"), 1)
    finally:
        server.stop()


async def test_a_second_system_on_one_sqlite_file_is_refused(tmp_path: Path) -> None:
    # Two systems on one file once both ran, each serving what it once read.
    store = f"sqlite:///{tmp_path / 'state.db'}"
    with trio.fail_after(TIMEOUT):
        async with open_system(store=store, control=False) as first:
            await first.state.put("k", Text(text="first"))
            with pytest.raises(StoreInUse, match="in use by another system"):
                async with open_system(store=store, control=False):
                    raise AssertionError("a second system opened the same SQLite file")
            assert await first.state.get("k", Text) == Text(text="first")
        # Another process holding it (a master of its own), then letting it go.
        holder = master(store, "watch", "--workers", "1", "--key", "k", "--value", "never")
        try:
            await trio.to_thread.run_sync(lines_until, holder, "ready")
            with pytest.raises(StoreInUse):
                async with open_system(store=store, control=False):
                    pass
        finally:
            finish(holder)
        async with open_system(store=store, control=False) as again:
            assert await again.state.get("k", Text) == Text(text="first")


async def test_a_sqlite_write_waiting_for_a_lock_gives_up_at_store_timeout(
    tmp_path: Path,
) -> None:
    # A write waiting for SQLite's lock (another program writing the file) once ran out
    # sqlite3's own 5 s busy timeout, whatever store_timeout said, and could not be
    # cancelled.
    import sqlite3

    path = tmp_path / "state.db"
    store = f"sqlite:///{path}"
    with trio.fail_after(TIMEOUT):
        async with open_system(store=store, store_timeout=0.3, control=False) as system:
            await system.state.put("k", Text(text="before"))
            other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            try:
                other.execute("BEGIN EXCLUSIVE")  # another program holds the write lock
                with trio.fail_after(3.0):  # well under sqlite3's default busy timeout (5 s)
                    with pytest.raises(StoreUnavailable):
                        await system.state.put("k", Text(text="during"))
                with trio.CancelScope() as scope:
                    scope.cancel()
                    await system.state.put("k", Text(text="cancelled"))
                assert scope.cancelled_caught
            finally:
                other.execute("ROLLBACK")
                other.close()
            # Once the other program let go, writing works again (the abandoned write's
            # thread ends within the busy timeout, store_timeout).
            async def written() -> bool:
                try:
                    await system.state.put("k", Text(text="after"))
                except StoreUnavailable:
                    return False
                return True

            await eventually(written)
            assert await system.state.get("k", Text) == Text(text="after")
