"""The master's state service, in this process, over a MemoryStore (or a store that other
systems share) and a router double: who is subscribed to what, the pushes queued for each
process, re-subscribing what was lost, forgetting a process that ended, a store that resets,
goes away and comes back, or does not answer."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from actors import (
    ActorExited,
    ActorStarted,
    ExitReason,
    StateChanged,
    StateResynced,
    StoreDisconnected,
    StoreReconnected,
    StoreReset,
    StoreUnavailable,
)
from actors._base._events import EventBus
from actors._state._actors import StateServiceActor
from actors._state._api import SharedState
from actors._state._service import LocalUpstream, StateService
from actors._state._store import Disconnected, Reconnected, Record, Reset
from actors._state._wire import Failed, ReadKey, Records, Resync, Write
from protocol import DEFAULT_MAX_FRAME_SIZE, Message
from tests.actors.state.doubles import SharedStore, serving
from tests.waiting import TIMEOUT


class Text(Message):
    text: str


def body(text: str) -> bytes:
    return Text(text=text).model_dump_json().encode()


def record(key: str, version: int, text: str) -> Record:
    return Record(key=key, version=version, tag=Text.message_tag, body=body(text))


async def put(service: StateService, key: str, text: str) -> Record:
    written = await service.write(key, Text.message_tag, body(text), None)
    assert written is not None
    return written


def versions(sent: list[Message]) -> list[tuple[str, int]]:
    """The records pushed (keys and versions), in the order they went."""
    found: list[tuple[str, int]] = []
    for message in sent:
        assert isinstance(message, Records), message
        found.extend((r.key, r.version) for r in message.records)
    return found


def master_state(service: StateService) -> SharedState:
    """``system.state``: the master's own replica, straight to the service."""
    return SharedState(LocalUpstream(service), service.local, max_size=DEFAULT_MAX_FRAME_SIZE)


# -- subscriptions and pushes -------------------------------------------------------------------


async def test_a_read_subscribes_the_process_to_that_key_alone(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(TIMEOUT):
        async with serving() as (service, wire):
            assert await service.read("k", "0.1/7") == []
            await put(service, "k", "one")
            await put(service, "other", "x")
            await put(service, "k/under", "x")
            await trio.testing.wait_all_tasks_blocked()
            assert wire.sent["0.1/7"] == [Records(records=[record("k", 1, "one")])]
            assert await service.read("k", "0.2/3") == [record("k", 1, "one")]


async def test_a_watch_subscribes_the_process_to_every_key_under_the_prefix(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(TIMEOUT):
        async with serving() as (service, wire):
            for key in ["cfg/b", "cfg/a", "app/x"]:
                await put(service, key, key)
            held = await service.watch("cfg/", "0.1/7")
            assert held == [record("cfg/a", 1, "cfg/a"), record("cfg/b", 1, "cfg/b")]
            for key in ["cfg/c", "app/y", "cfgx/z", "cfg/a"]:
                await put(service, key, "new")
            await trio.testing.wait_all_tasks_blocked()
            assert sorted(versions(wire.sent["0.1/7"])) == [("cfg/a", 2), ("cfg/c", 1)]


async def test_pushes_wait_in_order_for_a_busy_process_and_delay_no_other(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(TIMEOUT):
        async with serving() as (service, wire):
            await service.read("k", "0.1/7")
            await service.read("k", "0.2/3")
            wire.full["0.1/7"] = busy = trio.Event()
            for n in range(1, 6):
                await put(service, "k", str(n))
            await trio.testing.wait_all_tasks_blocked()
            assert versions(wire.sent["0.2/3"]) == [("k", n) for n in range(1, 6)]
            assert wire.sent["0.1/7"] == []  # still busy with its first push
            busy.set()
            await trio.testing.wait_all_tasks_blocked()
            assert versions(wire.sent["0.1/7"]) == [("k", n) for n in range(1, 6)]
            assert len(wire.sent["0.1/7"]) == 2  # what waited went in one push


async def test_a_process_far_behind_gets_the_current_values_instead_of_every_change(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(TIMEOUT):
        async with serving() as (service, wire):
            await service.watch("k/", "0.1/7")
            wire.full["0.1/7"] = busy = trio.Event()
            for n in range(1, 10_001):
                await put(service, "k/a", str(n))
            busy.set()
            await trio.testing.wait_all_tasks_blocked()
            first, resync = wire.sent["0.1/7"]
            assert versions([first])[0] == ("k/a", 1)  # (what was on its way already)
            assert resync == Resync(prefixes=["k/"], records=[record("k/a", 10_000, "10000")])
            await put(service, "k/a", "next")
            await trio.testing.wait_all_tasks_blocked()
            assert versions(wire.sent["0.1/7"][2:]) == [("k/a", 10_001)]


async def test_hold_subscribes_again_what_the_service_lost_and_resyncs_it(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    with trio.fail_after(TIMEOUT):
        async with serving() as (service, wire):
            await put(service, "cfg/a", "a")
            await put(service, "k", "k")
            await put(service, "j", "j")
            await service.read("k", "0.1/7")  # what the service knows of it
            await service.resubscribe("0.1/7", keys=["j", "k"], prefixes=["cfg/"])
            await trio.testing.wait_all_tasks_blocked()
            assert wire.sent["0.1/7"] == [Resync(prefixes=["cfg/"], records=[
                record("cfg/a", 1, "a"), record("j", 1, "j"), record("k", 1, "k"),
            ])]
            assert "had lost 1 key(s) and 1 prefix(es)" in caplog.text
            await service.resubscribe("0.1/7", keys=["j", "k"], prefixes=["cfg/"])  # all known
            await put(service, "cfg/b", "b")
            await put(service, "j", "two")
            await trio.testing.wait_all_tasks_blocked()
            assert versions(wire.sent["0.1/7"][1:]) == [("cfg/b", 1), ("j", 2)]


async def test_only_the_end_of_a_process_drops_its_subscriptions(
    autojump_clock: trio.testing.MockClock,
) -> None:
    events = EventBus()
    everyone = ["0/9", "0.1/4", "0.1.2/3", "0.12/1", "0.2/5"]
    with trio.fail_after(TIMEOUT):
        async with serving(events=events) as (service, wire):
            for address in everyone:
                await service.read("k", address)
            # An actor ended inside process 0.1 (its process goes on): nothing changes.
            events.publish(ActorExited(path="root/w/child", address="0.1/4",
                                       reason=ExitReason(kind="crashed")))
            await put(service, "k", "one")
            await trio.testing.wait_all_tasks_blocked()
            assert {a: versions(wire.sent[a]) for a in everyone} == {
                a: [("k", 1)] for a in everyone
            }
            # Process 0.1 ended (and with it 0.1.2, below it).
            wire.ended.add("0.1")
            events.publish(ActorExited(path="root/w", address="0.1/1", node="0.1",
                                       reason=ExitReason(kind="killed", signal=9)))
            await trio.testing.wait_all_tasks_blocked()
            await put(service, "k", "two")
            await trio.testing.wait_all_tasks_blocked()
            assert {a: versions(wire.sent[a]) for a in everyone} == {
                "0/9": [("k", 1), ("k", 2)], "0.12/1": [("k", 1), ("k", 2)],
                "0.2/5": [("k", 1), ("k", 2)], "0.1/4": [("k", 1)], "0.1.2/3": [("k", 1)],
            }
            assert versions([m for _, m in wire.refused]) == []  # no change was even tried


async def test_the_service_keeps_up_with_events_published_faster_than_one_a_pass(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Spawning an actor publishes two events in one scheduling pass: a follower that read
    # one a pass fell behind and was unsubscribed, and then missed the ends of processes.
    events = EventBus()
    with trio.fail_after(TIMEOUT):
        async with serving(events=events) as (service, wire):
            await service.read("k", "0.1/4")
            for n in range(3 * 1024):
                events.publish(ActorStarted(path=f"root/a{n}", pid=1))
                events.publish(ActorStarted(path=f"root/b{n}", pid=1))
                await trio.lowlevel.checkpoint()
            wire.ended.add("0.1")
            events.publish(ActorExited(path="root/w", address="0.1/1", node="0.1",
                                       reason=ExitReason(kind="killed", signal=9)))
            await trio.testing.wait_all_tasks_blocked()
            await put(service, "k", "one")
            await trio.testing.wait_all_tasks_blocked()
            assert versions(wire.sent["0.1/4"]) == []
            assert versions([m for _, m in wire.refused]) == []


# -- the store: resets, outages, other systems ------------------------------------------------


async def test_a_store_that_lost_its_data_starts_every_replica_over(
    autojump_clock: trio.testing.MockClock,
) -> None:
    store = SharedStore()
    with trio.fail_after(TIMEOUT):
        async with serving(store) as (service, wire):
            state = master_state(service)
            for n in range(3):
                await put(service, "k", str(n))
            await put(service, "gone", "x")
            await service.watch("", "0.1/7")
            async with state.watch("") as changes:
                store.lose_data("two")
                await store.data.write("k", Text.message_tag, body("fresh"), expect=None)
                store.report(Reset("two"))
                assert [await anext(changes) for _ in range(2)] == [
                    StateResynced(prefix=""),
                    StateChanged(key="k", version=1, value=Text(text="fresh")),
                ]
                await trio.testing.wait_all_tasks_blocked()
                assert wire.sent["0.1/7"][-1] == Resync(
                    prefixes=[""], records=[record("k", 1, "fresh")], reset=True
                )
                assert await state.get("k", Text) == Text(text="fresh")
                assert await state.get("gone", Text) is None
                store.report(Reset("two"))  # the same news again: nothing more
                await trio.testing.wait_all_tasks_blocked()
            assert [type(e) for e in wire.published] == [StoreReset]
            assert isinstance(wire.sent["0.1/7"][-1], Resync)


async def test_a_write_that_finds_the_store_reset_starts_over_then_writes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    store = SharedStore()
    with trio.fail_after(TIMEOUT):
        async with serving(store) as (service, wire):
            await put(service, "k", "one")
            await put(service, "k", "two")
            await service.read("k", "0.1/7")
            store.lose_data("two")  # found by the next write
            written = await put(service, "k", "after")
            assert written == record("k", 1, "after")  # versions started again
            await trio.testing.wait_all_tasks_blocked()
            reset, push = wire.sent["0.1/7"]
            assert reset == Resync(prefixes=[], records=[], reset=True)
            assert versions([push]) == [("k", 1)]
            assert [type(e) for e in wire.published] == [StoreReset]


async def test_an_outage_is_announced_once_and_the_return_brings_everyone_up_to_date(
    autojump_clock: trio.testing.MockClock,
) -> None:
    store = SharedStore()
    with trio.fail_after(TIMEOUT):
        async with serving(store) as (service, wire):
            state = master_state(service)
            await put(service, "k", "one")
            await service.read("k", "0.1/7")
            async with state.watch("k") as changes:
                store.report(Disconnected("connection refused"))
                store.report(Disconnected("still refused"))
                await trio.sleep(7)
                # Another system wrote meanwhile; the store could not say.
                await store.data.write("k", Text.message_tag, body("two"), expect=None)
                store.report(Reconnected())
                assert [await anext(changes) for _ in range(2)] == [
                    StateResynced(prefix="k"),
                    StateChanged(key="k", version=2, value=Text(text="two")),
                ]
            await trio.testing.wait_all_tasks_blocked()
            assert wire.sent["0.1/7"] == [Resync(prefixes=[], records=[record("k", 2, "two")])]
            down, back = wire.published
            assert isinstance(down, StoreDisconnected)
            assert (down.store, down.error) == ("shared", "connection refused")
            assert isinstance(back, StoreReconnected)
            assert back.down_for == 7.0


async def test_a_store_that_does_not_answer_fails_the_request_at_the_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    store = SharedStore()
    with trio.fail_after(TIMEOUT):
        async with serving(store, store_timeout=2.5) as (service, _):
            await put(service, "k", "one")
            store.hang = True
            asked = trio.current_time()
            with pytest.raises(StoreUnavailable, match=r"did not answer a write within 2\.5 s"):
                await put(service, "k", "two")
            assert trio.current_time() - asked == 2.5
            with pytest.raises(StoreUnavailable, match="did not answer a read"):
                await service.read("j", "0.1/7")
            # A worker's request is answered all the same, with what went wrong.
            answer = await StateServiceActor(service).read(ReadKey(key="j", replica="0.1/7"))
            assert isinstance(answer, Failed)
            assert answer.kind == "unavailable"
            assert await service.read("k", "0.1/7") == [record("k", 1, "one")]  # (cached)


async def test_a_compare_and_set_that_loses_to_another_system_learns_what_won(
    autojump_clock: trio.testing.MockClock,
) -> None:
    store = SharedStore()
    with trio.fail_after(TIMEOUT):
        async with serving(store) as (service, wire):
            await put(service, "k", "mine")
            await service.read("k", "0.1/7")
            await store.data.write("k", Text.message_tag, body("theirs"), expect=None)
            assert await service.write("k", Text.message_tag, body("late"), 1) is None
            assert service.current("k") == record("k", 2, "theirs")
            await trio.testing.wait_all_tasks_blocked()
            assert versions(wire.sent["0.1/7"]) == [("k", 2)]
            # A worker that lost is answered with what won, ahead of the push.
            answer = await StateServiceActor(service).write(
                Write(key="k", tag=Text.message_tag, body=body("later"), expect=1)
            )
            assert answer == Records(records=[record("k", 2, "theirs")], written=None)


async def test_a_sync_reads_a_shared_store_again(autojump_clock: trio.testing.MockClock) -> None:
    store = SharedStore()
    with trio.fail_after(TIMEOUT):
        async with serving(store) as (service, _):
            await put(service, "k", "one")
            await service.watch("cfg/", "0.1/7")
            await store.data.write("k", Text.message_tag, body("two"), expect=None)
            await store.data.write("cfg/a", Text.message_tag, body("a"), expect=None)
            await service.read("k", "0.1/7")  # (cached: still the old one)
            assert await service.sync("0.1/7") == [record("cfg/a", 1, "a"),
                                                   record("k", 2, "two")]
