"""An actor's mailbox as a queue (no trio channel under it): its bound, the senders that wait
in line while it is full, its end, and the loop that reads it, on a virtual clock."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from actors import Actor, ActorGone, handler
from actors._running._mailbox import ActorMailbox
from protocol import Message


class Note(Message):
    n: int


class Keeper(Actor):
    """Keeps what it is told, in order."""

    mailbox_size = 2

    def __init__(self) -> None:
        self.seen: list[int] = []

    @handler
    async def note(self, message: Note) -> None:
        self.seen.append(message.n)


class Unbuffered(Keeper):
    mailbox_size = 0


class Router:
    """What a mailbox reads of its router."""

    id = "0"
    stopping = False

    def __init__(self) -> None:
        self._ids = iter(range(1, 1000))

    def next_actor_id(self) -> int:
        return next(self._ids)


class Owner:
    failure: BaseException | None = None
    address: str | None = "0/1"

    def fail(self, exc: BaseException) -> None:
        raise AssertionError(f"not expected: {exc!r}")


def mailbox(actor: Actor) -> ActorMailbox:
    box = ActorMailbox(Router(), actor, path="/keeper", owner=Owner())  # type: ignore[arg-type]
    box.open()
    return box


async def test_a_full_mailbox_makes_senders_wait_in_line_and_admits_them_in_order() -> None:
    actor = Keeper()
    box = mailbox(actor)
    box.deliver_nowait(Note(n=0), None)
    box.deliver_nowait(Note(n=1), None)
    with pytest.raises(trio.WouldBlock):
        box.deliver_nowait(Note(n=2), None)
    async with trio.open_nursery() as nursery:
        for n in (2, 3, 4):
            nursery.start_soon(box.deliver, Note(n=n), None)
            await trio.testing.wait_all_tasks_blocked()
        assert len(box) == 2  # (the three wait)
        with pytest.raises(trio.WouldBlock):  # a send now does not pass those in line
            box.deliver_nowait(Note(n=9), None)
        nursery.start_soon(box.serve)
        await trio.testing.wait_all_tasks_blocked()
        assert actor.seen == [0, 1, 2, 3, 4]
        box.close()
    assert len(box) == 0


async def test_a_mailbox_of_size_0_hands_over_to_its_waiting_reader_only() -> None:
    actor = Unbuffered()
    box = mailbox(actor)
    with pytest.raises(trio.WouldBlock):
        box.deliver_nowait(Note(n=0), None)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(box.deliver, Note(n=1), None)  # waits for the reader
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(box.serve)
        await trio.testing.wait_all_tasks_blocked()
        box.deliver_nowait(Note(n=2), None)  # the reader waits: it takes it
        await trio.testing.wait_all_tasks_blocked()
        assert actor.seen == [1, 2]
        box.close()


async def test_closing_refuses_waiting_senders_and_serves_what_is_queued() -> None:
    actor = Keeper()
    box = mailbox(actor)
    box.deliver_nowait(Note(n=0), None)
    box.deliver_nowait(Note(n=1), None)
    refused: list[str] = []

    async def send_late() -> None:
        try:
            await box.deliver(Note(n=2), None)
        except ActorGone as exc:
            refused.append(str(exc))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(send_late)
        await trio.testing.wait_all_tasks_blocked()
        box.close()
        await box.serve()  # what was queued, then it returns
    assert actor.seen == [0, 1]
    assert refused == ["actor /keeper (0/1): it stopped"]
    with pytest.raises(ActorGone):
        box.deliver_nowait(Note(n=3), None)


async def test_a_cancelled_sender_leaves_the_line_and_a_cancelled_reader_its_post(
    autojump_clock: trio.testing.MockClock,
) -> None:
    actor = Keeper()
    box = mailbox(actor)
    box.deliver_nowait(Note(n=0), None)
    box.deliver_nowait(Note(n=1), None)
    with trio.move_on_after(1):
        await box.deliver(Note(n=2), None)  # full: waits, then gives up
    async with trio.open_nursery() as nursery:
        nursery.start_soon(box.serve)
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()  # the idle reader, cancelled while it waits
    assert actor.seen == [0, 1]
    box.deliver_nowait(Note(n=3), None)  # no reader left waiting: queued
    assert len(box) == 1
