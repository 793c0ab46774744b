"""CPU per message of the message path, on both sides: what a tell and an ask cost.

Usage::

    python benchmarks/message_cpu.py [--rounds R]

Each round opens a system with ``ipc.py``'s ``Sink`` in a worker process (and its ``Asker``
in another), warms up, and measures, from ``/proc/<pid>/stat`` (user + system time, in
clock ticks), the CPU the master and the worker(s) spend on: 50 000 tells (then a count;
the worker's share apart too, the side that limits a flood),
4 000 sequential asks, 16 000 asks by 64 concurrent askers, and 4 000 asks from one worker to
the other (after the direct link is set up). Wall-clock rates on a shared machine move with
its load; CPU per message moves much less, so this is the figure to compare between two
versions of the code (run it from each checkout, alternating). Medians over the rounds.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ipc import PAYLOAD, Asker, AskMany, Count, Ping, Sink

from actors import ActorRef, open_system

TELLS, ASKS, CONCURRENT, ASKERS, W2W = 50_000, 4_000, 16_000, 64, 4_000


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _pid_named(name: str) -> int:
    """The worker whose process name (``ps -o comm``) is ``name``."""
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/comm") as handle:
                    if handle.read().strip() == name:
                        return int(entry)
            except OSError:
                continue
    raise LookupError(f"no process named {name}")


async def _one_round() -> dict[str, float]:
    async with open_system() as system:
        sink = await system.spawn(Sink, name="cpu-sink", process=True)
        asker = await system.spawn(Asker, name="cpu-asker", process=True)
        await sink.ask(Count())
        master, worker, other = os.getpid(), _pid_named("cpu-sink"), _pid_named("cpu-asker")

        def cpu(*pids: int) -> float:
            return sum(_cpu_seconds(pid) for pid in pids)

        for seq in range(3_000):
            await sink.tell(Ping(seq=seq, payload=PAYLOAD))
        for seq in range(500):
            await sink.ask(Ping(seq=seq, payload=PAYLOAD))
        await asker.ask(AskMany(target=sink, n=10, warmup=500))  # and the direct link
        out: dict[str, float] = {}

        start, in_worker = cpu(master, worker), cpu(worker)
        for seq in range(TELLS):
            await sink.tell(Ping(seq=seq, payload=PAYLOAD))
        await sink.ask(Count())
        out["tell"] = (cpu(master, worker) - start) / TELLS
        # The worker's share alone: in a flood it is the side that limits the rate.
        out["tell, worker only"] = (cpu(worker) - in_worker) / TELLS

        start = cpu(master, worker)
        for seq in range(ASKS):
            await sink.ask(Ping(seq=seq, payload=PAYLOAD))
        out["ask"] = (cpu(master, worker) - start) / ASKS

        async def ask_in_turn(ref: ActorRef, count: int) -> None:
            for seq in range(count):
                await ref.ask(Ping(seq=seq, payload=PAYLOAD))

        start = cpu(master, worker)
        async with trio.open_nursery() as nursery:
            for _ in range(ASKERS):
                nursery.start_soon(ask_in_turn, sink, CONCURRENT // ASKERS)
        out["64 askers"] = (cpu(master, worker) - start) / CONCURRENT

        start = cpu(master, worker, other)
        await asker.ask(AskMany(target=sink, n=W2W, warmup=0))
        out["worker->worker ask"] = (cpu(master, worker, other) - start) / W2W
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    rounds = parser.parse_args().rounds
    results = []
    for number in range(rounds):
        results.append(trio.run(_one_round))
        print(f"round {number + 1}/{rounds}: " + ", ".join(
            f"{name} {value * 1e6:.1f} us" for name, value in results[-1].items()
        ), file=sys.stderr)
    print(f"CPU per message, every process involved, median of {rounds} rounds")
    for name in results[0]:
        values = [result[name] * 1e6 for result in results]
        print(f"  {name:20s} {statistics.median(values):7.1f} us"
              f"   (rounds: {', '.join(f'{value:.1f}' for value in values)})")


if __name__ == "__main__":
    main()
