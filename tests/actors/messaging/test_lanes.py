"""Lanes on their own: what waits, in which order, and what is refused when a lane ends.

The steps that pass a message on (the inbox's delivery, the relay's sending on) are test
doubles that record what they are given; frames are never decoded.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import trio
import trio.testing

from actors._base._control import Credit, FailureKind
from actors._messaging._lanes import Lanes
from actors._messaging._link import Link
from actors._messaging._names import NameRegistry
from protocol import Frame, FrameKind, Message
from tests.links import link_pair


class Item(Message):
    pass


def frame(n: int, kind: FrameKind = FrameKind.TELL) -> Frame:
    return Frame(kind, corr=n, tag="test.Item", route=f"0.1/1|0.2#{n}", body=b"{}")


class Refused:
    """The outbox's ``refuse``, recorded: (frame's corr, kind, text)."""

    def __init__(self) -> None:
        self.log: list[tuple[int, FailureKind, str]] = []

    def __call__(self, link: Link, frame: Frame, source: str, kind: FailureKind,
                 text: str) -> None:
        self.log.append((frame.corr, kind, text))


class Mailbox:
    """A delivery step: takes a message once ``room`` is set (then at once)."""

    def __init__(self) -> None:
        self.room = trio.Event()
        self.got: list[int] = []

    async def deliver(self, link: Link, actor: str, frame: Frame, source: str,
                      message: Message | None) -> None:
        await self.room.wait()
        self.got.append(frame.corr)


def sender(sent: list[tuple[Link, int]]) -> Callable[[Link, Link, Frame, str], None]:
    def send_on(came_from: Link, out: Link, frame: Frame, source: str) -> None:
        if frame.kind is FrameKind.TELL:
            out.send_credit -= 10
        sent.append((out, frame.corr))
    return send_on


async def test_a_delivery_lane_keeps_the_order_then_goes(nursery: trio.Nursery) -> None:
    lanes = Lanes(nursery, NameRegistry(), Refused())
    box = Mailbox()
    async with link_pair() as (down, _):
        lanes.deliver_later(down, "1", frame(1), "0.2", Item(), box.deliver)
        lane = lanes.delivery[(down, "1")]
        lane.items.append((frame(2), "0.2", None))  # as the inbox does while it exists
        lane.items.append((frame(3), "0.2", None))
        await trio.testing.wait_all_tasks_blocked()
        assert box.got == []  # the mailbox is full
        box.room.set()
        await trio.testing.wait_all_tasks_blocked()
        assert box.got == [1, 2, 3]
        assert lanes.delivery == {}  # empty: later messages go straight to the mailbox


async def test_a_delivery_lane_passes_on_what_finds_room_without_waiting(
    nursery: trio.Nursery,
) -> None:
    lanes = Lanes(nursery, NameRegistry(), Refused())
    box = Mailbox()
    room = [0]  # messages the mailbox takes now, without waiting
    now: list[int] = []

    def deliver_now(link: Link, actor: str, frame: Frame, source: str,
                    message: Message | None) -> Message | None:
        if room[0] == 0:
            return Item() if message is None else message  # full: the lane waits with it
        room[0] -= 1
        now.append(frame.corr)
        return None

    async with link_pair() as (down, _):
        lanes.deliver_later(down, "1", frame(1), "0.2", Item(), box.deliver, deliver_now)
        lane = lanes.delivery[(down, "1")]
        for n in range(2, 6):
            lane.items.append((frame(n), "0.2", None))
        await trio.testing.wait_all_tasks_blocked()
        assert (now, box.got) == ([], [])  # the mailbox is full: the first one waits
        room[0] = 2
        box.room.set()
        await trio.testing.wait_all_tasks_blocked()
        # The waiting one, then two without waiting, then each of the rest waits again
        # (and finds room at once here).
        assert (now, box.got) == ([2, 3], [1, 4, 5])
        assert lanes.delivery == {}


async def test_a_delivery_lane_ended_by_a_shutdown_refuses_what_is_left() -> None:
    refused = Refused()
    async with link_pair() as (down, _):
        async with trio.open_nursery() as nursery:
            lanes = Lanes(nursery, NameRegistry(), refused)
            lanes.deliver_later(down, "1", frame(1, FrameKind.ASK), "0.2", Item(),
                                Mailbox().deliver)
            lanes.delivery[(down, "1")].items.append((frame(2), "0.2", None))
            await trio.testing.wait_all_tasks_blocked()
            nursery.cancel_scope.cancel()
        assert refused.log == [(1, "gone", "the system is shutting down"),
                               (2, "gone", "the system is shutting down")]
        assert lanes.delivery == {}


async def test_a_forwarding_lane_sends_tells_as_credit_comes_back(
    nursery: trio.Nursery,
) -> None:
    lanes = Lanes(nursery, NameRegistry(), Refused())
    sent: list[tuple[Link, int]] = []
    send_on = sender(sent)
    async with link_pair() as (came_from, _), link_pair("0", "0.2") as (out, _):
        out.send_credit = 0  # the receiver has not passed our tells on yet
        lanes.forward_later(came_from, out, frame(1), "0.1", send_on)
        lanes.forward_later(came_from, out, frame(2, FrameKind.ASK), "0.1", send_on)
        lanes.forward_later(came_from, out, frame(3), "0.1", send_on)
        await trio.testing.wait_all_tasks_blocked()
        assert sent == []  # the ask too: it keeps its place behind the tell
        out.on_credit(Credit(bytes=10))
        await trio.testing.wait_all_tasks_blocked()
        assert sent == [(out, 1), (out, 2)]  # the ask takes no credit; the next tell waits
        out.on_credit(Credit(bytes=10))
        await trio.testing.wait_all_tasks_blocked()
        assert sent == [(out, 1), (out, 2), (out, 3)]
        assert lanes.forwarding == {}


async def test_a_forwarding_lane_refuses_its_frames_once_its_link_closes(
    nursery: trio.Nursery,
) -> None:
    refused = Refused()
    lanes = Lanes(nursery, NameRegistry(), refused)
    sent: list[tuple[Link, int]] = []
    async with link_pair() as (came_from, _), link_pair("0", "0.2") as (out, _):
        out.send_credit = 0
        for n in (1, 2):
            lanes.forward_later(came_from, out, frame(n), "0.1", sender(sent))
        await trio.testing.wait_all_tasks_blocked()
        out.closing = True  # its process said it is stopping
        out.stop_sending()
        await trio.testing.wait_all_tasks_blocked()
        assert sent == []
        assert refused.log == [(1, "gone", "the process of node 0.2 is gone"),
                               (2, "gone", "the process of node 0.2 is gone")]
        assert lanes.forwarding == {}


async def test_a_held_request_is_routed_once_its_path_is_back(nursery: trio.Nursery) -> None:
    names = NameRegistry()
    names.supervise("w1")  # a supervisor keeps it alive: it is restarting
    refused = Refused()
    lanes = Lanes(nursery, names, refused)
    routed: list[tuple[Link, int]] = []
    async with link_pair() as (down, _):
        for n in (1, 2):
            lanes.park("w1", down, frame(n), "0.1",
                       lambda link, frame: routed.append((link, frame.corr)))
        await trio.testing.wait_all_tasks_blocked()
        assert routed == []
        names.register("w1", "0.2/1")
        await trio.testing.wait_all_tasks_blocked()
        assert routed == [(down, 1), (down, 2)]
        assert refused.log == []


@pytest.mark.usefixtures("autojump_clock")
async def test_a_held_request_fails_once_restart_wait_is_over(nursery: trio.Nursery) -> None:
    names = NameRegistry(restart_wait=2.0)
    names.supervise("w1")
    refused = Refused()
    lanes = Lanes(nursery, names, refused)
    async with link_pair() as (down, _):
        lanes.park("w1", down, frame(1, FrameKind.ASK), "0.1",
                   lambda link, frame: pytest.fail("routed without a holder"))
        await trio.sleep(2.5)
        assert refused.log == [
            (1, "gone", "'w1' is restarting and was not back within 2.0 s"),
        ]
