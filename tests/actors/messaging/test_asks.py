"""A pending ask on its own: its asker wakes with the answer, however the answer and the
wait meet, and a cancelled asker leaves nothing behind for the answer to wake."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from actors._base._errors import ActorGone
from actors._messaging._asks import Pending
from protocol import Message


class Answer(Message):
    n: int


async def test_the_asker_wakes_with_the_answer() -> None:
    pending = Pending(None)
    got: list[Message | None] = []

    async def asker() -> None:
        await pending.wait()
        got.append(pending.result())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(asker)
        await trio.testing.wait_all_tasks_blocked()
        assert got == []
        pending.resolve(Answer(n=1))
        pending.resolve(Answer(n=2))  # only the first answer counts
    assert got == [Answer(n=1)]


async def test_an_answer_before_the_wait_is_taken_at_once() -> None:
    answered: list[tuple[Message | None, BaseException | None]] = []
    pending = Pending(None, lambda value, error: answered.append((value, error)))
    gone = ActorGone("gone")
    pending.fail(gone)
    with trio.fail_after(5):
        await pending.wait()
    with pytest.raises(ActorGone):
        pending.result()
    assert answered == [(None, gone)]


async def test_a_cancelled_asker_is_not_woken_by_a_late_answer() -> None:
    pending = Pending(None)
    with trio.move_on_after(0.01) as scope:
        await pending.wait()
    assert scope.cancelled_caught
    pending.resolve(Answer(n=1))  # nobody waits: nothing is rescheduled
    assert pending.result() == Answer(n=1)
    await trio.testing.wait_all_tasks_blocked()
