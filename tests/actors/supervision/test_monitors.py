"""Monitors between in-process actors, on a virtual clock: ActorDown once per watched
instance, noproc, demonitor, a watcher without a handler, a watcher that ends, and
``system.monitor`` from the master."""

from __future__ import annotations

import logging

import pytest
import trio
import trio.testing

from actors import (
    Actor,
    ActorDown,
    ActorExited,
    ActorRef,
    RemoteError,
    handler,
    open_system,
    supervisor,
    worker,
)
from protocol import Message
from tests.events import next_event


class Crash(Message):
    pass


class Watch(Message):
    target: ActorRef


class Watching(Message):
    id: str


class Unwatch(Message):
    id: str


class Downs(Message):
    pass


class Seen(Message):
    downs: list[ActorDown]


class Member(Actor):
    @handler
    async def crash(self, msg: Crash) -> None:
        raise RuntimeError("asked to crash")


class Watcher(Actor):
    def __init__(self) -> None:
        self.downs: list[ActorDown] = []

    @handler
    async def watch(self, msg: Watch) -> Watching:
        return Watching(id=await self.ctx.monitor(msg.target))

    @handler
    async def unwatch(self, msg: Unwatch) -> None:
        await self.ctx.demonitor(msg.id)

    @handler
    async def down(self, msg: ActorDown) -> None:
        self.downs.append(msg)

    @handler
    async def seen(self, msg: Downs) -> Seen:
        return Seen(downs=self.downs)


async def downs_of(watcher: ActorRef, count: int) -> list[ActorDown]:
    """The ActorDown messages ``watcher`` got, once it got ``count`` (the clock is
    virtual: waiting costs nothing)."""
    while True:
        seen = await watcher.ask(Downs(), Seen)
        if len(seen.downs) >= count:
            return seen.downs
        await trio.sleep(0.01)


def tree() -> object:
    return supervisor("root", max_restarts=10, children=[
        worker(Member, name="m"), worker(Watcher, name="w"),
    ])


async def test_a_monitor_fires_once_for_the_instance_it_watches(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_system(tree()) as system:  # type: ignore[arg-type]
        events = system.events()
        w, m = system.ref("root/w"), system.ref("root/m")
        await w.ask(Watch(target=m), Watching)
        with pytest.raises(RemoteError):
            await m.ask(Crash())
        [down] = await downs_of(w, 1)
        assert down.ref == m
        assert down.reason == "crashed"
        assert down.exit is not None
        assert down.exit.error_type == "RuntimeError"
        # The restarted instance is another one: nobody watches it.
        await next_event(events, ActorExited, "root/m")
        with pytest.raises(RemoteError):
            await m.ask(Crash())
        await next_event(events, ActorExited, "root/m")
        await trio.testing.wait_all_tasks_blocked()
        assert len(await downs_of(w, 1)) == 1


async def test_monitoring_what_is_gone_says_noproc_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_system(tree()) as system:  # type: ignore[arg-type]
        w = system.ref("root/w")
        await w.ask(Watch(target=system.ref("nobody")), Watching)
        [down] = await downs_of(w, 1)
        assert (down.reason, down.exit, down.ref.path) == ("noproc", None, "nobody")


async def test_demonitor_and_a_dead_watcher_leave_nothing_behind(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_system(tree()) as system:  # type: ignore[arg-type]
        events = system.events()
        w, m = system.ref("root/w"), system.ref("root/m")
        watching = await w.ask(Watch(target=m), Watching)
        await w.ask(Unwatch(id=watching.id))
        with pytest.raises(RemoteError):
            await m.ask(Crash())
        await next_event(events, ActorExited, "root/m")
        await trio.testing.wait_all_tasks_blocked()
        assert await downs_of(w, 0) == []
        # A watcher that ends loses its monitors (its successor is another instance).
        await w.ask(Watch(target=m), Watching)
        await system.terminate_child("root/w")
        await trio.testing.wait_all_tasks_blocked()
        assert system._monitors._by_id == {}


async def test_a_watcher_without_a_handler_logs_and_drops_it(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture,
) -> None:
    class Plain(Actor):
        @handler
        async def watch(self, msg: Watch) -> Watching:
            return Watching(id=await self.ctx.monitor(msg.target))

        @handler
        async def seen(self, msg: Downs) -> Seen:
            return Seen(downs=[])

    async with open_system() as system:
        plain = await system.spawn(Plain, name="plain")
        with caplog.at_level(logging.WARNING, logger="actors"):
            await plain.ask(Watch(target=system.ref("nobody")), Watching)
            await trio.testing.wait_all_tasks_blocked()
        assert "dropped a message" in caplog.text
        assert await plain.ask(Downs(), Seen)  # it runs on


async def test_the_master_monitors_through_a_channel(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_system(tree()) as system:  # type: ignore[arg-type]
        m = system.ref("root/m")
        async with system.monitor(m) as down:
            await system.terminate_child("root/m")
            got = await down.receive()
        assert (got.ref, got.reason) == (m, "shutdown")
        async with system.monitor(m) as down:  # terminated: nobody holds the path
            assert (await down.receive()).reason == "noproc"
        assert system._monitors._by_id == {}
