"""Two process actors exchange typed messages; prints the round-trip and one-way rates.

    python examples/ping_pong.py [--rounds 2000]

The master spawns a Ponger and a Pinger, each in its own worker process, and gives the
Pinger the Ponger's ref: the two workers then talk to each other (routed through the master).
"""

from __future__ import annotations

import argparse
import time

import trio

from actors import Actor, ActorRef, handler, open_system
from protocol import Message


class Ping(Message):
    seq: int


class Pong(Message):
    seq: int


class Count(Message):
    pass


class Counted(Message):
    value: int


class Play(Message):
    partner: ActorRef
    rounds: int


class Played(Message):
    round_trips_per_s: float
    tells_per_s: float


class Ponger(Actor):
    def __init__(self) -> None:
        self.seen = 0

    @handler
    async def ping(self, msg: Ping) -> Pong:
        self.seen += 1
        return Pong(seq=msg.seq)

    @handler
    async def count(self, msg: Count) -> Counted:
        return Counted(value=self.seen)


class Pinger(Actor):
    @handler
    async def play(self, msg: Play) -> Played:
        start = time.perf_counter()
        for seq in range(msg.rounds):
            pong = await msg.partner.ask(Ping(seq=seq), Pong)
            assert pong.seq == seq
        asks = msg.rounds / (time.perf_counter() - start)
        before = (await msg.partner.ask(Count(), Counted)).value
        start = time.perf_counter()
        for seq in range(msg.rounds * 10):
            await msg.partner.tell(Ping(seq=seq))
        after = (await msg.partner.ask(Count(), Counted)).value  # ordered after the tells
        tells = (after - before) / (time.perf_counter() - start)
        return Played(round_trips_per_s=asks, tells_per_s=tells)


async def main(rounds: int) -> None:
    async with open_system() as system:
        ponger = await system.spawn(Ponger, name="ponger", process=True)
        pinger = await system.spawn(Pinger, name="pinger", process=True)
        played = await pinger.ask(Play(partner=ponger, rounds=rounds), Played)
        print(
            f"ping-pong between two worker processes: {played.round_trips_per_s:,.0f} asks/s, "
            f"{played.tells_per_s:,.0f} tells/s"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2000)
    trio.run(main, parser.parse_args().rounds)
