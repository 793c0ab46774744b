"""A process's replica and the state API over it, in this process: which records a replica
keeps (the newest of what it holds), what its watchers see (every pushed change once, in
version order; a StateResynced marker then the current values; a reset), and what reads and
writes check. The service is a canned double: the test's own calls to ``take`` are the
pushes."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import trio
import trio.testing

from actors import InvalidKey, InvalidStoredValue, StateChanged, StateResynced
from actors._state._api import SharedState, Upstream
from actors._state._replica import Replica
from actors._state._store import Record
from protocol import DEFAULT_MAX_FRAME_SIZE, FrameTooLarge, Message
from tests.waiting import TIMEOUT


class Text(Message):
    text: str


class Number(Message):
    n: int


def record(key: str, version: int, text: str | None = "x") -> Record:
    """``key`` at ``version``: ``Text(text)``, or deleted (``text`` None)."""
    if text is None:
        return Record(key=key, version=version)
    value = Text(text=text)
    return Record(key=key, version=version, tag=value.message_tag,
                  body=value.model_dump_json().encode())


def changed(key: str, version: int, text: str | None = "x") -> StateChanged:
    return StateChanged(key=key, version=version,
                        value=None if text is None else Text(text=text))


class Canned(Upstream):
    """The master's service as a replica sees it: answers from ``records``; ``on_watch``
    runs while a watch's answer is on its way (pushes that overtake it)."""

    def __init__(self) -> None:
        self.records: dict[str, Record] = {}
        self.reads: list[str] = []
        self.on_watch: Callable[[], None] | None = None

    async def read(self, key: str, replica: Replica) -> list[Record]:
        await trio.lowlevel.checkpoint()
        self.reads.append(key)
        return [self.records[key]] if key in self.records else []

    async def watch(self, prefix: str, replica: Replica) -> list[Record]:
        await trio.lowlevel.checkpoint()
        if self.on_watch is not None:
            self.on_watch()
        return sorted((r for k, r in self.records.items() if k.startswith(prefix)),
                      key=lambda r: r.key)

    async def write(self, key: str, tag: str, body: bytes | None, expect: int | None,
                    replica: Replica) -> Record | None:
        await trio.lowlevel.checkpoint()
        current = self.records.get(key)
        version = (current.version if current is not None else 0) + 1
        written = self.records[key] = Record(key=key, version=version, tag=tag, body=body)
        return written

    async def sync(self, replica: Replica) -> list[Record]:
        await trio.lowlevel.checkpoint()
        return [r for k, r in self.records.items() if replica.keeps(k)]


def state_over(upstream: Canned, *, max_size: int = DEFAULT_MAX_FRAME_SIZE
               ) -> tuple[SharedState, Replica]:
    replica = Replica()
    return SharedState(upstream, replica, max_size=max_size), replica


# -- what a replica keeps ------------------------------------------------------------------


def test_a_replica_keeps_the_newest_record_of_what_it_holds() -> None:
    replica = Replica()
    replica.subscribe("k", [record("k", 2)])
    assert replica.keeps("k")
    assert not replica.keeps("j")
    assert not replica.learn(record("k", 1))  # older
    assert not replica.learn(record("k", 2))  # the same
    assert replica.learn(record("k", 3, "new"))
    assert replica.records["k"] == record("k", 3, "new")
    assert not replica.learn(record("j", 1))  # not held here: not kept
    assert "j" not in replica.records
    replica.take(record("j", 1))  # not even when pushed
    assert "j" not in replica.records


# -- what watchers see -------------------------------------------------------------------------


async def test_a_watcher_sees_every_pushed_change_once_in_version_order(
    autojump_clock: trio.testing.MockClock,
) -> None:
    state, replica = state_over(Canned())
    with trio.fail_after(TIMEOUT):
        async with state.watch("cfg/") as changes:
            replica.learn(record("cfg/a", 2, "two"))  # an answer (a write's own) overtakes
            replica.take(record("cfg/a", 1, "one"))  # ... the push of the change before it
            replica.take(record("cfg/a", 2, "two"))
            replica.take(record("cfg/a", 2, "two"))  # pushed again: no change
            replica.take(record("cfg/a", 1, "one"))  # older: no change
            replica.take(record("app/b", 1))  # not under the prefix
            replica.take(record("cfg/a", 3, None))
            replica.take(record("cfg/z", 1, "last"))
            assert [await anext(changes) for _ in range(4)] == [
                changed("cfg/a", 1, "one"), changed("cfg/a", 2, "two"),
                changed("cfg/a", 3, None), changed("cfg/z", 1, "last"),
            ]
        assert await state.get("cfg/a", Text) is None  # deleted, in reads too


async def test_a_watch_starts_from_its_answer_and_misses_no_push_after_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    upstream = Canned()
    upstream.records["cfg/a"] = record("cfg/a", 2, "two")
    state, replica = state_over(upstream)

    def pushed_meanwhile() -> None:
        replica.take(record("cfg/a", 1, "one"))  # older than the answer: no change to it
        replica.take(record("cfg/a", 2, "two"))  # what the answer starts from
        replica.take(record("cfg/a", 3, "three"))  # newer than the answer: a change

    upstream.on_watch = pushed_meanwhile
    with trio.fail_after(TIMEOUT):
        async with state.watch("cfg/") as changes:
            assert await anext(changes) == changed("cfg/a", 3, "three")
            assert await state.get("cfg/a", Text) == Text(text="three")
            assert upstream.reads == []  # held through the watch


async def test_a_resync_marks_the_watchers_of_its_prefixes_then_gives_current_values(
    autojump_clock: trio.testing.MockClock,
) -> None:
    state, replica = state_over(Canned())
    with trio.fail_after(TIMEOUT):
        async with state.watch("cfg/") as cfg, state.watch("cfg/db/") as db, \
                state.watch("app/") as app:
            replica.take(record("cfg/a", 1))
            replica.take(record("app/x", 1))
            replica.resync(["cfg/"], [record("cfg/db/url", 2, "url"), record("cfg/a", 5, "a")])
            # What was queued for cfg/ is dropped: the current values say it all.
            assert [await anext(cfg) for _ in range(3)] == [
                StateResynced(prefix="cfg/"), changed("cfg/a", 5, "a"),
                changed("cfg/db/url", 2, "url"),
            ]
            assert [await anext(db) for _ in range(2)] == [  # under the prefix resynced
                StateResynced(prefix="cfg/db/"), changed("cfg/db/url", 2, "url"),
            ]
            assert await anext(app) == changed("app/x", 1)  # another prefix: untouched
            replica.take(record("cfg/a", 5, "a"))  # the resync's value, pushed: no change
            replica.take(record("cfg/a", 6, "b"))
            assert await anext(cfg) == changed("cfg/a", 6, "b")


async def test_a_resync_of_a_wider_prefix_reaches_the_narrower_watchers_only_if_related(
    autojump_clock: trio.testing.MockClock,
) -> None:
    state, replica = state_over(Canned())
    with trio.fail_after(TIMEOUT):
        async with state.watch("cfg/db/") as db, state.watch("cfgx/") as other:
            replica.resync(["cfg/"], [])
            assert await anext(db) == StateResynced(prefix="cfg/db/")
            replica.take(record("cfgx/a", 1))
            assert await anext(other) == changed("cfgx/a", 1)  # no marker before it


async def test_a_reset_drops_what_was_held_and_starts_every_watcher_over(
    autojump_clock: trio.testing.MockClock,
) -> None:
    state, replica = state_over(Canned())
    with trio.fail_after(TIMEOUT):
        async with state.watch("cfg/") as cfg, state.watch("app/") as app:
            replica.take(record("cfg/a", 7, "before"))
            replica.take(record("app/x", 3, "before"))
            assert await anext(cfg) == changed("cfg/a", 7, "before")
            # The store lost its data: versions start again from what it holds now.
            replica.resync([], [record("cfg/a", 1, "after")], reset=True)
            assert replica.records == {"cfg/a": record("cfg/a", 1, "after")}
            assert [await anext(cfg) for _ in range(2)] == [
                StateResynced(prefix="cfg/"), changed("cfg/a", 1, "after"),
            ]
            assert await anext(app) == StateResynced(prefix="app/")  # every watcher
            replica.take(record("cfg/a", 2, "again"))
            replica.take(record("app/x", 1, "again"))  # lower than before the reset: new
            assert await anext(cfg) == changed("cfg/a", 2, "again")
            assert await anext(app) == changed("app/x", 1, "again")
            assert await state.get("cfg/a", Text) == Text(text="again")


async def test_a_watcher_that_falls_far_behind_is_resynced_instead(
    autojump_clock: trio.testing.MockClock,
) -> None:
    state, replica = state_over(Canned())
    with trio.fail_after(TIMEOUT):
        async with state.watch("k/") as slow:
            for version in range(1, 10_001):  # never read meanwhile
                replica.take(record("k/a", version, str(version)))
            assert [await anext(slow) for _ in range(2)] == [
                StateResynced(prefix="k/"), changed("k/a", 10_000, "10000"),
            ]
            replica.take(record("k/a", 10_001, "next"))
            assert await anext(slow) == changed("k/a", 10_001, "next")


async def test_a_watch_left_stops_holding_its_prefix(autojump_clock: trio.testing.MockClock,
                                                      ) -> None:
    state, replica = state_over(Canned())
    with trio.fail_after(TIMEOUT):
        async with state.watch("cfg/"), state.watch("cfg/"):
            assert replica.keeps("cfg/a")
        assert not replica.keeps("cfg/a")
        assert replica.watchers == []


# -- reads and writes over the replica ----------------------------------------------------------


async def test_a_key_read_once_is_read_from_the_replica_after(
    autojump_clock: trio.testing.MockClock,
) -> None:
    upstream = Canned()
    upstream.records["k"] = record("k", 1, "one")
    state, replica = state_over(upstream)
    with trio.fail_after(TIMEOUT):
        assert await state.get("k", Text) == Text(text="one")
        assert await state.get("k", Text) == Text(text="one")
        replica.take(record("k", 2, "two"))  # pushed
        entry = await state.entry("k", Text)
        assert entry is not None
        assert (entry.value, entry.version) == (Text(text="two"), 2)
        assert await state.get("absent", Text) is None
        assert await state.get("absent", Text) is None
    assert upstream.reads == ["k", "absent"]  # once each


async def test_a_write_is_read_back_at_once(autojump_clock: trio.testing.MockClock) -> None:
    upstream = Canned()
    state, _ = state_over(upstream)
    with trio.fail_after(TIMEOUT):
        assert await state.get("k", Text) is None  # held from here on
        assert await state.put("k", Text(text="mine")) == 1
        assert await state.get("k", Text) == Text(text="mine")
        assert await state.compare_and_set("k", Text(text="again"), version=1) == 2
        assert await state.get("k", Text) == Text(text="again")
        assert await state.delete("k") == 3
        assert await state.get("k", Text) is None
    assert upstream.reads == ["k"]  # the writes' own answers, not reads, brought them


async def test_what_reads_and_writes_refuse(autojump_clock: trio.testing.MockClock) -> None:
    upstream = Canned()
    upstream.records["number"] = Record(key="number", version=1, tag=Number.message_tag,
                                        body=b'{"n": 1}')
    upstream.records["unknown"] = Record(key="unknown", version=1, tag="nobody:Knows",
                                         body=b"{}")
    upstream.records["garbled"] = Record(key="garbled", version=1, tag=Text.message_tag,
                                         body=b'{"text": ')
    state, _ = state_over(upstream, max_size=64 * 1024)
    with trio.fail_after(TIMEOUT):
        with pytest.raises(InvalidStoredValue, match="is a Number, not a Text"):
            await state.get("number", Text)
        assert await state.get("number", Number) == Number(n=1)  # the key is fine
        with pytest.raises(InvalidStoredValue, match="cannot be read"):
            await state.get("unknown", Text)
        with pytest.raises(InvalidStoredValue, match="cannot be read"):
            await state.get("garbled", Text)
        for key in ["", "a b", "ключ", "k" * 513]:
            with pytest.raises(InvalidKey):
                await state.get(key, Text)
            with pytest.raises(InvalidKey):
                await state.put(key, Text(text="x"))
        with pytest.raises(InvalidKey):
            async with state.watch("a b"):
                pass
        for version in [-1, True, 1.0]:
            with pytest.raises(ValueError, match="version must be an int"):
                await state.compare_and_set("k", Text(text="x"), version=version)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="a state value is a Message"):
            await state.put("k", "text")  # type: ignore[arg-type]
        with pytest.raises(FrameTooLarge):  # it could not travel to every replica
            await state.put("k", Text(text="x" * 64 * 1024))
    assert "k" not in upstream.records  # nothing refused was written
