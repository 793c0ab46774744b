"""Cluster benchmark: tell throughput and ask round trips between two masters through a real
redis-server, beside raw coredis baselines measured in the same run.

Usage::

    python benchmarks/cluster.py [--quick] [--json] [--rounds R] [--tells N] [--asks M]

A throwaway redis-server (free loopback port, temporary directory, no persistence) carries
everything. Node ``b`` is a master in a process of its own (this script, ``--serve-node``);
node ``a`` is this process's ``open_system``. The raw baselines use a second process too
(``--serve-raw``), with coredis on trio as ours:

tell      ours: N ``await ref.tell(Ping)`` to ``sink@b``, then one ``ask(Count)`` to the same
          actor, which answers once every Ping before it was handled (FIFO per pair): N / the
          time from the first tell to that answer. raw: N ``XADD`` of a payload as large as
          our entries, pipelined 256 at a time, read by the other process with ``XREAD
          COUNT 1000 BLOCK``, which ``XADD``s to a done stream once it counted N; N / the time
          from the first XADD to the done entry, read with a blocking XREAD.
ask       ours: M sequential ``await ref.ask(Ping)`` to ``echo@b``. raw: M sequential
          ``XADD`` to a request stream, which the other process reads with a blocking XREAD
          and answers with an XADD to a reply stream, read here with a blocking XREAD.
          p50 / p99 (nearest rank) over the round trips of all rounds, pooled.

Targets: ours tell >= 0.5x the raw pipeline; ours ask p50 <= 1.5x the raw round trip.
Rounds are interleaved (ours, raw, ours, raw...); rates are the median over the rounds.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import machine_line, median, percentile, progress  # also puts ROOT on sys.path

from actors import Actor, NodeJoined, handler, open_system
from protocol import Message
from tests.redis_server import RedisServer

PAYLOAD = "x" * 16


class Ping(Message, tag="benchmarks.cluster.Ping"):
    seq: int
    payload: str


class Count(Message, tag="benchmarks.cluster.Count"):
    pass


class Counted(Message, tag="benchmarks.cluster.Counted"):
    value: int


class Sink(Actor):
    def __init__(self) -> None:
        self.count = 0

    @handler
    async def ping(self, msg: Ping) -> Ping:
        self.count += 1
        return msg

    @handler
    async def counted(self, msg: Count) -> Counted:
        return Counted(value=self.count)


# -- the other process ------------------------------------------------------------------------


async def serve_node(url: str) -> None:
    async with open_system(cluster=url, node="b", name="bench-cluster-b", control=False,
                           handle_signals=False) as system:
        await system.spawn(Sink, name="sink")
        await system.spawn(Sink, name="echo")
        print("ready", flush=True)
        await trio.to_thread.run_sync(sys.stdin.read)  # until the parent closes it


async def serve_raw(url: str, prefix: str) -> None:
    import coredis

    async with coredis.Redis.from_url(url, decode_responses=False) as client, \
            trio.open_nursery() as nursery:
        async def consume() -> None:
            last, counted, wanted = "$", 0, 0
            while True:
                found = await client.xread({f"{prefix}:tells": last}, count=1000, block=1000)
                for entry in (found or {}).get(f"{prefix}:tells".encode(), ()):
                    last = entry.identifier
                    data = entry.field_values[b"e"]
                    if data.startswith(b"start:"):
                        counted, wanted = 0, int(data[6:])
                        continue
                    counted += 1
                    if counted == wanted:
                        await client.xadd(f"{prefix}:done", {"e": b"done"})

        async def answer() -> None:
            last = "$"
            while True:
                found = await client.xread({f"{prefix}:requests": last}, count=100,
                                           block=1000)
                for entry in (found or {}).get(f"{prefix}:requests".encode(), ()):
                    last = entry.identifier
                    await client.xadd(f"{prefix}:replies", {"e": entry.field_values[b"e"]})

        nursery.start_soon(consume)
        nursery.start_soon(answer)
        print("ready", flush=True)
        await trio.to_thread.run_sync(sys.stdin.read)
        nursery.cancel_scope.cancel()


# -- this process ---------------------------------------------------------------------------


def entry_size() -> int:
    """How large one of our entries is, for the raw payload to match it."""
    from actors._cluster._wire import Entry, encode_body, pack

    body = encode_body(Ping(seq=123456, payload=PAYLOAD), ("a", 1796000000000000))
    return len(pack(Entry("tell", "@sink", 1796000000000000, "a", 1796000000000000, 0,
                          Ping.message_tag, body)))


async def ours_tell(system: Any, n: int) -> float:
    sink = system.ref("sink@b")
    before = (await sink.ask(Count(), Counted)).value
    started = time.perf_counter()
    for seq in range(n):
        await sink.tell(Ping(seq=seq, payload=PAYLOAD))
    counted = await sink.ask(Count(), Counted)
    elapsed = time.perf_counter() - started
    assert counted.value == before + n, (counted.value, before, n)
    return n / elapsed


async def ours_ask(system: Any, m: int) -> list[float]:
    echo = system.ref("echo@b")
    for seq in range(50):
        await echo.ask(Ping(seq=seq, payload=PAYLOAD))
    samples = []
    for seq in range(m):
        started = time.perf_counter()
        reply = await echo.ask(Ping(seq=seq, payload=PAYLOAD), Ping)
        samples.append(time.perf_counter() - started)
        assert reply.seq == seq
    return samples


async def raw_tell(client: Any, prefix: str, n: int, size: int) -> float:
    payload = b"y" * size
    done = f"{prefix}:done"
    last = (await client.xinfo_stream(done))["last-generated-id"] \
        if await client.exists([done]) else "0-0"
    await client.xadd(f"{prefix}:tells", {"e": f"start:{n}".encode()})
    started = time.perf_counter()
    for first in range(0, n, 256):
        async with client.pipeline(transaction=False) as pipe:
            for _ in range(first, min(n, first + 256)):
                pipe.xadd(f"{prefix}:tells", {"e": payload})
    while True:
        found = await client.xread({done: last}, count=1, block=10_000)
        if found:
            break
    elapsed = time.perf_counter() - started
    await client.delete([f"{prefix}:tells"])
    return n / elapsed


async def raw_ask(client: Any, prefix: str, m: int, size: int) -> list[float]:
    payload = b"y" * size
    replies = f"{prefix}:replies"
    await client.delete([replies])
    last = "0-0"  # not "$": a reply may come before the read that waits for it
    samples = []
    for i in range(m + 50):
        started = time.perf_counter()
        await client.xadd(f"{prefix}:requests", {"e": payload})
        found = None
        while not found:
            found = await client.xread({replies: last}, count=1, block=10_000)
        last = found[replies.encode()][0].identifier
        if i >= 50:
            samples.append(time.perf_counter() - started)
    await client.delete([f"{prefix}:requests", replies])
    return samples


def start(arguments: list[str]) -> subprocess.Popen[str]:
    process = subprocess.Popen([sys.executable, __file__, *arguments], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    line = process.stdout.readline()
    if line.strip() != "ready":
        process.kill()
        raise RuntimeError(f"{arguments[0]} did not start")
    return process


def stop(process: subprocess.Popen[str]) -> None:
    assert process.stdin is not None
    process.stdin.close()
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


async def measure(options: argparse.Namespace, url: str) -> dict[str, Any]:
    import coredis

    size = entry_size()
    results: dict[str, Any] = {"tell": {"ours": [], "raw": []},
                               "ask": {"ours": [], "raw": []}, "entry_bytes": size}
    cluster = f"{url}?prefix=bench{os.getpid()}"
    node_b = start(["--serve-node", cluster])
    raw = start(["--serve-raw", url, f"raw{os.getpid()}"])
    try:
        async with open_system(cluster=cluster, node="a", name="bench-cluster-a",
                               control=False, handle_signals=False) as system, \
                coredis.Redis.from_url(url, decode_responses=False) as client:
            async for event in system.events(history=True):  # b is there, or joining
                if isinstance(event, NodeJoined) and event.node == "b":
                    break
            for round_ in range(options.rounds):
                rate = await ours_tell(system, options.tells)
                results["tell"]["ours"].append(rate)
                progress(f"round {round_ + 1}: ours tell {rate:,.0f}/s")
                rate = await raw_tell(client, f"raw{os.getpid()}", options.tells, size)
                results["tell"]["raw"].append(rate)
                progress(f"round {round_ + 1}: raw XADD pipelined {rate:,.0f}/s")
                results["ask"]["ours"] += await ours_ask(system, options.asks)
                results["ask"]["raw"] += await raw_ask(client, f"raw{os.getpid()}",
                                                       options.asks, size)
                progress(f"round {round_ + 1}: asks done")
    finally:
        stop(node_b)
        stop(raw)
    return results


def table(results: dict[str, Any], options: argparse.Namespace) -> str:
    tell_ours = median(results["tell"]["ours"]) or 0.0
    tell_raw = median(results["tell"]["raw"]) or 0.0
    asks = {k: sorted(v) for k, v in results["ask"].items()}
    p = {k: (percentile(v, 50) * 1e3, percentile(v, 99) * 1e3) for k, v in asks.items()}
    tell_ratio = tell_ours / tell_raw
    ask_ratio = p["ours"][0] / p["raw"][0]
    lines = [
        machine_line(),
        f"{options.rounds} rounds, {options.tells} tells and {options.asks} asks a round, "
        f"entries of {results['entry_bytes']} bytes",
        "",
        "| tell, a to b | msgs/s (median) |",
        "|---|---|",
        f"| ours, `ref.tell` | {tell_ours:,.0f} |",
        f"| raw coredis, XADD pipelined 256 + XREAD | {tell_raw:,.0f} |",
        "",
        "| ask round trip, a to b and back | p50 ms | p99 ms |",
        "|---|---|---|",
        f"| ours, `ref.ask` | {p['ours'][0]:.3f} | {p['ours'][1]:.3f} |",
        f"| raw coredis, XADD + blocking XREAD each way | {p['raw'][0]:.3f} | "
        f"{p['raw'][1]:.3f} |",
        "",
        f"tell: ours / raw = {tell_ratio:.2f}x (target >= 0.5x: "
        f"{'met' if tell_ratio >= 0.5 else 'NOT met'})",
        f"ask p50: ours / raw = {ask_ratio:.2f}x (target <= 1.5x: "
        f"{'met' if ask_ratio <= 1.5 else 'NOT met'}); p99: "
        f"{p['ours'][1] / p['raw'][1]:.2f}x",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 rounds, fewer messages")
    parser.add_argument("--json", action="store_true", help="every figure, as JSON")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--tells", type=int, default=20_000)
    parser.add_argument("--asks", type=int, default=1_000)
    parser.add_argument("--serve-node", help=argparse.SUPPRESS)
    parser.add_argument("--serve-raw", nargs=2, help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.serve_node:
        trio.run(serve_node, options.serve_node)
        return
    if options.serve_raw:
        trio.run(serve_raw, *options.serve_raw)
        return
    if options.quick:
        options.rounds, options.tells, options.asks = 2, 5_000, 300
    with tempfile.TemporaryDirectory(prefix="redis-bench-") as directory:
        server = RedisServer(Path(directory), durable=False)
        server.start()
        try:
            results = trio.run(measure, options, server.url)
        finally:
            server.stop()
    print(json.dumps(results) if options.json else table(results, options))


if __name__ == "__main__":
    main()
