"""IPC benchmark: our actor runtime against two anchors, in one run.

Usage::

    python benchmarks/ipc.py [--quick] [--json] [--impl ours,node,mp] [--rounds R]
                             [--oneway N] [--pingpong M] [--warmup W]

A small message (an int ``seq`` and a 16-character string ``payload``) goes from a parent
process to a child process, for three implementations:

``ours``  this runtime: ``ref.tell(Ping)`` / ``ref.ask(Ping)`` to a ``Sink`` actor spawned with
          ``process=True``; delivery is confirmed by ``ref.ask(Count())``;
``node``  Node.js ``child_process.fork()`` + ``process.send()`` with the default JSON
          serialization, parent and child both in Node (``benchmarks/node/``);
``mp``    Python ``multiprocessing.Pipe()`` to a ``multiprocessing.Process`` (spawn context)
          whose loop is ``conn.recv()`` / ``conn.send()``; messages are plain dicts (pickled).

Each implementation is measured the same way, in every round, with a fresh child:

one-way    N messages sent back to back, then a count request; the clock stops when the child's
           reply confirms it received all N (so queued-but-undelivered messages do not count);
ping-pong  after a warm-up, M sequential round trips (send, await the echo, send the next),
           each one timed; reports round trips/s and the p50 / p99 latency in microseconds.

Rounds are interleaved (round 1 of every implementation, then round 2, ...), so drift in the
load of a shared machine hits all of them alike, and each figure is the MEDIAN over the rounds.
The "±" next to a figure is half the min-max range over the rounds, relative to the median.

The Actor and Message classes live at module top level, and the entry point is guarded by
``if __name__ == "__main__"``: the runtime's worker process (and multiprocessing's spawn child)
imports this file under another module name.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path

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

# --------------------------------------------------------------------------------------------
# OUR runtime: messages and the actor. The runtime may be missing or broken while it is being
# written; the anchors still run, and the "ours" column says why it is empty.
# --------------------------------------------------------------------------------------------

try:
    from actors import Actor, handler, open_system
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


# --------------------------------------------------------------------------------------------
# Configuration and results
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Config:
    rounds: int
    oneway: int  # messages per one-way round
    pingpong: int  # timed round trips per ping-pong round
    warmup: int  # untimed round trips before the ping-pong (and min(oneway, 5000) tells)
    budget_s: float  # a phase predicted (from its warm-up) to take longer is shortened
    timeout_s: float  # an implementation's round taking longer than this is an error

    @property
    def warm_tells(self) -> int:
        return min(self.oneway, 5_000)


@dataclass(frozen=True)
class Round:
    oneway_n: int
    oneway_s: float
    pingpong_n: int
    pingpong_s: float
    latencies_ns: list[int]


@dataclass(frozen=True)
class RoundFigures:
    oneway_n: int
    oneway_per_s: float
    pingpong_n: int
    pingpong_per_s: float
    p50_us: float
    p99_us: float

    @classmethod
    def of(cls, r: Round) -> RoundFigures:
        lat = sorted(r.latencies_ns)
        return cls(
            oneway_n=r.oneway_n,
            oneway_per_s=r.oneway_n / r.oneway_s,
            pingpong_n=r.pingpong_n,
            pingpong_per_s=r.pingpong_n / r.pingpong_s,
            p50_us=percentile(lat, 50) / 1e3,
            p99_us=percentile(lat, 99) / 1e3,
        )


METRICS = ("oneway_per_s", "pingpong_per_s", "p50_us", "p99_us")


def capped(n: int, warm_n: int, warm_s: float, budget_s: float) -> int:
    """Shorten a phase of n operations whose warm-up rate predicts more than budget_s."""
    if warm_n <= 0 or warm_s <= 0:
        return n
    return min(n, max(1_000, int(warm_n / warm_s * budget_s)))


# --------------------------------------------------------------------------------------------
# (a) OUR runtime
# --------------------------------------------------------------------------------------------


async def _ours_round(cfg: Config) -> Round:
    async with open_system() as system:
        ref = await system.spawn(Sink, name="sink", process=True)
        sent = 0

        async def tells(n: int) -> None:
            nonlocal sent
            for seq in range(n):
                await ref.tell(Ping(seq=seq, payload=PAYLOAD))
            sent += n

        async def ask(seq: int) -> None:
            nonlocal sent
            reply = await ref.ask(Ping(seq=seq, payload=PAYLOAD))
            sent += 1
            if not isinstance(reply, Ping) or reply.seq != seq:
                raise Verdict(f"reply {reply!r} to ask {seq}")

        async def count() -> None:
            counted = await ref.ask(Count())
            if not isinstance(counted, Counted) or counted.value != sent:
                raise Verdict(f"sink counted {counted!r}, expected {sent}")

        t0 = time.perf_counter()
        await tells(cfg.warm_tells)
        await count()
        oneway_n = capped(cfg.oneway, cfg.warm_tells, time.perf_counter() - t0, cfg.budget_s)
        t0 = time.perf_counter()
        for seq in range(cfg.warmup):
            await ask(seq)
        pingpong_n = capped(cfg.pingpong, cfg.warmup, time.perf_counter() - t0, cfg.budget_s)

        t0 = time.perf_counter()
        await tells(oneway_n)
        await count()
        oneway_s = time.perf_counter() - t0

        latencies = [0] * pingpong_n
        t0 = time.perf_counter()
        for seq in range(pingpong_n):
            start = time.perf_counter_ns()
            await ask(seq)
            latencies[seq] = time.perf_counter_ns() - start
        pingpong_s = time.perf_counter() - t0
        await count()
    return Round(oneway_n, oneway_s, pingpong_n, pingpong_s, latencies)


def run_ours(cfg: Config) -> Round:
    async def guarded() -> Round:
        with trio.fail_after(cfg.timeout_s):
            return await _ours_round(cfg)

    return trio.run(guarded)


# --------------------------------------------------------------------------------------------
# (b) Node: child_process.fork + process.send, measured node-to-node by node/ipc_parent.js
# --------------------------------------------------------------------------------------------


def run_node(cfg: Config) -> Round:
    args = [
        "--rounds",
        "1",
        "--oneway",
        str(cfg.oneway),
        "--pingpong",
        str(cfg.pingpong),
        "--warmup",
        str(cfg.warmup),
        "--payload",
        PAYLOAD,
    ]
    (r,) = node_json(NODE_PARENT, args, cfg.timeout_s)["rounds"]
    return Round(r["oneway_n"], r["oneway_s"], r["pingpong_n"], r["pingpong_s"], r["latencies_ns"])


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


def run_mp(cfg: Config) -> Round:
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

    try:
        t0 = time.perf_counter()
        tells(cfg.warm_tells)
        count()
        oneway_n = capped(cfg.oneway, cfg.warm_tells, time.perf_counter() - t0, cfg.budget_s)
        t0 = time.perf_counter()
        for seq in range(cfg.warmup):
            ask(seq)
        pingpong_n = capped(cfg.pingpong, cfg.warmup, time.perf_counter() - t0, cfg.budget_s)

        t0 = time.perf_counter()
        tells(oneway_n)
        count()
        oneway_s = time.perf_counter() - t0

        latencies = [0] * pingpong_n
        t0 = time.perf_counter()
        for seq in range(pingpong_n):
            start = time.perf_counter_ns()
            ask(seq)
            latencies[seq] = time.perf_counter_ns() - start
        pingpong_s = time.perf_counter() - t0
        count()
    finally:
        with contextlib.suppress(OSError):  # the child may already be gone
            conn.send({"kind": "stop"})
        conn.close()
        proc.join(timeout=10)
        if proc.is_alive():
            proc.kill()
            proc.join()
    return Round(oneway_n, oneway_s, pingpong_n, pingpong_s, latencies)


# --------------------------------------------------------------------------------------------
# Driver, summary, output
# --------------------------------------------------------------------------------------------

RUNNERS: dict[str, Callable[[Config], Round]] = {"ours": run_ours, "node": run_node, "mp": run_mp}
LABELS = {
    "ours": "ours (tell/ask)",
    "node": "node fork+send",
    "mp": "mp.Pipe",
}


@dataclass
class ImplResult(Outcome):
    rounds: list[RoundFigures] = field(default_factory=list)

    def values(self, metric: str) -> list[float]:
        return [getattr(r, metric) for r in self.rounds] if self.status == "ok" else []

    def median(self, metric: str) -> float | None:
        return median(self.values(metric))

    def spread(self, metric: str) -> float | None:
        """Half the min-max range over the rounds, relative to the median."""
        return spread(self.values(metric), self.median(metric))


def run_all(cfg: Config, impls: Sequence[str], log: Callable[[str], None]) -> dict[str, ImplResult]:
    results = {impl: ImplResult() for impl in impls}
    check_available(results, ("ours",), OURS_IMPORT_ERROR)

    def run(impl: str, _: int) -> RoundFigures:
        return RoundFigures.of(RUNNERS[impl](cfg))

    for i, impl, figures, seconds in interleave(results, cfg.rounds, run, log):
        results[impl].rounds.append(figures)
        log(
            f"round {i + 1}/{cfg.rounds} {impl:>4}: "
            f"one-way {figures.oneway_per_s:>9,.0f}/s  "
            f"ping-pong {figures.pingpong_per_s:>8,.0f}/s  "
            f"p50 {figures.p50_us:7.1f} us  p99 {figures.p99_us:7.1f} us  "
            f"({seconds:.1f} s)"
        )
    return results


# (name, our metric / anchor metric, higher-is-better)
RATIOS = (
    ("tell / {a} one-way", "oneway_per_s", True),
    ("ask / {a} round trips/s", "pingpong_per_s", True),
    ("ask / {a} p50 latency", "p50_us", False),
    ("ask / {a} p99 latency", "p99_us", False),
)


def ratios(results: dict[str, ImplResult]) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    ours = results.get("ours")
    for anchor in ("node", "mp"):
        if anchor not in results or ours is None:
            continue
        for name, metric, _ in RATIOS:
            out[name.format(a=anchor)] = ratio(ours.median(metric), results[anchor].median(metric))
    return out


def render_table(cfg: Config, results: dict[str, ImplResult]) -> str:
    def cell(result: ImplResult, metric: str, fmt: str) -> str:
        if result.status != "ok":
            return result.cell
        med, spread = result.median(metric), result.spread(metric)
        assert med is not None
        assert spread is not None
        return with_spread(med, spread, fmt)

    lines = [
        f"IPC benchmark, small message (seq: int, payload: {len(PAYLOAD)}-char str); "
        f"median of {cfg.rounds} rounds",
        f"one-way: {cfg.oneway:,} msgs/round; ping-pong: {cfg.pingpong:,} round trips/round "
        f"after {cfg.warmup:,} warm-up",
        machine_line(),
        "",
    ]
    impls = list(results)
    width = 20
    rows = (
        ("one-way msgs/s", "oneway_per_s", ",.0f"),
        ("ping-pong round trips/s", "pingpong_per_s", ",.0f"),
        ("ping-pong p50 us", "p50_us", ",.1f"),
        ("ping-pong p99 us", "p99_us", ",.1f"),
    )
    lines.append(f"{'':<26}" + "".join(f"{LABELS[i]:>{width}}" for i in impls))
    for label, metric, fmt in rows:
        lines.append(
            f"{label:<26}" + "".join(f"{cell(results[i], metric, fmt):>{width}}" for i in impls)
        )
    # A shortened phase (see Config.budget_s) must not pass unnoticed.
    for impl, result in results.items():
        for r in result.rounds:
            if r.oneway_n < cfg.oneway or r.pingpong_n < cfg.pingpong:
                lines.append(
                    f"note: {impl} was slow; some rounds ran with fewer messages "
                    f"(one-way {r.oneway_n:,}, ping-pong {r.pingpong_n:,})"
                )
                break
    for impl, result in results.items():
        if (problem := result.problem(impl)) is not None:
            lines.append(problem)
    rs = ratios(results)
    if rs and all(value is None for value in rs.values()):
        lines.append("")
        lines.append("ours as a ratio of the anchors: n/a")
    elif rs:
        lines.append("")
        lines.append(
            "ours as a ratio of the anchors (rates: >1x is faster; latency: <1x is faster)"
        )
        for name, value in rs.items():
            lines.append(f"  {name:<26} = " + times(value))
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
        "ratios": ratios(results),
    }
    return json.dumps(doc, indent=2)


def parse_args(argv: Sequence[str] | None = None) -> tuple[Config, list[str], bool]:
    p = arguments(__doc__, "3 rounds instead of 5", "--impl", IMPLS)
    p.add_argument("--rounds", type=int, help="rounds per implementation (default 5, quick 3)")
    p.add_argument("--oneway", type=int, default=50_000, help="messages per one-way round")
    p.add_argument("--pingpong", type=int, default=5_000, help="round trips per ping-pong round")
    p.add_argument("--warmup", type=int, default=500, help="untimed warm-up round trips")
    p.add_argument(
        "--budget", type=float, default=10.0, help="max seconds for one phase of a round"
    )
    p.add_argument("--timeout", type=float, default=120.0, help="max seconds for one round")
    ns = p.parse_args(argv)
    impls = chosen(p, "--impl", ns.impl, IMPLS)
    rounds = ns.rounds if ns.rounds is not None else (3 if ns.quick else 5)
    if min(rounds, ns.oneway, ns.pingpong) < 1 or ns.warmup < 0:
        p.error("--rounds, --oneway and --pingpong must be positive, --warmup non-negative")
    cfg = Config(
        rounds=rounds,
        oneway=ns.oneway,
        pingpong=ns.pingpong,
        warmup=ns.warmup,
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
