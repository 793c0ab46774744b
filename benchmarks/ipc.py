"""IPC benchmark: our actor runtime against two anchors, in one run.

Usage::

    python benchmarks/ipc.py [--quick] [--json] [--impl ours,node,mp] [--rounds R]
                             [--phases oneway,pingpong,concurrent,w2w] [--oneway N]
                             [--pingpong M] [--warmup W] [--concurrent K] [--askers A]
                             [--w2w J]

A small message (an int ``seq`` and a 16-character string ``payload``) goes from a parent
process to a child process, for three implementations:

``ours``  this runtime: ``ref.tell(Ping)`` / ``ref.ask(Ping)`` to a ``Sink`` actor spawned with
          ``process=True``; delivery is confirmed by ``ref.ask(Count())``;
``node``  Node.js ``child_process.fork()`` + ``process.send()`` with the default JSON
          serialization, parent and child both in Node (``benchmarks/node/``);
``mp``    Python ``multiprocessing.Pipe()`` to a ``multiprocessing.Process`` (spawn context)
          whose loop is ``conn.recv()`` / ``conn.send()``; messages are plain dicts (pickled).

Each implementation is measured the same way, in every round, with a fresh child:

one-way     N messages sent back to back, then a count request; the clock stops when the
            child's reply confirms it received all N (so queued-but-undelivered messages do
            not count);
ping-pong   after a warm-up, M sequential round trips (send, await the echo, send the next),
            each one timed; reports round trips/s and the p50 / p99 latency in microseconds;
concurrent  A (64) askers, each asking in a loop and waiting for its own reply before its
            next ask, K asks in all (K / A each): 64 trio tasks doing ``ref.ask(Ping)``, 64
            async loops in Node with replies matched by a request id, 64 threads on one
            ``Pipe`` with request ids and a reader thread that dispatches the replies;
            after min(K, 10 W) untimed asks made the same way, asks/s over the whole
            phase and the p50 / p99 latency of one ask;
w2w         (ours only) worker to worker: an ``Asker`` actor A in one worker process asks
            the ``Sink`` B in another J times in sequence, timed inside A and reported
            back in a reply, beside J sequential asks from the master to the same B, in the
            same round: in W2W_BLOCKS (10) alternating blocks of J / 10 asks each way (which
            side goes first alternates by round), so that a burst of load on the machine
            hits both sides alike.

Rounds are interleaved (round 1 of every implementation, then round 2, ...), so drift in the
load of a shared machine hits all of them alike, and each figure is the MEDIAN over the rounds.
The "±" next to a figure is half the min-max range over the rounds, relative to the median.
The targets of the message path (DESIGN.md, "Performance targets") are printed as met / NOT
met, never asserted; the exit status is 1 only when an implementation failed a round.

The Actor and Message classes live at module top level, and the entry point is guarded by
``if __name__ == "__main__"``: the runtime's worker process (and multiprocessing's spawn child)
imports this file under another module name.
"""

from __future__ import annotations

import contextlib
import json
import math
import multiprocessing
import os
import queue
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import trio

# Wherever this runs from (or as `python -m benchmarks.ipc`), `_harness` is next to it.
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import (  # also puts the repository root on sys.path, for `actors`
    Outcome,
    Verdict,
    arguments,
    check_available,
    chosen,
    interleave,
    machine,
    machine_line,
    median,
    node_json,
    percentile,
    progress,
    ratio,
    spread,
    times,
    with_spread,
)

_HERE = Path(__file__).resolve().parent

PAYLOAD = "0123456789abcdef"  # 16 bytes: the small message is (seq: int, payload: this)
NODE_PARENT = _HERE / "node" / "ipc_parent.js"
IMPLS = ("ours", "node", "mp")
PHASES = ("oneway", "pingpong", "concurrent", "w2w")
W2W_BLOCKS = 10  # the worker-to-worker phase alternates this many blocks of asks each way

# Targets of the message path (DESIGN.md, "Performance targets"): printed, never asserted.
TARGET_TELL_VS_NODE = 1.5  # tell one-way rate / Node's process.send one-way
TARGET_ASK_VS_NODE = 1.0  # sequential ask round trips / Node's ping-pong
TARGET_CONCURRENT_VS_NODE = 1.5  # 64 concurrent askers' asks/s / Node's 64 outstanding requests
TARGET_W2W_VS_MASTER = 0.9  # worker-to-worker asks/s / master-to-worker asks/s, same round

# --------------------------------------------------------------------------------------------
# OUR runtime: messages and the actor. The runtime may be missing or broken while it is being
# written; the anchors still run, and the "ours" column says why it is empty.
# --------------------------------------------------------------------------------------------

try:
    from actors import Actor, ActorRef, handler, open_system
    from protocol import Message
except Exception as exc:
    OURS_IMPORT_ERROR: str | None = f"{type(exc).__name__}: {exc}"
else:
    OURS_IMPORT_ERROR = None

    class Ping(Message):
        seq: int
        payload: str

    class Count(Message):
        pass

    class Counted(Message):
        value: int

    class Sink(Actor):
        def __init__(self) -> None:
            self.count = 0

        @handler
        async def on_ping(self, msg: Ping) -> Ping:
            self.count += 1
            return msg

        @handler
        async def on_count(self, msg: Count) -> Counted:
            return Counted(value=self.count)

    class AskMany(Message):
        """To an Asker: ask ``target`` ``warmup`` times untimed, then ``n`` times timed."""

        target: ActorRef
        n: int
        warmup: int

    class Asked(Message):
        """An Asker's timings: the whole loop and each ask, in its own process's clock."""

        total_ns: int
        latencies_ns: list[int]
        sent: int  # asks that reached the target (checked against its count)

    class Asker(Actor):
        """Process actor A of the worker-to-worker phase: asks B from its own process."""

        @handler
        async def ask_many(self, msg: AskMany) -> Asked:
            target = msg.target
            for seq in range(msg.warmup):
                await _checked_ask(target, seq)
            latencies = [0] * msg.n
            t0 = time.perf_counter_ns()
            for seq in range(msg.n):
                start = time.perf_counter_ns()
                await _checked_ask(target, seq)
                latencies[seq] = time.perf_counter_ns() - start
            total = time.perf_counter_ns() - t0
            return Asked(total_ns=total, latencies_ns=latencies, sent=msg.warmup + msg.n)

    async def _checked_ask(ref: ActorRef, seq: int) -> None:
        reply = await ref.ask(Ping(seq=seq, payload=PAYLOAD))
        if not isinstance(reply, Ping) or reply.seq != seq:
            raise Verdict(f"reply {reply!r} to ask {seq}")


# --------------------------------------------------------------------------------------------
# Configuration and results
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Config:
    rounds: int
    phases: tuple[str, ...]  # which of PHASES each round measures
    oneway: int  # messages per one-way round
    pingpong: int  # timed round trips per ping-pong round
    warmup: int  # untimed round trips before the ping-pong (and min(oneway, 5000) tells)
    concurrent: int  # timed asks per concurrent phase, all askers together
    askers: int  # concurrent askers
    w2w: int  # timed asks per direction of the worker-to-worker phase
    budget_s: float  # a phase predicted (from its warm-up) to take longer is shortened
    timeout_s: float  # an implementation's round taking longer than this is an error

    @property
    def warm_tells(self) -> int:
        return min(self.oneway, 5_000) if "oneway" in self.phases else 0

    @property
    def concurrent_warmup(self) -> int:
        """Untimed asks before the concurrent phase, made the same way (Node's JIT needs
        thousands before its figure settles; 500 left it at ~60% of its speed)."""
        return min(self.concurrent, 10 * self.warmup)

    def per_asker(self, total: int) -> int:
        """Asks per asker for about ``total`` asks in all (every asker does as many)."""
        return max(1, math.ceil(total / self.askers))


@dataclass(frozen=True)
class Timed:
    """One timed phase: n operations in s seconds, and each one's latency (if timed)."""

    n: int
    s: float
    latencies_ns: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class Round:
    oneway: Timed | None = None
    pingpong: Timed | None = None
    concurrent: Timed | None = None
    w2w_master: Timed | None = None  # master -> B
    w2w: Timed | None = None  # A (a worker) -> B (another worker), timed inside A


@dataclass(frozen=True)
class RoundFigures:
    """One round's figures; None for a phase the implementation did not run."""

    oneway_n: int | None = None
    oneway_per_s: float | None = None
    pingpong_n: int | None = None
    pingpong_per_s: float | None = None
    p50_us: float | None = None
    p99_us: float | None = None
    concurrent_n: int | None = None
    concurrent_per_s: float | None = None
    concurrent_p50_us: float | None = None
    concurrent_p99_us: float | None = None
    w2w_master_n: int | None = None
    w2w_master_per_s: float | None = None
    w2w_master_p50_us: float | None = None
    w2w_master_p99_us: float | None = None
    w2w_n: int | None = None
    w2w_per_s: float | None = None
    w2w_p50_us: float | None = None
    w2w_p99_us: float | None = None

    @classmethod
    def of(cls, r: Round) -> RoundFigures:
        figures: dict[str, float | int | None] = {}
        if r.oneway is not None:
            figures |= {"oneway_n": r.oneway.n, "oneway_per_s": r.oneway.n / r.oneway.s}
        if r.pingpong is not None:
            figures |= {"pingpong_n": r.pingpong.n, "pingpong_per_s": r.pingpong.n / r.pingpong.s}
            figures |= _percentiles(r.pingpong, "")
        for name in ("concurrent", "w2w_master", "w2w"):
            phase: Timed | None = getattr(r, name)
            if phase is not None:
                figures |= {f"{name}_n": phase.n, f"{name}_per_s": phase.n / phase.s}
                figures |= _percentiles(phase, f"{name}_")
        return cls(**figures)  # type: ignore[arg-type]


def _percentiles(phase: Timed, prefix: str) -> dict[str, float | int | None]:
    lat = sorted(phase.latencies_ns)
    return {
        f"{prefix}p50_us": percentile(lat, 50) / 1e3,
        f"{prefix}p99_us": percentile(lat, 99) / 1e3,
    }


METRICS = tuple(f.name for f in fields(RoundFigures) if not f.name.endswith("_n"))


def capped(n: int, warm_n: int, warm_s: float, budget_s: float) -> int:
    """Shorten a phase of n operations whose warm-up rate predicts more than budget_s."""
    if warm_n <= 0 or warm_s <= 0:
        return n
    return min(n, max(1_000, int(warm_n / warm_s * budget_s)))


# --------------------------------------------------------------------------------------------
# (a) OUR runtime
# --------------------------------------------------------------------------------------------


async def _ours_round(cfg: Config, index: int) -> Round:
    phases = cfg.phases
    # A name of its own: another checkout running this script at the same time (same user,
    # same default name "ipc") would otherwise make open_system raise SystemNameTaken.
    async with open_system(name=f"bench-ipc-{os.getpid()}") as system:
        ref = await system.spawn(Sink, name="sink", process=True)
        asker = None
        if "w2w" in phases:
            asker = await system.spawn(Asker, name="asker", process=True)
        sent = 0

        async def tells(n: int) -> None:
            nonlocal sent
            for seq in range(n):
                await ref.tell(Ping(seq=seq, payload=PAYLOAD))
            sent += n

        async def ask(seq: int) -> None:
            nonlocal sent
            await _checked_ask(ref, seq)
            sent += 1

        async def count() -> None:
            counted = await ref.ask(Count())
            if not isinstance(counted, Counted) or counted.value != sent:
                raise Verdict(f"sink counted {counted!r}, expected {sent}")

        async def sequential(n: int) -> Timed:
            latencies = [0] * n
            t0 = time.perf_counter()
            for seq in range(n):
                start = time.perf_counter_ns()
                await ask(seq)
                latencies[seq] = time.perf_counter_ns() - start
            return Timed(n, time.perf_counter() - t0, latencies)

        def joined(blocks: list[Timed]) -> Timed:
            latencies = [x for b in blocks for x in b.latencies_ns]
            return Timed(len(latencies), sum(b.s for b in blocks), latencies)

        async def concurrently(each: int, latencies: list[int] | None) -> None:
            async def one_asker() -> None:
                for seq in range(each):
                    start = time.perf_counter_ns()
                    await ask(seq)
                    if latencies is not None:
                        latencies.append(time.perf_counter_ns() - start)

            async with trio.open_nursery() as nursery:
                for _ in range(cfg.askers):
                    nursery.start_soon(one_asker)

        async def from_worker(n: int, warmup: int) -> Timed:
            nonlocal sent
            assert asker is not None
            done = await asker.ask(AskMany(target=ref, n=n, warmup=warmup), Asked)
            sent += done.sent
            if len(done.latencies_ns) != n:
                raise Verdict(f"the asker timed {len(done.latencies_ns)} asks, not {n}")
            return Timed(n, done.total_ns / 1e9, done.latencies_ns)

        round_ = Round()
        t0 = time.perf_counter()
        await tells(cfg.warm_tells)
        await count()
        oneway_n = capped(cfg.oneway, cfg.warm_tells, time.perf_counter() - t0, cfg.budget_s)
        t0 = time.perf_counter()
        for seq in range(cfg.warmup):
            await ask(seq)
        warm_s = time.perf_counter() - t0
        pingpong_n = capped(cfg.pingpong, cfg.warmup, warm_s, cfg.budget_s)
        w2w_n = capped(cfg.w2w, cfg.warmup, warm_s, cfg.budget_s / 2)

        if "oneway" in phases:
            t0 = time.perf_counter()
            await tells(oneway_n)
            await count()
            round_ = replace(round_, oneway=Timed(oneway_n, time.perf_counter() - t0))
        if "pingpong" in phases:
            round_ = replace(round_, pingpong=await sequential(pingpong_n))
        if "concurrent" in phases:
            warm_each = cfg.per_asker(cfg.concurrent_warmup)
            t0 = time.perf_counter()
            await concurrently(warm_each, None)
            each = capped(
                cfg.per_asker(cfg.concurrent), warm_each, time.perf_counter() - t0, cfg.budget_s
            )
            latencies: list[int] = []
            t0 = time.perf_counter()
            await concurrently(each, latencies)
            timed = Timed(len(latencies), time.perf_counter() - t0, latencies)
            round_ = replace(round_, concurrent=timed)
        if "w2w" in phases:
            # Blocks of each direction in turn, the first alternating by round; the asker
            # warms up its own path (the master's was warmed above).
            await from_worker(0, cfg.warmup)
            block = max(1, w2w_n // W2W_BLOCKS)
            masters: list[Timed] = []
            workers: list[Timed] = []
            for _ in range(max(1, w2w_n // block)):
                if index % 2 == 0:
                    masters.append(await sequential(block))
                    workers.append(await from_worker(block, 0))
                else:
                    workers.append(await from_worker(block, 0))
                    masters.append(await sequential(block))
            round_ = replace(round_, w2w_master=joined(masters), w2w=joined(workers))
        await count()
    return round_


def run_ours(cfg: Config, index: int) -> Round:
    async def guarded() -> Round:
        with trio.fail_after(cfg.timeout_s):
            return await _ours_round(cfg, index)

    return trio.run(guarded)


# --------------------------------------------------------------------------------------------
# (b) Node: child_process.fork + process.send, measured node-to-node by node/ipc_parent.js
# --------------------------------------------------------------------------------------------


def run_node(cfg: Config, _: int) -> Round:
    phases = cfg.phases
    args = [
        "--rounds",
        "1",
        "--oneway",
        str(cfg.oneway if "oneway" in phases else 0),
        "--pingpong",
        str(cfg.pingpong if "pingpong" in phases else 0),
        "--warmup",
        str(cfg.warmup),
        "--payload",
        PAYLOAD,
        "--concurrent",
        str(cfg.per_asker(cfg.concurrent) * cfg.askers if "concurrent" in phases else 0),
        "--askers",
        str(cfg.askers),
        "--concurrent-warmup",
        str(cfg.per_asker(cfg.concurrent_warmup) * cfg.askers),
    ]
    (r,) = node_json(NODE_PARENT, args, cfg.timeout_s)["rounds"]
    return Round(
        oneway=Timed(r["oneway_n"], r["oneway_s"]) if "oneway" in phases else None,
        pingpong=(
            Timed(r["pingpong_n"], r["pingpong_s"], r["latencies_ns"])
            if "pingpong" in phases
            else None
        ),
        concurrent=(
            Timed(r["concurrent_n"], r["concurrent_s"], r["concurrent_latencies_ns"])
            if "concurrent" in phases
            else None
        ),
    )


# --------------------------------------------------------------------------------------------
# (c) Python multiprocessing.Pipe
# --------------------------------------------------------------------------------------------


def _mp_child(conn: Connection) -> None:
    """The mp anchor's child: the same protocol as node/ipc_child.js, with pickled dicts."""
    count = 0
    while True:
        msg = conn.recv()
        kind = msg["kind"]
        if kind == "tell":
            count += 1
        elif kind == "ask":
            count += 1
            conn.send(msg)
        elif kind == "count":
            conn.send({"kind": "counted", "value": count})
        else:  # "stop"
            break
    conn.close()


def _mp_concurrent(
    conn: Connection,
    askers: int,
    each: int,
    deadline: float,
    latencies: list[int] | None,
    stop_child: Callable[[], None],
) -> int:
    """The fair multiprocessing anchor of 64 askers: one Pipe, one reader thread.

    ``askers`` threads each send ``each`` asks, one at a time, every one with a request id,
    under one send lock (a Connection is not safe for concurrent writers), and wait on their
    own queue; the reader thread receives every reply and puts it in the queue registered
    for its id. This is what a thread-per-caller client of one connection does (and what
    ``ref.ask`` does with tasks). Returns the number of asks made. On a failure the child is
    stopped (``stop_child``), so that the reader, blocked in ``recv``, ends at its EOF.
    """
    send_lock = threading.Lock()
    waiting: dict[int, queue.SimpleQueue[Any]] = {}
    failures: list[BaseException] = []
    start = threading.Barrier(askers + 1)
    expected = askers * each

    def reader() -> None:
        try:
            for _ in range(expected):
                reply = conn.recv()
                waiting.pop(reply["id"]).put(reply)
        except BaseException as exc:  # the child died: wake every asker with the error
            failures.append(exc)
            for q in list(waiting.values()):
                q.put(exc)

    def asker(index: int) -> None:
        mine: queue.SimpleQueue[Any] = queue.SimpleQueue()
        own: list[int] = []
        try:
            start.wait()
            for seq in range(each):
                request_id = index * each + seq
                t0 = time.perf_counter_ns()
                waiting[request_id] = mine
                with send_lock:
                    conn.send({"kind": "ask", "id": request_id, "seq": seq, "payload": PAYLOAD})
                try:
                    reply = mine.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    raise TimeoutError("the mp round ran out of time waiting for a reply") from None
                if isinstance(reply, BaseException):
                    raise reply
                own.append(time.perf_counter_ns() - t0)
                if reply["seq"] != seq:
                    raise Verdict(f"reply {reply!r} to ask {seq} (id {request_id})")
        except BaseException as exc:
            failures.append(exc)
            start.abort()
        if latencies is not None:
            latencies.extend(own)  # list.extend is atomic under the GIL

    threads = [threading.Thread(target=asker, args=(i,), daemon=True) for i in range(askers)]
    read = threading.Thread(target=reader, daemon=True)
    read.start()
    for t in threads:
        t.start()
    with contextlib.suppress(threading.BrokenBarrierError):
        start.wait()
    for t in threads:
        t.join()
    if failures:
        stop_child()  # the reader may wait for replies that will never come: EOF ends it
        read.join()
        raise failures[0]
    read.join()
    return expected


def run_mp(cfg: Config, _: int) -> Round:
    ctx = multiprocessing.get_context("spawn")
    conn, child_conn = ctx.Pipe()
    proc = ctx.Process(target=_mp_child, args=(child_conn,), name="ipc-mp-child", daemon=True)
    proc.start()
    child_conn.close()  # so that recv() raises EOFError, not hangs, if the child dies
    deadline = time.monotonic() + cfg.timeout_s
    sent = 0

    def tells(n: int) -> None:
        nonlocal sent
        for seq in range(n):
            conn.send({"kind": "tell", "seq": seq, "payload": PAYLOAD})
        sent += n

    def ask(seq: int) -> None:
        nonlocal sent
        conn.send({"kind": "ask", "seq": seq, "payload": PAYLOAD})
        sent += 1
        reply = conn.recv()
        if reply["seq"] != seq:
            raise Verdict(f"reply {reply!r} to ask {seq}")

    def count() -> None:
        conn.send({"kind": "count"})
        if not conn.poll(max(0.0, deadline - time.monotonic())):
            raise TimeoutError(f"mp round took longer than {cfg.timeout_s} s")
        counted = conn.recv()
        if counted != {"kind": "counted", "value": sent}:
            raise Verdict(f"child counted {counted!r}, expected {sent}")

    def stop_child() -> None:
        with contextlib.suppress(OSError):  # the child may already be gone
            conn.send({"kind": "stop"})
        proc.join(timeout=10)
        if proc.is_alive():
            proc.kill()
            proc.join()

    def concurrently(each: int, latencies: list[int] | None) -> None:
        nonlocal sent
        sent += _mp_concurrent(conn, cfg.askers, each, deadline, latencies, stop_child)

    phases = cfg.phases
    round_ = Round()
    try:
        t0 = time.perf_counter()
        tells(cfg.warm_tells)
        count()
        oneway_n = capped(cfg.oneway, cfg.warm_tells, time.perf_counter() - t0, cfg.budget_s)
        t0 = time.perf_counter()
        for seq in range(cfg.warmup):
            ask(seq)
        pingpong_n = capped(cfg.pingpong, cfg.warmup, time.perf_counter() - t0, cfg.budget_s)

        if "oneway" in phases:
            t0 = time.perf_counter()
            tells(oneway_n)
            count()
            round_ = replace(round_, oneway=Timed(oneway_n, time.perf_counter() - t0))

        if "pingpong" in phases:
            latencies = [0] * pingpong_n
            t0 = time.perf_counter()
            for seq in range(pingpong_n):
                start = time.perf_counter_ns()
                ask(seq)
                latencies[seq] = time.perf_counter_ns() - start
            timed = Timed(pingpong_n, time.perf_counter() - t0, latencies)
            round_ = replace(round_, pingpong=timed)

        if "concurrent" in phases:
            warm_each = cfg.per_asker(cfg.concurrent_warmup)
            t0 = time.perf_counter()
            concurrently(warm_each, None)
            each = capped(
                cfg.per_asker(cfg.concurrent), warm_each, time.perf_counter() - t0, cfg.budget_s
            )
            latencies = []
            t0 = time.perf_counter()
            concurrently(each, latencies)
            timed = Timed(len(latencies), time.perf_counter() - t0, latencies)
            round_ = replace(round_, concurrent=timed)
        count()
    finally:
        stop_child()
        conn.close()
    return round_


# --------------------------------------------------------------------------------------------
# Driver, summary, output
# --------------------------------------------------------------------------------------------

RUNNERS: dict[str, Callable[[Config, int], Round]] = {
    "ours": run_ours,
    "node": run_node,
    "mp": run_mp,
}
LABELS = {
    "ours": "ours (tell/ask)",
    "node": "node fork+send",
    "mp": "mp.Pipe",
}


@dataclass
class ImplResult(Outcome):
    rounds: list[RoundFigures] = field(default_factory=list)

    def values(self, metric: str) -> list[float]:
        if self.status != "ok":
            return []
        return [v for r in self.rounds if (v := getattr(r, metric)) is not None]

    def median(self, metric: str) -> float | None:
        return median(self.values(metric))

    def spread(self, metric: str) -> float | None:
        """Half the min-max range over the rounds, relative to the median."""
        return spread(self.values(metric), self.median(metric))


def _round_line(figures: RoundFigures) -> str:
    """A round's figures in one line of progress."""
    parts = []
    if figures.oneway_per_s is not None:
        parts.append(f"one-way {figures.oneway_per_s:>9,.0f}/s")
    if figures.pingpong_per_s is not None:
        parts.append(
            f"ping-pong {figures.pingpong_per_s:>8,.0f}/s "
            f"p50 {figures.p50_us:7.1f} us p99 {figures.p99_us:7.1f} us"
        )
    if figures.concurrent_per_s is not None:
        parts.append(
            f"concurrent {figures.concurrent_per_s:>8,.0f}/s "
            f"p50 {figures.concurrent_p50_us:7.1f} us"
        )
    if figures.w2w_per_s is not None and figures.w2w_master_per_s is not None:
        parts.append(
            f"master->B {figures.w2w_master_per_s:>6,.0f}/s  A->B {figures.w2w_per_s:>6,.0f}/s"
        )
    return "  ".join(parts)


def run_all(cfg: Config, impls: Sequence[str], log: Callable[[str], None]) -> dict[str, ImplResult]:
    results = {impl: ImplResult() for impl in impls}
    check_available(results, ("ours",), OURS_IMPORT_ERROR)

    def run(impl: str, index: int) -> RoundFigures:
        return RoundFigures.of(RUNNERS[impl](cfg, index))

    for i, impl, figures, seconds in interleave(results, cfg.rounds, run, log):
        results[impl].rounds.append(figures)
        log(f"round {i + 1}/{cfg.rounds} {impl:>4}: {_round_line(figures)}  ({seconds:.1f} s)")
    return results


# (name, our metric / anchor metric, higher-is-better)
RATIOS = (
    ("tell / {a} one-way", "oneway_per_s", True),
    ("ask / {a} round trips/s", "pingpong_per_s", True),
    ("ask / {a} p50 latency", "p50_us", False),
    ("ask / {a} p99 latency", "p99_us", False),
    ("{n} askers / {a} asks/s", "concurrent_per_s", True),
    ("{n} askers / {a} p50 latency", "concurrent_p50_us", False),
    ("{n} askers / {a} p99 latency", "concurrent_p99_us", False),
)
# Ours against ours, in the same rounds: (name, numerator metric, denominator metric)
OWN_RATIOS = (
    ("worker->worker / master->worker asks/s", "w2w_per_s", "w2w_master_per_s"),
    ("worker->worker / master->worker p50", "w2w_p50_us", "w2w_master_p50_us"),
    ("worker->worker / master->worker p99", "w2w_p99_us", "w2w_master_p99_us"),
)


def ratios(cfg: Config, results: dict[str, ImplResult]) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    ours = results.get("ours")
    if ours is None:
        return out
    for anchor in ("node", "mp"):
        if anchor not in results:
            continue
        for name, metric, _ in RATIOS:
            value = ratio(ours.median(metric), results[anchor].median(metric))
            if value is not None or results[anchor].status != "ok" or ours.status != "ok":
                out[name.format(a=anchor, n=cfg.askers)] = value
    for name, num, den in OWN_RATIOS:
        if "w2w" in cfg.phases:
            out[name] = ratio(ours.median(num), ours.median(den))
    return out


def targets(cfg: Config, results: dict[str, ImplResult]) -> list[tuple[str, bool | None]]:
    """The message path's targets that this run measured: (what, met), None when n/a."""
    rs = ratios(cfg, results)
    wanted = (
        ("oneway", f"tell >= {TARGET_TELL_VS_NODE:g}x node one-way",
         "tell / node one-way", TARGET_TELL_VS_NODE),
        ("pingpong", f"ask >= {TARGET_ASK_VS_NODE:g}x node round trips/s",
         "ask / node round trips/s", TARGET_ASK_VS_NODE),
        ("concurrent", f"{cfg.askers} askers >= {TARGET_CONCURRENT_VS_NODE:g}x node asks/s",
         f"{cfg.askers} askers / node asks/s", TARGET_CONCURRENT_VS_NODE),
        ("w2w", f"worker->worker >= {TARGET_W2W_VS_MASTER:g}x master->worker asks/s",
         "worker->worker / master->worker asks/s", TARGET_W2W_VS_MASTER),
    )  # fmt: skip
    out: list[tuple[str, bool | None]] = []
    for phase, label, key, threshold in wanted:
        if phase not in cfg.phases or "ours" not in results:
            continue
        if phase != "w2w" and "node" not in results:
            continue
        value = rs.get(key)
        out.append((label, None if value is None else value >= threshold))
    return out


def render_table(cfg: Config, results: dict[str, ImplResult]) -> str:
    def cell(result: ImplResult, metric: str, fmt: str) -> str:
        if result.status != "ok":
            return result.cell
        med, spread = result.median(metric), result.spread(metric)
        if med is None:
            return "-"  # not measured for this implementation
        return with_spread(med, spread, fmt)

    phases = cfg.phases
    lines = [
        f"IPC benchmark, small message (seq: int, payload: {len(PAYLOAD)}-char str); "
        f"median of {cfg.rounds} rounds",
    ]
    what = []
    if "oneway" in phases:
        what.append(f"one-way: {cfg.oneway:,} msgs/round")
    if "pingpong" in phases:
        what.append(f"ping-pong: {cfg.pingpong:,} round trips/round after {cfg.warmup:,} warm-up")
    if "concurrent" in phases:
        what.append(
            f"concurrent: {cfg.askers} askers x {cfg.per_asker(cfg.concurrent):,} asks/round"
        )
    if "w2w" in phases:
        what.append(f"worker to worker: {cfg.w2w:,} asks/round each way (ours only)")
    lines += ["; ".join(what), machine_line(), ""]
    impls = list(results)
    width = 20
    rows: list[tuple[str, str, str]] = []
    if "oneway" in phases:
        rows.append(("one-way msgs/s", "oneway_per_s", ",.0f"))
    if "pingpong" in phases:
        rows += [
            ("ping-pong round trips/s", "pingpong_per_s", ",.0f"),
            ("ping-pong p50 us", "p50_us", ",.1f"),
            ("ping-pong p99 us", "p99_us", ",.1f"),
        ]
    if "concurrent" in phases:
        rows += [
            (f"{cfg.askers} askers asks/s", "concurrent_per_s", ",.0f"),
            (f"{cfg.askers} askers p50 us", "concurrent_p50_us", ",.1f"),
            (f"{cfg.askers} askers p99 us", "concurrent_p99_us", ",.1f"),
        ]
    if "w2w" in phases:
        rows += [
            ("master->worker asks/s", "w2w_master_per_s", ",.0f"),
            ("master->worker p50 us", "w2w_master_p50_us", ",.1f"),
            ("master->worker p99 us", "w2w_master_p99_us", ",.1f"),
            ("worker->worker asks/s", "w2w_per_s", ",.0f"),
            ("worker->worker p50 us", "w2w_p50_us", ",.1f"),
            ("worker->worker p99 us", "w2w_p99_us", ",.1f"),
        ]
    lines.append(f"{'':<26}" + "".join(f"{LABELS[i]:>{width}}" for i in impls))
    for label, metric, fmt in rows:
        lines.append(
            f"{label:<26}" + "".join(f"{cell(results[i], metric, fmt):>{width}}" for i in impls)
        )
    # A shortened phase (see Config.budget_s) must not pass unnoticed.
    full = {
        "oneway_n": cfg.oneway,
        "pingpong_n": cfg.pingpong,
        "concurrent_n": cfg.per_asker(cfg.concurrent) * cfg.askers,
        "w2w_n": cfg.w2w,
    }
    for impl, result in results.items():
        for r in result.rounds:
            short = {k: n for k, limit in full.items() if (n := getattr(r, k)) and n < limit}
            if short:
                ran = ", ".join(f"{k.removesuffix('_n')} {n:,}" for k, n in short.items())
                lines.append(f"note: {impl} was slow; some rounds ran with fewer messages ({ran})")
                break
    for impl, result in results.items():
        if (problem := result.problem(impl)) is not None:
            lines.append(problem)
    rs = ratios(cfg, results)
    if rs and all(value is None for value in rs.values()):
        lines.append("")
        lines.append("ours as a ratio of the anchors: n/a")
    elif rs:
        lines.append("")
        lines.append(
            "ours as a ratio of the anchors (rates: >1x is faster; latency: <1x is faster)"
        )
        for name, value in rs.items():
            lines.append(f"  {name:<40} = " + times(value))
    met = targets(cfg, results)
    if met:
        lines.append("")
        lines.append("targets (DESIGN.md, printed, not asserted)")
        for name, ok in met:
            lines.append(f"  {name:<50} {'n/a' if ok is None else 'met' if ok else 'NOT met'}")
    return "\n".join(lines)


def render_json(cfg: Config, results: dict[str, ImplResult]) -> str:
    doc = {
        "config": asdict(cfg) | {"payload_chars": len(PAYLOAD)},
        "machine": machine(),
        "results": {
            impl: {
                "status": r.status,
                "error": r.error,
                "median": {metric: r.median(metric) for metric in METRICS},
                "spread": {metric: r.spread(metric) for metric in METRICS},
                "rounds": [asdict(x) for x in r.rounds],
            }
            for impl, r in results.items()
        },
        "ratios": ratios(cfg, results),
        "targets": {name: ok for name, ok in targets(cfg, results)},
    }
    return json.dumps(doc, indent=2)


def parse_args(argv: Sequence[str] | None = None) -> tuple[Config, list[str], bool]:
    p = arguments(__doc__, "3 rounds instead of 5", "--impl", IMPLS)
    p.add_argument("--rounds", type=int, help="rounds per implementation (default 5, quick 3)")
    p.add_argument(
        "--phases", default=",".join(PHASES), help="comma-separated subset of %(default)s"
    )
    p.add_argument("--oneway", type=int, default=50_000, help="messages per one-way round")
    p.add_argument("--pingpong", type=int, default=5_000, help="round trips per ping-pong round")
    p.add_argument("--warmup", type=int, default=500, help="untimed warm-up round trips")
    p.add_argument(
        "--concurrent", type=int, default=32_000, help="asks per concurrent round, all askers"
    )
    p.add_argument("--askers", type=int, default=64, help="concurrent askers")
    p.add_argument(
        "--w2w", type=int, default=5_000, help="asks per worker-to-worker round, each way"
    )
    p.add_argument(
        "--budget", type=float, default=10.0, help="max seconds for one phase of a round"
    )
    p.add_argument("--timeout", type=float, default=120.0, help="max seconds for one round")
    ns = p.parse_args(argv)
    impls = chosen(p, "--impl", ns.impl, IMPLS)
    phases = tuple(chosen(p, "--phases", ns.phases, PHASES))
    rounds = ns.rounds if ns.rounds is not None else (3 if ns.quick else 5)
    counts = (rounds, ns.oneway, ns.pingpong, ns.concurrent, ns.askers, ns.w2w)
    if min(counts) < 1 or ns.warmup < 0:
        p.error(
            "--rounds, --oneway, --pingpong, --concurrent, --askers and --w2w must be "
            "positive, --warmup non-negative"
        )
    cfg = Config(
        rounds=rounds,
        phases=phases,
        oneway=ns.oneway,
        pingpong=ns.pingpong,
        warmup=ns.warmup,
        concurrent=ns.concurrent,
        askers=ns.askers,
        w2w=ns.w2w,
        budget_s=ns.budget,
        timeout_s=ns.timeout,
    )
    return cfg, impls, ns.json


def main(argv: Sequence[str] | None = None) -> int:
    cfg, impls, as_json = parse_args(argv)
    results = run_all(cfg, impls, progress)
    print(render_json(cfg, results) if as_json else render_table(cfg, results))
    return 1 if any(r.failed for r in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
