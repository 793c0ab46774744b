"""Nothing the state service and a worker's replica send each other is larger than a frame,
whatever the data: answers come in pages, pushes and resyncs in parts, and a record too large
to travel at all (another system, with larger frames, wrote it) becomes a stand-in whose
readers get InvalidStoredValue. In this process: the router double carries every message as
a frame would, and refuses one over the limit."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from actors import ActorRef, InvalidStoredValue, StateChanged
from actors._state._actors import RemoteUpstream, StateServiceActor
from actors._state._api import SharedState
from actors._state._replica import Replica
from actors._state._service import StateService
from actors._state._store import Record
from actors._state._wire import Records, Resubscribe, Resync, Sync, WatchPrefix, page_budget
from protocol import DEFAULT_MAX_FRAME_SIZE, Message
from tests.actors.state.doubles import SharedStore, Wire, serving
from tests.waiting import TIMEOUT

FRAME = 4096  # a small frame limit, so that a few records fill a frame


class Text(Message):
    text: str


def record(key: str, version: int, text: str) -> Record:
    return Record(key=key, version=version, tag=Text.message_tag,
                  body=Text(text=text).model_dump_json().encode())


async def put(service: StateService, key: str, text: str) -> None:
    value = record(key, 0, text)
    assert await service.write(key, value.tag, value.body, None) is not None


def worker_state(wire: Wire, service: StateService) -> tuple[SharedState, Replica]:
    """A worker's ``ctx.state``: asks to the service's actor, over the wire."""
    wire.actors["0/1"] = StateServiceActor(service)
    upstream = RemoteUpstream(ActorRef(wire, address="0/1"), lambda: "0.1/7", FRAME)
    replica = Replica()
    return SharedState(upstream, replica, max_size=FRAME), replica


def test_the_budget_leaves_room_in_a_frame_for_all_but_the_records() -> None:
    assert page_budget(DEFAULT_MAX_FRAME_SIZE) == DEFAULT_MAX_FRAME_SIZE - 16 * 1024
    for size in [FRAME, 20_000, 64 * 1024, DEFAULT_MAX_FRAME_SIZE]:
        assert size // 2 <= page_budget(size) < size


async def test_a_watch_larger_than_a_frame_is_answered_in_pages(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(TIMEOUT):
        async with serving(wire=Wire(FRAME)) as (service, wire):
            keys = [f"cfg/{n:02}" for n in range(40)]
            for key in reversed(keys):
                await put(service, key, "x" * 200)
            await put(service, "cfh/out", "not under the prefix")
            state, _ = worker_state(wire, service)
            async with state.watch("cfg/"):
                for key in keys:  # every one held, from the answer alone
                    assert await state.get(key, Text) == Text(text="x" * 200)
            pages = [m for m in wire.asked if isinstance(m, WatchPrefix)]
            assert len(pages) > 3  # (each fitted a frame: the wire refuses one that does not)
            assert pages[0].after is None
            assert all(p.after is not None for p in pages[1:])


async def test_a_sync_larger_than_a_frame_is_asked_and_answered_in_parts(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(TIMEOUT):
        async with serving(wire=Wire(FRAME)) as (service, wire):
            state, _ = worker_state(wire, service)
            keys = [f"k{n:02}" for n in range(40)]
            for key in keys:
                assert await state.get(key, Text) is None  # held (subscribed) from here on
            for key in keys:
                await put(service, key, "y" * 200)
            # Pushed, but not taken (no replica actor here): a sync tells the service what
            # the replica holds, in parts, and takes what the service has, in pages.
            wire.asked.clear()
            await state.sync()
            holds = [m for m in wire.asked if isinstance(m, Resubscribe)]
            assert len(holds) > 1
            assert sorted(k for h in holds for k in h.keys) == keys
            assert len([m for m in wire.asked if isinstance(m, Sync)]) > 1
            for key in keys:
                assert await state.get(key, Text) == Text(text="y" * 200)


async def test_pushes_and_resyncs_are_split_to_fit_a_frame(
    autojump_clock: trio.testing.MockClock,
) -> None:
    keys = [f"k/{n:02}" for n in range(30)]
    with trio.fail_after(TIMEOUT):
        async with serving(wire=Wire(FRAME)) as (service, wire):
            await service.watch("k/", "0.1/7")
            wire.full["0.1/7"] = busy = trio.Event()
            for key in keys:
                await put(service, key, "z" * 300)
            busy.set()
            await trio.testing.wait_all_tasks_blocked()
            pushes = [m for m in wire.sent["0.1/7"] if isinstance(m, Records)]
            assert len(pushes) == len(wire.sent["0.1/7"]) > 3
            assert [r.key for m in pushes for r in m.records] == keys  # in order, in parts
            # A replica resynced (it had lost its subscription) gets it all, in parts.
            await service.resubscribe("0.2/9", keys=[], prefixes=["k/"])
            await trio.testing.wait_all_tasks_blocked()
            parts = [m for m in wire.sent["0.2/9"] if isinstance(m, Resync)]
            assert len(parts) == len(wire.sent["0.2/9"]) > 1
            assert [m.more for m in parts] == [True] * (len(parts) - 1) + [False]
            assert [r.key for m in parts for r in m.records] == keys


async def test_a_record_too_large_to_travel_is_a_stand_in_that_reads_fail_on(
    autojump_clock: trio.testing.MockClock,
) -> None:
    big = "b" * (2 * FRAME)
    store = SharedStore()  # another system, with a larger frame limit, writes there
    await store.data.write("big", Text.message_tag, record("big", 0, big).body, expect=None)
    with trio.fail_after(TIMEOUT):
        async with serving(store, wire=Wire(FRAME)) as (service, wire):
            state, replica = worker_state(wire, service)
            with pytest.raises(InvalidStoredValue, match="too large for this system's frame"):
                await state.get("big", Text)
            entry = replica.records["big"]
            assert (entry.key, entry.version) == ("big", 1)  # the version is known
            async with state.watch("") as changes:
                # Its next version, reported by the store: pushed as a stand-in too.
                written = await store.data.write("big", Text.message_tag,
                                                 record("big", 0, big + "!").body, expect=None)
                assert written is not None
                store.report(written)
                await trio.testing.wait_all_tasks_blocked()
                await put(service, "small", "fits")
                await trio.testing.wait_all_tasks_blocked()
                for push in wire.sent["0.1/7"]:  # taken by the worker's replica, in order
                    assert isinstance(push, Records)
                    for pushed in push.records:
                        replica.take(pushed)
                with pytest.raises(InvalidStoredValue, match="too large"):
                    await anext(changes)
                assert await anext(changes) == StateChanged(  # and it goes on after it
                    key="small", version=1, value=Text(text="fits"),
                )
            assert await state.get("small", Text) == Text(text="fits")

