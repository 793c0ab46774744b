"""What a cell runs besides its handler, now that it has no nursery of its own: the tasks its
actor starts (in a nursery opened when it first starts one), and a kill that cancels the
handler at work, on a virtual clock."""

from __future__ import annotations

import math

import pytest
import trio
import trio.testing

from actors import Actor, ActorGone, handler
from tests.actors.running.test_lifecycle import Go, cell, ended


class Busy(Actor):
    """Starts a background task in its setup; its handler never returns."""

    def __init__(self) -> None:
        self.log: list[str] = []

    async def setup(self) -> None:
        self.ctx.start_soon(self.beside)  # before its nursery is open: it waits its turn

    async def beside(self) -> None:
        self.log.append("beside runs")
        try:
            await trio.sleep(math.inf)
        finally:
            self.log.append("beside ended")

    @handler
    async def go(self, message: Go) -> Go:
        self.log.append("handling")
        try:
            await trio.sleep(math.inf)
        finally:
            self.log.append("handler cancelled")
        return message


async def test_a_killed_cell_cancels_its_handler_and_its_tasks_before_it_ends(
    autojump_clock: trio.testing.MockClock,
) -> None:
    actor = Busy()
    async with trio.open_nursery() as nursery:
        busy, _ = cell(nursery, actor)
        await nursery.start(busy.run)
        outcome: list[BaseException] = []

        async def ask() -> None:
            try:
                await busy.ref.ask(Go())
            except ActorGone as exc:
                outcome.append(exc)

        nursery.start_soon(ask)
        await trio.testing.wait_all_tasks_blocked()
        assert actor.log == ["beside runs", "handling"]
        await busy.shutdown(1.0)  # the handler overstays: killed
        assert sorted(actor.log[2:]) == ["beside ended", "handler cancelled"]  # before done
    assert (ended(busy).kind, ended(busy).detail) == ("killed", "did not stop within 4.0 s")
    assert len(outcome) == 1
    assert "while handling this request" in str(outcome[0])


class Idle(Actor):
    @handler
    async def go(self, message: Go) -> Go:
        return message


async def test_an_idle_cell_opens_no_nursery_until_its_actor_starts_a_task(
    autojump_clock: trio.testing.MockClock,
) -> None:
    ran = trio.Event()

    async def task() -> None:
        ran.set()
        await trio.sleep(math.inf)

    async with trio.open_nursery() as nursery:
        idle, _ = cell(nursery, Idle())
        await nursery.start(idle.run)
        assert await idle.ref.ask(Go()) == Go()
        with pytest.raises(RuntimeError):
            idle.nursery  # noqa: B018 (none yet)
        idle.actor.ctx.start_soon(task)
        await ran.wait()
        assert isinstance(idle.nursery, trio.Nursery)
        idle.stop("itself")
        await idle.done.wait()  # (its task was cancelled, and waited for)
    assert ended(idle).kind == "normal"
