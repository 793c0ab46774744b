"""Actors and messages the cluster tests use in every master (the same tags everywhere)."""

from __future__ import annotations

import os

import trio

from actors import Actor, ActorDown, ActorRef, handler
from protocol import Message


class Ping(Message, tag="tests.cluster.Ping"):
    n: int


class Pong(Message, tag="tests.cluster.Pong"):
    n: int
    pid: int = 0


class Fail(Message, tag="tests.cluster.Fail"):
    text: str


class Call(Message, tag="tests.cluster.Call"):
    """Tell ``back`` a Pong for each n in range(count)."""

    back: ActorRef
    count: int


class Seen(Message, tag="tests.cluster.Seen"):
    pass


class SeenSoFar(Message, tag="tests.cluster.SeenSoFar"):
    numbers: list[int]
    downs: list[ActorDown] = []


class Slow(Message, tag="tests.cluster.Slow"):
    seconds: float


class WhoAreYou(Message, tag="tests.cluster.WhoAreYou"):
    pass


class Me(Message, tag="tests.cluster.Me"):
    ref: ActorRef


class Echo(Actor):
    """Answers a Ping with a Pong; a Fail raises (it crashes); a Call tells back."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay

    @handler
    async def ping(self, msg: Ping) -> Pong:
        if self.delay:
            await trio.sleep(self.delay)
        return Pong(n=msg.n, pid=os.getpid())

    @handler
    async def slow(self, msg: Slow) -> Pong:
        await trio.sleep(msg.seconds)
        return Pong(n=-1, pid=os.getpid())

    @handler
    async def who(self, msg: WhoAreYou) -> Me:
        return Me(ref=self.ctx.ref)

    @handler
    async def fail(self, msg: Fail) -> Pong:
        raise ValueError(msg.text)

    @handler
    async def call(self, msg: Call) -> None:
        for n in range(msg.count):
            await msg.back.tell(Pong(n=n))


class WatchThis(Message, tag="tests.cluster.WatchThis"):
    target: ActorRef


class Watching(Message, tag="tests.cluster.Watching"):
    id: str


class Unwatch(Message, tag="tests.cluster.Unwatch"):
    id: str


class AskAlong(Message, tag="tests.cluster.AskAlong"):
    """Ask ``ctx.ref_to(path)`` a Ping of ``n``."""

    path: str
    n: int


class Relay(Actor):
    @handler
    async def along(self, msg: AskAlong) -> Pong:
        return await self.ctx.ref_to(msg.path).ask(Ping(n=msg.n), Pong)


class Collector(Actor):
    """Keeps what it is told (Pongs, ActorDowns) and shows it when asked."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.numbers: list[int] = []
        self.downs: list[ActorDown] = []

    @handler
    async def pong(self, msg: Pong) -> None:
        if self.delay:
            await trio.sleep(self.delay)
        self.numbers.append(msg.n)

    @handler
    async def down(self, msg: ActorDown) -> None:
        self.downs.append(msg)

    @handler
    async def watch(self, msg: WatchThis) -> Watching:
        return Watching(id=await self.ctx.monitor(msg.target))

    @handler
    async def unwatch(self, msg: Unwatch) -> None:
        await self.ctx.demonitor(msg.id)

    @handler
    async def seen(self, msg: Seen) -> SeenSoFar:
        return SeenSoFar(numbers=self.numbers, downs=self.downs)
