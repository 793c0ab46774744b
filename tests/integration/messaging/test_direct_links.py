"""Direct links between two workers: set up on first use, ordered across the switch,
bounded, and failing what was sent on them when the peer dies.

What shows a direct link from outside is the socket it adds to each worker: every test
counts the sockets a worker has open (``/proc/self/fd``) before and after.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
import trio

import actors._messaging._direct as direct
from actors import Actor, ActorGone, ActorRef, handler, open_system
from protocol import Message
from tests.waiting import TIMEOUT, eventually


class Item(Message):
    n: int


class Count(Message):
    pass


class Counted(Message):
    value: int


class Sockets(Message):
    pass


class Opened(Message):
    sockets: int
    pid: int


class Send(Message):
    target: ActorRef
    count: int
    first: int = 0  # the number of the first item


class Hang(Message):
    pass


class AskHanging(Message):
    target: ActorRef
    count: int


class Outcomes(Message):
    pass


class StopNow(Message):
    pass


class AskUntilGone(Message):
    target: ActorRef
    askers: int


class Outcome(Message):
    started: int
    gone_in_doubt: int
    other: list[str]
    ended: int


def _sockets() -> Opened:
    count = 0
    for name in os.listdir("/proc/self/fd"):
        try:
            count += os.readlink(f"/proc/self/fd/{name}").startswith("socket:")
        except OSError:
            continue
    return Opened(sockets=count, pid=os.getpid())


class Receiver(Actor):
    """Counts items, which must come in order; ``Hang`` never answers (after leaving a
    file named after its pid in ``signals``, to say it got one)."""

    mailbox_size = 8  # small: lanes open at the receiver while the switch happens

    def __init__(self, signals: str = "") -> None:
        self.count = 0
        self.signals = signals

    @handler
    async def item(self, msg: Item) -> Counted:
        assert msg.n == self.count, f"item {msg.n} came when {self.count} was due"
        self.count += 1
        return Counted(value=self.count)

    @handler
    async def counted(self, msg: Count) -> Counted:
        return Counted(value=self.count)

    @handler
    async def sockets(self, msg: Sockets) -> Opened:
        return _sockets()

    @handler
    async def stop_now(self, msg: StopNow) -> None:
        self.ctx.stop()

    @handler
    async def hang(self, msg: Hang) -> None:
        await trio.Path(self.signals, str(os.getpid())).touch()
        await trio.sleep_forever()


class Sender(Actor):
    """Tells and asks another worker's actor, from its own process."""

    def __init__(self) -> None:
        self.started = 0
        self.ended = 0
        self.gone_in_doubt = 0
        self.other: list[str] = []

    @handler
    async def send(self, msg: Send) -> Counted:
        # Tells and asks mixed: the first send asks for the link, the rest cross the switch.
        for n in range(msg.first, msg.first + msg.count):
            if n % 100 == 99:
                await msg.target.ask(Item(n=n), Counted)
            else:
                await msg.target.tell(Item(n=n))
        return await msg.target.ask(Count(), Counted)

    @handler
    async def sockets(self, msg: Sockets) -> Opened:
        return _sockets()

    @handler
    async def ask_hanging(self, msg: AskHanging) -> None:
        for _ in range(msg.count):
            self.ctx.start_soon(self._ask_hang, msg.target)

    async def _ask_hang(self, target: ActorRef) -> None:
        self.started += 1  # the ask leaves in the same step (no wait before it is sent)
        try:
            await target.ask(Hang())
        except ActorGone as exc:
            if exc.in_doubt:
                self.gone_in_doubt += 1
            else:
                self.other.append(f"ActorGone (not in doubt): {exc}")
        except Exception as exc:
            self.other.append(f"{type(exc).__name__}: {exc}")
        else:
            self.other.append("answered")

    @handler
    async def ask_until_gone(self, msg: AskUntilGone) -> None:
        for _ in range(msg.askers):
            self.ctx.start_soon(self._ask_until_gone, msg.target)

    async def _ask_until_gone(self, target: ActorRef) -> None:
        # Asking on after refusals: sends keep reaching the worker while it stops and after
        # it is gone, until each asker has heard "gone" 200 times.
        self.started += 1
        refused = 0
        try:
            while refused < 200:
                try:
                    await target.ask(Count(), Counted)
                except ActorGone as exc:
                    if exc.in_doubt:
                        self.gone_in_doubt += 1
                    refused += 1
        except Exception as exc:
            self.other.append(f"{type(exc).__name__}: {exc}")
        finally:
            self.ended += 1

    @handler
    async def outcomes(self, msg: Outcomes) -> Outcome:
        return Outcome(started=self.started, gone_in_doubt=self.gone_in_doubt,
                       other=self.other, ended=self.ended)


async def _sockets_of(ref: ActorRef) -> int:
    return (await ref.ask(Sockets(), Opened)).sockets


async def test_two_workers_switch_to_a_direct_link_and_keep_the_order() -> None:
    with trio.fail_after(TIMEOUT):
        async with open_system() as system:
            a = await system.spawn(Sender, name="a", process=True)
            b = await system.spawn(Receiver, name="b", process=True)
            before_a, before_b = await _sockets_of(a), await _sockets_of(b)
            # The receiver checks every item's place; the last count says none was lost.
            total = 20_000
            counted = await a.ask(Send(target=b, count=total), Counted)
            assert counted.value == total
            assert await _sockets_of(a) == before_a + 1  # one end of a socketpair each
            assert await _sockets_of(b) == before_b + 1
            # Once switched, more of it keeps to the direct link (no second link).
            assert (await a.ask(Send(target=b, count=0), Counted)).value == total
            assert await _sockets_of(a) == before_a + 1


async def test_a_worker_killed_with_asks_on_a_direct_link_fails_them_in_doubt(
    tmp_path: Path,
) -> None:
    with trio.fail_after(TIMEOUT):
        async with open_system() as system:
            a = await system.spawn(Sender, name="a", process=True)
            b = await system.spawn(Receiver, name="b", process=True, signals=str(tmp_path))
            before_a = await _sockets_of(a)
            await a.ask(Send(target=b, count=1), Counted)

            async def linked() -> bool:
                return await _sockets_of(a) == before_a + 1

            await eventually(linked, what="the direct link from a to b")
            b_pid = (await b.ask(Sockets(), Opened)).pid
            asks = 20
            await a.ask(AskHanging(target=b, count=asks))

            async def all_sent() -> bool:
                outcome = await a.ask(Outcomes(), Outcome)
                return outcome.started == asks and os.listdir(tmp_path) == [str(b_pid)]

            await eventually(all_sent, what="b handling the first of the asks")
            os.kill(b_pid, signal.SIGKILL)

            async def all_failed() -> bool:
                outcome = await a.ask(Outcomes(), Outcome)
                assert not outcome.other, outcome.other
                return outcome.gone_in_doubt == asks

            await eventually(all_failed, what="every ask to b failed in doubt")
            assert await _sockets_of(a) == before_a  # a's end of the dead link is closed


async def test_a_worker_that_stops_leaves_nothing_in_doubt_on_its_direct_links() -> None:
    # A stop is orderly: what was sent to the worker before it said it is stopping is
    # answered (or refused) by it, over the direct link as through the master.
    with trio.fail_after(TIMEOUT):
        async with open_system() as system:
            a = await system.spawn(Sender, name="a", process=True)
            b = await system.spawn(Receiver, name="b", process=True)
            before_a = await _sockets_of(a)
            await a.ask(Send(target=b, count=1), Counted)

            async def linked() -> bool:
                return await _sockets_of(a) == before_a + 1

            await eventually(linked, what="the direct link from a to b")
            askers = 16
            await a.ask(AskUntilGone(target=b, askers=askers))
            await b.tell(StopNow())

            async def all_ended() -> bool:
                return (await a.ask(Outcomes(), Outcome)).ended == askers

            await eventually(all_ended, what="every asker of b ended")
            outcome = await a.ask(Outcomes(), Outcome)
            assert outcome.other == []
            assert outcome.gone_in_doubt == 0


async def test_direct_links_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    # The master grants them: past the bound, workers go on talking through it.
    monkeypatch.setattr(direct, "DIRECT_LINKS", 1)
    with trio.fail_after(TIMEOUT):
        async with open_system() as system:
            a = await system.spawn(Sender, name="a", process=True)
            b = await system.spawn(Receiver, name="b", process=True)
            c = await system.spawn(Receiver, name="c", process=True)
            before_a = await _sockets_of(a)
            for first, target in ((0, b), (0, c), (300, b), (300, c)):
                await a.ask(Send(target=target, count=300, first=first), Counted)
            assert (await b.ask(Count(), Counted)).value == 600
            assert (await c.ask(Count(), Counted)).value == 600
            assert await _sockets_of(a) == before_a + 1
