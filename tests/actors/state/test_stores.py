"""Each store on its own, in this process: the contract every store keeps (memory, SQLite on
a temporary file, Redis through a test double), then what each one adds (SQLite's file
lock and durability, Redis's changes, outages and epochs). The real redis-server is tested
in tests/integration/state/."""

from __future__ import annotations

import sys
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from contextlib import AbstractAsyncContextManager, aclosing, asynccontextmanager
from pathlib import Path

import pytest
import trio
import trio.testing

from actors import StoreInUse, StoreUnavailable
from actors._state._memory import MemoryStore
from actors._state._redis import RedisStore
from actors._state._sqlite import SqliteStore
from actors._state._store import (
    Disconnected,
    EpochChanged,
    Reconnected,
    Record,
    Reset,
    Store,
    StoreChange,
)
from actors._state._stores import check_store_url, open_store
from tests.actors.state.redis_double import FakeRedis
from tests.waiting import TIMEOUT

REDIS = "redis://127.0.0.1:6379/0?prefix=unit"
BODY = '{"text": "状态 \\"quoted\\""}'.encode()


def changes_of(store: Store) -> AbstractAsyncContextManager[AsyncIterator[StoreChange]]:
    """What ``store`` reports (an async generator, closed at the end of the block)."""
    changes = store.changes()
    assert isinstance(changes, AsyncGenerator)
    return aclosing(changes)


@pytest.fixture
def fake_redis(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeRedis]:
    with FakeRedis().installed(monkeypatch) as redis:
        yield redis


@pytest.fixture(params=["memory", "sqlite", "redis"])
async def store(
    request: pytest.FixtureRequest, tmp_path: Path, fake_redis: FakeRedis
) -> AsyncIterator[Store]:
    url = {
        "memory": None,
        "sqlite": f"sqlite:///{tmp_path / 'state.db'}",
        "redis": REDIS,
    }[request.param]
    with trio.fail_after(TIMEOUT):
        async with open_store(url, store_timeout=5.0) as opened:
            yield opened


# -- the contract ------------------------------------------------------------------------------


async def test_versions_count_up_per_key_and_across_deletes(store: Store) -> None:
    with trio.fail_after(TIMEOUT):
        assert await store.read("k") is None
        one = await store.write("k", "app:Text", BODY, expect=None)
        assert one == Record(key="k", version=1, tag="app:Text", body=BODY)
        assert await store.read("k") == one
        two = await store.write("k", "app:Text", b"{}", expect=None)
        assert two is not None
        assert two.version == 2
        gone = await store.write("k", "", None, expect=None)
        assert gone == Record(key="k", version=3, tag="", body=None)
        assert gone.deleted
        assert await store.read("k") == gone  # a tombstone keeps the version
        assert await store.write("k", "", None, expect=None) is None  # nothing to delete
        again = await store.write("k", "app:Text", BODY, expect=None)
        assert again is not None
        assert again.version == 4
        other = await store.write("other", "app:Text", BODY, expect=None)
        assert other is not None
        assert other.version == 1


async def test_a_conditional_write_needs_the_version_it_names(store: Store) -> None:
    with trio.fail_after(TIMEOUT):
        assert await store.write("k", "t", b"1", expect=1) is None  # no value yet
        first = await store.write("k", "t", b"1", expect=0)
        assert first is not None
        assert first.version == 1
        assert await store.write("k", "t", b"2", expect=0) is None  # it has a value now
        assert await store.write("k", "t", b"2", expect=2) is None
        second = await store.write("k", "t", b"2", expect=1)
        assert second is not None
        assert second.version == 2
        deleted = await store.write("k", "", None, expect=2)
        assert deleted is not None
        assert (deleted.version, deleted.deleted) == (3, True)
        assert await store.write("k", "t", b"3", expect=3) is None  # a deletion is no value
        back = await store.write("k", "t", b"3", expect=0)
        assert back is not None
        assert back.version == 4
        assert await store.read("k") == back


async def test_a_prefix_reads_every_key_under_it_and_no_other(store: Store) -> None:
    with trio.fail_after(TIMEOUT):
        for key in ["cfg/a", "cfg/b", "cfg", "cfgx/c", "other/cfg/d"]:
            await store.write(key, "t", b"1", expect=None)
        await store.write("cfg/b", "", None, expect=None)
        under = sorted(await store.read_prefix("cfg/"), key=lambda r: r.key)
        assert [(r.key, r.version, r.deleted) for r in under] == [
            ("cfg/a", 1, False), ("cfg/b", 2, True),
        ]
        assert {r.key for r in await store.read_prefix("cfg")} == {"cfg/a", "cfg/b", "cfg",
                                                                   "cfgx/c"}
        assert len(await store.read_prefix("")) == 5
        assert await store.read_prefix("none/") == []


async def test_a_store_that_lost_nothing_is_at_its_epoch(store: Store) -> None:
    with trio.fail_after(TIMEOUT):
        await store.check()
        await store.write("k", "t", b"1", expect=None)
        await store.check()
    assert store.shared is isinstance(store, RedisStore)  # others write only to Redis


# -- which store a URL names -----------------------------------------------------------------


@pytest.mark.parametrize(("url", "named"), [
    (None, ("memory", "")),
    ("memory", ("memory", "")),
    ("sqlite:///state.db", ("sqlite", "state.db")),
    ("sqlite:///data/state.db", ("sqlite", "data/state.db")),
    ("sqlite:////var/lib/app/state.db", ("sqlite", "/var/lib/app/state.db")),
    ("redis://127.0.0.1:6379/0", ("redis", "redis://127.0.0.1:6379/0")),
    ("rediss://cache:6380/1?prefix=app", ("redis", "rediss://cache:6380/1?prefix=app")),
])
def test_a_store_url_names_a_kind_and_where(url: str | None, named: tuple[str, str]) -> None:
    assert check_store_url(url) == named


@pytest.mark.parametrize(("url", "error", "says"), [
    ("sqlite://state.db", ValueError, "three slashes"),
    ("sqlite:///", ValueError, "needs a file"),
    ("sqlite:///data/", ValueError, "needs a file"),
    ("sqlite:///:memory:", ValueError, "needs a file"),
    ("sqlite:///state.db?mode=ro", ValueError, "needs a file"),
    ("redis:///0", ValueError, "needs a host"),
    ("postgres://db/state", ValueError, "unknown store"),
    (42, TypeError, "not int"),
])
def test_a_store_url_that_names_nothing_usable_says_why(
    url: object, error: type[Exception], says: str
) -> None:
    with pytest.raises(error, match=says):
        check_store_url(url)  # type: ignore[arg-type]


def test_a_redis_url_without_coredis_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "coredis", None)  # as if it were not installed
    with pytest.raises(ImportError, match=r"pip install 'trio-actors\[redis\]'"):
        check_store_url("redis://127.0.0.1:6379/0")


async def test_open_store_opens_the_kind_the_url_names(
    tmp_path: Path, fake_redis: FakeRedis
) -> None:
    with trio.fail_after(TIMEOUT):
        async with open_store(None, store_timeout=1.0) as memory:
            assert isinstance(memory, MemoryStore)
        async with open_store(f"sqlite:///{tmp_path / 'a.db'}", store_timeout=1.0) as sqlite:
            assert isinstance(sqlite, SqliteStore)
        async with open_store(REDIS, store_timeout=1.0) as redis:
            assert isinstance(redis, RedisStore)


# -- SQLite ------------------------------------------------------------------------------------


@asynccontextmanager
async def opened(path: Path) -> AsyncIterator[SqliteStore]:
    store = SqliteStore(str(path), timeout=1.0)
    await store.open()
    try:
        yield store
    finally:
        await store.close()


async def test_sqlite_keeps_every_acknowledged_write_across_a_reopening(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    with trio.fail_after(TIMEOUT):
        async with opened(path) as store:
            await store.write("k", "t", BODY, expect=None)
            await store.write("k", "", None, expect=None)
            await store.write("j", "t", b"2", expect=None)
        async with opened(path) as store:
            assert await store.read("j") == Record(key="j", version=1, tag="t", body=b"2")
            assert await store.read("k") == Record(key="k", version=2, tag="", body=None)
            again = await store.write("k", "t", BODY, expect=0)
            assert again is not None
            assert again.version == 3  # versions go on from where they were


async def test_sqlite_serves_one_system_at_a_time(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    with trio.fail_after(TIMEOUT):
        async with open_store(f"sqlite:///{path}", store_timeout=1.0) as first:
            await first.write("k", "t", b"1", expect=None)
            with pytest.raises(StoreInUse, match="in use by another system"):
                async with opened(path):
                    raise AssertionError("a second store opened a file in use")
            assert await first.read("k") is not None  # the refusal did not disturb it
        async with opened(path) as second:  # let go when the first one closed
            assert await second.read("k") is not None


async def test_sqlite_closed_or_unopenable_is_unavailable(tmp_path: Path) -> None:
    with trio.fail_after(TIMEOUT):
        async with opened(tmp_path / "state.db") as store:
            pass
        with pytest.raises(StoreUnavailable, match="closed"):
            await store.read("k")
        with pytest.raises(StoreUnavailable, match="cannot open"):
            async with opened(tmp_path / "no such directory" / "state.db"):
                pass
        not_sqlite = tmp_path / "notes.txt"
        not_sqlite.write_bytes(b"not a database, at any length " * 100)
        with pytest.raises(StoreUnavailable, match="cannot open"):
            async with opened(not_sqlite):
                pass
        not_sqlite.unlink()
        async with opened(not_sqlite) as store:  # that failure let go of the file's lock
            await store.write("k", "t", b"1", expect=None)


async def test_memory_and_sqlite_report_no_changes(tmp_path: Path) -> None:
    # Only this master writes there: its own writes are no news to it.
    with trio.fail_after(TIMEOUT):
        async with opened(tmp_path / "state.db") as sqlite:
            for store in (MemoryStore(), sqlite):
                async with changes_of(store) as changes:
                    await store.write("k", "t", b"1", expect=None)
                    with trio.move_on_after(0) as waited:
                        await anext(changes)
                    assert waited.cancelled_caught


# -- Redis (through the double) ----------------------------------------------------------------


@asynccontextmanager
async def redis_store(url: str = REDIS, *, check_every: float = 0.5) -> AsyncIterator[RedisStore]:
    async with RedisStore(url, timeout=1.0, check_every=check_every).running() as store:
        yield store


def test_a_redis_store_is_named_without_credentials_or_options() -> None:
    store = RedisStore("redis://app:secret@cache:6380/2?prefix=shop", timeout=1.0)
    assert store.name == "redis://cache:6380/2"
    assert "secret" not in store.name


async def test_redis_connects_with_the_url_less_its_prefix(fake_redis: FakeRedis) -> None:
    with trio.fail_after(TIMEOUT):
        async with redis_store("redis://app:secret@cache:6380/2?prefix=shop"):
            pass
    assert fake_redis.urls == ["redis://app:secret@cache:6380/2"]


async def test_redis_reports_every_write_in_order_whoever_made_it(
    fake_redis: FakeRedis, autojump_clock: trio.testing.MockClock
) -> None:
    with trio.fail_after(TIMEOUT):
        async with redis_store() as ours, redis_store() as theirs, \
                changes_of(ours) as changes:
            one = await theirs.write("k", "app:Text", BODY, expect=None)
            gone = await theirs.write("k", "", None, expect=None)
            mine = await ours.write("j", "app:Text", b"{}", expect=0)
            assert await anext(changes) == one
            assert await anext(changes) == gone
            assert await anext(changes) == mine
            assert await ours.read("k") == gone  # one Redis: both see the same


async def test_redis_stores_with_other_prefixes_share_nothing(
    fake_redis: FakeRedis, autojump_clock: trio.testing.MockClock
) -> None:
    with trio.fail_after(TIMEOUT):
        async with redis_store(REDIS) as ours, redis_store(REDIS + "x") as theirs, \
                changes_of(ours) as changes:
            await theirs.write("k", "t", b"1", expect=None)
            assert await ours.read("k") is None
            assert await ours.read_prefix("") == []
            mine = await ours.write("k", "t", b"2", expect=0)
            assert await anext(changes) == mine  # and nothing of theirs before it


async def test_redis_heartbeats_of_other_systems_are_not_changes(
    fake_redis: FakeRedis, autojump_clock: trio.testing.MockClock
) -> None:
    # Every system sharing a Redis (and a prefix) checks its subscription with a heartbeat
    # on the changes channel; another system's heartbeat is no garbled notice.
    with trio.fail_after(TIMEOUT):
        async with redis_store() as ours, redis_store(), changes_of(ours) as changes:
            await trio.sleep(5.0)  # ten heartbeats each
            mine = await ours.write("k", "t", b"1", expect=None)
            assert await anext(changes) == mine


async def test_redis_a_garbled_notice_brings_everything_up_to_date(
    fake_redis: FakeRedis, autojump_clock: trio.testing.MockClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    with trio.fail_after(TIMEOUT):
        async with redis_store() as store, changes_of(store) as changes:
            fake_redis.publish("unit:state-changes", b'{"k": "k"')
            assert await anext(changes) == Reconnected()  # nothing is known of what changed
    assert "a garbled change notice" in caplog.text


async def test_redis_an_outage_is_reported_once_and_the_return_too(
    fake_redis: FakeRedis, autojump_clock: trio.testing.MockClock
) -> None:
    check_every, timeout = 0.5, 1.0
    with trio.fail_after(TIMEOUT):
        async with redis_store(check_every=check_every) as store, \
                changes_of(store) as changes:
            before = await store.write("k", "t", b"1", expect=None)
            assert await anext(changes) == before
            fake_redis.up = False
            went = trio.current_time()
            down = await anext(changes)
            assert isinstance(down, Disconnected)
            assert "refused" in down.error
            assert trio.current_time() - went <= check_every + timeout  # noticed in time
            with pytest.raises(StoreUnavailable, match="unreachable"):
                await store.write("k", "t", b"2", expect=None)
            with pytest.raises(StoreUnavailable, match="unreachable"):
                await store.read("k")
            await trio.sleep(10 * check_every)  # tries again, and reports nothing more
            fake_redis.up = True
            assert await anext(changes) == Reconnected()
            after = await store.write("k", "t", b"2", expect=None)
            assert after is not None
            assert after.version == 2
            assert await anext(changes) == after


async def test_redis_that_lost_its_data_refuses_the_write_that_finds_out(
    fake_redis: FakeRedis, autojump_clock: trio.testing.MockClock
) -> None:
    with trio.fail_after(TIMEOUT):
        async with redis_store() as store, changes_of(store) as changes:
            written = await store.write("k", "t", b"1", expect=None)
            assert await anext(changes) == written
            fake_redis.flush()
            with pytest.raises(EpochChanged) as lost:
                await store.write("k", "t", b"2", expect=None)
            assert await store.read("k") is None  # nothing was written
            assert await anext(changes) == Reset(lost.value.epoch)
            await store.check()  # that epoch is known now
            fresh = await store.write("k", "t", b"2", expect=None)
            assert fresh is not None
            assert fresh.version == 1  # versions start again
            assert await anext(changes) == fresh


async def test_redis_that_lost_its_data_while_up_is_noticed_by_the_liveness_check(
    fake_redis: FakeRedis, autojump_clock: trio.testing.MockClock
) -> None:
    check_every, timeout = 0.5, 1.0
    with trio.fail_after(TIMEOUT):
        async with redis_store(check_every=check_every) as store, \
                changes_of(store) as changes:
            fake_redis.flush()
            flushed = trio.current_time()
            reset = await anext(changes)
            assert isinstance(reset, Reset)
            assert trio.current_time() - flushed <= check_every + timeout
            await store.check()  # the new epoch is the one it knows
            written = await store.write("k", "t", b"1", expect=None)  # at the new epoch
            assert written is not None
            assert await anext(changes) == written


async def test_redis_that_lost_its_data_during_an_outage_is_a_reset_on_return(
    fake_redis: FakeRedis, autojump_clock: trio.testing.MockClock
) -> None:
    with trio.fail_after(TIMEOUT):
        async with redis_store() as store, changes_of(store) as changes:
            await store.write("k", "t", b"1", expect=None)
            assert isinstance(await anext(changes), Record)
            fake_redis.up = False
            assert isinstance(await anext(changes), Disconnected)
            fake_redis.flush()  # a restart without persistence, say
            fake_redis.up = True
            back = await anext(changes)
            assert isinstance(back, Reset)  # not Reconnected: what it held is meaningless
            await store.check()
            assert await store.read("k") is None


async def test_systems_finding_a_store_without_an_epoch_agree_on_one(
    fake_redis: FakeRedis, autojump_clock: trio.testing.MockClock
) -> None:
    with trio.fail_after(TIMEOUT):
        async with redis_store() as ours, redis_store() as theirs:
            await ours.check()
            await theirs.check()
            assert await theirs.write("k", "t", b"1", expect=None) is not None
            assert await ours.write("k", "t", b"2", expect=1) is not None
