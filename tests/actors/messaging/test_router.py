"""Routing on its own: routers of three "processes" joined by real channels, in one process.

The master ("0") has two workers ("0.1" and "0.2") below it, each linked by a socketpair
channel, as the runtime links processes. Local actors are test doubles that record what
they are given, so every test runs in milliseconds.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field

import pytest
import trio
import trio.testing

from actors import (
    ActorExited,
    ActorGone,
    ActorNotFound,
    ActorReady,
    ActorRef,
    ActorStarted,
    Event,
    ExitReason,
    RemoteError,
)
from actors._base._control import EventReport, Failure, NameRegistered
from actors._base._events import EventBus
from actors._messaging._asks import Reply
from actors._messaging._link import Link
from actors._messaging._names import NameRegistry
from actors._messaging._router import Router
from protocol import Message, open_channel


class Ping(Message):
    n: int


class Pong(Message):
    n: int


@dataclass
class Box:
    """A Mailbox double: answers asks with Pong(n) (or ``answer``), keeps tells.

    While ``full`` is set, it takes nothing (deliver waits until it is cleared).
    """

    path: str
    address: str
    accepting: bool = True
    told: list[Message] = field(default_factory=list)
    failures: list[BaseException] = field(default_factory=list)
    answer: Callable[[Message, Reply], None] | None = None
    full: trio.Event | None = None
    inline: dict[type[Message], Callable[[Message], Message | None]] = field(
        default_factory=dict
    )

    async def deliver(self, message: Message, reply: Reply | None) -> None:
        while self.full is not None:
            await self.full.wait()
        self.deliver_nowait(message, reply)

    def deliver_nowait(self, message: Message, reply: Reply | None) -> None:
        if not self.accepting:
            raise ActorGone(f"{self.path} is not running")
        if self.full is not None:
            raise trio.WouldBlock
        if reply is None:
            self.told.append(message)
        elif self.answer is not None:
            self.answer(message, reply)
        else:
            assert isinstance(message, Ping)
            reply.send(Pong(n=message.n))

    def inline_handler(self, message: Message) -> Callable[[Message], Message | None] | None:
        return self.inline.get(type(message))

    def fail(self, exc: BaseException) -> None:
        self.failures.append(exc)


@dataclass
class Net:
    master: Router
    workers: dict[str, Router]
    down: dict[str, Link]  # the master's link to each worker
    up: dict[str, Link]  # each worker's link to the master
    events: EventBus

    def box(self, router: Router, path: str) -> Box:
        actor_id = router.next_actor_id()
        box = Box(path, f"{router.id}/{actor_id}")
        router.mailboxes.add(actor_id, box)
        router.names.register(path, box.address)
        return box


@asynccontextmanager
async def net(nursery: trio.Nursery) -> AsyncIterator[Net]:
    events = EventBus()
    master = Router("0", nursery, names=NameRegistry(restart_wait=1.0), events=events)
    workers: dict[str, Router] = {}
    down: dict[str, Link] = {}
    up: dict[str, Link] = {}
    async with AsyncExitStack() as stack:
        for index in (1, 2):
            a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
            ours = await stack.enter_async_context(open_channel(a))
            theirs = await stack.enter_async_context(open_channel(b))
            node = f"0.{index}"
            worker = workers[node] = Router(node, nursery, names=NameRegistry())
            down[node] = Link(node, ours, is_parent=False, subtree=f"w{index}")
            up[node] = Link("0", theirs, is_parent=True)
            master.add_child(down[node])
            worker.attach_parent(up[node])
            nursery.start_soon(master.pump, down[node])
            nursery.start_soon(worker.pump, up[node])
        yield Net(master, workers, down, up, events)
        nursery.cancel_scope.cancel()


async def test_tell_and_ask_cross_a_link_both_ways() -> None:
    async with trio.open_nursery() as nursery, net(nursery) as n:
        here = n.box(n.master, "here")
        there = n.box(n.workers["0.1"], "w1")
        await trio.testing.wait_all_tasks_blocked()
        to_there = ActorRef(n.master.outbox, address=there.address)
        assert await to_there.ask(Ping(n=1)) == Pong(n=1)
        await to_there.tell(Ping(n=2))
        to_here = ActorRef(n.workers["0.1"].outbox, address=here.address)
        assert await to_here.ask(Ping(n=3)) == Pong(n=3)
        await trio.testing.wait_all_tasks_blocked()
        assert there.told == [Ping(n=2)]


async def test_worker_to_worker_goes_through_the_master_by_path_and_address() -> None:
    async with trio.open_nursery() as nursery, net(nursery) as n:
        target = n.box(n.workers["0.2"], "w2")
        sender = n.workers["0.1"]
        await trio.testing.wait_all_tasks_blocked()  # the name reached the master
        assert n.master.names.get("w2") == target.address
        assert await ActorRef(sender.outbox, path="w2").ask(Ping(n=5)) == Pong(n=5)
        assert await ActorRef(sender.outbox, address=target.address).ask(Ping(n=6)) == Pong(n=6)
        for i in range(10):
            await ActorRef(sender.outbox, path="w2").tell(Ping(n=i))
        await trio.testing.wait_all_tasks_blocked()
        assert target.told == [Ping(n=i) for i in range(10)]  # in order


async def test_unknown_paths_and_dead_actors_fail_clearly() -> None:
    async with trio.open_nursery() as nursery, net(nursery) as n:
        sender = n.workers["0.1"]
        with pytest.raises(ActorNotFound, match="nobody"):
            await ActorRef(sender.outbox, path="nobody").ask(Ping(n=1))
        box = n.box(n.workers["0.2"], "w2")
        box.accepting = False
        with pytest.raises(ActorGone, match=r"w2 \(0\.2/1\) is stopping") as info:
            await ActorRef(sender.outbox, address=box.address).ask(Ping(n=1))
        assert not info.value.in_doubt  # refused before any handler saw it


async def test_a_link_going_down_fails_its_asks_in_doubt_and_drops_its_names() -> None:
    async with trio.open_nursery() as nursery, net(nursery) as n:
        box = n.box(n.workers["0.1"], "w1")
        box.answer = lambda message, reply: None  # never answers
        await trio.testing.wait_all_tasks_blocked()
        assert n.master.names.get("w1") == box.address
        failed: list[BaseException] = []

        async def ask() -> None:
            try:
                await ActorRef(n.master.outbox, path="w1").ask(Ping(n=1))
            except ActorGone as exc:
                failed.append(exc)

        nursery.start_soon(ask)
        await trio.testing.wait_all_tasks_blocked()
        n.up["0.1"].channel.close()  # the worker "dies"
        await trio.testing.wait_all_tasks_blocked()
        assert len(failed) == 1
        assert failed[0].in_doubt  # type: ignore[attr-defined]
        assert n.master.names.get("w1") is None
        with pytest.raises(ActorNotFound):
            await ActorRef(n.master.outbox, path="w1").tell(Ping(n=2))


async def test_a_send_to_a_restarting_path_waits_for_the_next_holder() -> None:
    async with trio.open_nursery() as nursery, net(nursery) as n:
        n.master.names.supervise("w1")  # a supervisor keeps it alive
        got: list[Message | None] = []

        async def ask() -> None:
            got.append(await ActorRef(n.workers["0.2"].outbox, path="w1").ask(Ping(n=7)))

        nursery.start_soon(ask)
        await trio.testing.wait_all_tasks_blocked()
        assert got == []  # held in the master while nobody holds the path
        n.box(n.workers["0.1"], "w1")
        await trio.testing.wait_all_tasks_blocked()
        assert got == [Pong(n=7)]


async def test_a_held_send_fails_once_restart_wait_is_over(autojump_clock: object) -> None:
    async with trio.open_nursery() as nursery, net(nursery) as n:
        n.master.names.supervise("w1")
        with pytest.raises(ActorGone, match="not back within"):
            await ActorRef(n.workers["0.2"].outbox, path="w1").ask(Ping(n=7))


async def test_a_frame_claiming_another_source_closes_that_link() -> None:
    async with trio.open_nursery() as nursery, net(nursery) as n:
        target = n.box(n.master, "m")
        from protocol import FrameKind, encode_message

        data, fds = encode_message(FrameKind.TELL, Ping(n=1), route=f"{target.address}|0.2")
        n.up["0.1"].channel.send_nowait(data, fds)  # 0.1 pretends to be 0.2
        await trio.testing.wait_all_tasks_blocked()
        assert n.down["0.1"].down
        assert "claiming to be from 0.2" in n.down["0.1"].down_reason
        assert not n.down["0.2"].down  # the others carry on
        assert target.told == []


async def test_a_worker_may_only_name_and_report_its_own_subtree(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.ERROR, logger="actors")
    async with trio.open_nursery() as nursery, net(nursery) as n:
        seen = n.events.subscribe()
        up = n.up["0.1"]  # the worker at path "w1"
        up.notify(NameRegistered(path="w2", address="0.1/1"))  # not its own
        up.notify(NameRegistered(path="w1/child", address="0.1/2"))  # its own subtree
        mine = ActorStarted(path="w1/child", pid=1)
        theirs = ActorStarted(path="root/other", pid=1)
        for event in (theirs, mine):
            up.notify(EventReport(tag=event.message_tag, body=event.model_dump_json()))
        await trio.testing.wait_all_tasks_blocked()
        assert n.master.names.get("w2") is None
        assert n.master.names.get("w1/child") == "0.1/2"
        published: list[Event] = []
        while True:
            try:
                published.append(seen.receive_nowait())
            except trio.WouldBlock:
                break
        assert [e.path for e in published] == ["w1/child"]
        assert not n.down["0.1"].down  # refused and logged; the link stays up
        assert "may not name 'w2'" in caplog.text
        assert "may not report" in caplog.text


async def test_a_remote_handler_failure_reaches_the_asker() -> None:
    async with trio.open_nursery() as nursery, net(nursery) as n:
        box = n.box(n.workers["0.1"], "w1")
        await trio.testing.wait_all_tasks_blocked()  # the name reached the master

        def failing(message: Message, reply: Reply) -> None:
            reply.fail(Failure.from_exception("remote", KeyError("boom"), actor="w1"))

        box.answer = failing
        with pytest.raises(RemoteError, match="boom") as info:
            await ActorRef(n.master.outbox, path="w1").ask(Ping(n=1))
        assert info.value.type_name == "KeyError"
        assert info.value.actor == "w1"


class Quick(Message):
    n: int


async def test_a_message_behind_a_full_mailbox_still_goes_to_its_inline_handler() -> None:
    # A full mailbox puts later messages from the link in a lane; those with an inline
    # handler (a hand-off, a probe, a state push) must still reach it, in their turn.
    async with trio.open_nursery() as nursery, net(nursery) as n:
        box = n.box(n.workers["0.1"], "w1")
        box.inline[Quick] = lambda message: Pong(n=message.n * 10)  # type: ignore[attr-defined]
        box.full = trio.Event()
        await trio.testing.wait_all_tasks_blocked()
        ref = ActorRef(n.master.outbox, address=box.address)
        await ref.tell(Ping(n=1))  # waits in the lane
        answers: list[Message | None] = []
        answered = trio.Event()

        async def ask_quick() -> None:
            answers.append(await ref.ask(Quick(n=2)))
            answered.set()

        nursery.start_soon(ask_quick)
        await trio.testing.wait_all_tasks_blocked()
        assert answers == []  # in its turn: after the tell ahead of it
        full, box.full = box.full, None
        full.set()
        with trio.fail_after(5):
            await answered.wait()
        assert answers == [Pong(n=20)]
        assert box.told == [Ping(n=1)]


async def test_a_dead_links_unnamed_instances_get_their_exits_once() -> None:
    async with trio.open_nursery() as nursery, net(nursery) as n:
        seen = n.events.subscribe()
        worker = n.workers["0.1"]
        n.box(worker, "w1/named")
        for event in (
            ActorStarted(path="w1/sup", pid=7),  # a supervisor: it never holds a name
            ActorStarted(path="w1/named", pid=7),
            ActorReady(path="w1/named", address="0.1/1", pid=7),
            ActorStarted(path="w1/gone", pid=7),
            ActorExited(path="w1/gone", pid=7, reason=ExitReason(kind="normal")),
        ):
            worker.publish(event)
        await trio.testing.wait_all_tasks_blocked()
        while True:
            try:
                seen.receive_nowait()
            except trio.WouldBlock:
                break
        n.up["0.1"].channel.close()  # the worker "dies"
        await trio.testing.wait_all_tasks_blocked()
        exits = []
        while True:
            try:
                event = seen.receive_nowait()
            except trio.WouldBlock:
                break
            if isinstance(event, ActorExited):
                exits.append((event.path, event.pid, event.reason.kind))
        assert sorted(exits) == [("w1/named", None, "killed"), ("w1/sup", 7, "killed")]


async def test_a_pools_path_spreads_sends_and_is_declared_up() -> None:
    async with trio.open_nursery() as nursery, net(nursery) as n:
        worker = n.workers["0.1"]
        worker.names.declare_pool("w1/pool")
        boxes = [n.box(worker, f"w1/pool/{i}") for i in range(2)]
        await trio.testing.wait_all_tasks_blocked()
        for sender in (worker, n.master, n.workers["0.2"]):
            pool = ActorRef(sender.outbox, path="w1/pool")
            for i in range(4):
                await pool.tell(Ping(n=i))
        await trio.testing.wait_all_tasks_blocked()
        assert [len(box.told) for box in boxes] == [6, 6]
        worker.names.drop_pool("w1/pool")
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(ActorNotFound):
            await ActorRef(n.master.outbox, path="w1/pool").tell(Ping(n=9))
