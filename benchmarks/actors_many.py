"""Many small actors: spawning 10,000 in-process actors, their memory, and an ask to each.

Usage::

    python benchmarks/actors_many.py [--quick] [--json] [--impl ours,ours-ctx,trio,trio-soon]
                                     [--rounds R] [--actors N] [--no-trace]

Every round of every implementation runs in a fresh interpreter (this script, re-run with
``--child IMPL``), which prints its raw figures as JSON; this process computes the rest:

``ours``      ``await system.spawn(Small)`` N times in the master (``process=False``: each
              actor is a task of this process), one after the other, each returning once
              the actor is ready;
``ours-ctx``  one in-process ``Parent`` actor doing ``await self.ctx.spawn(Small)`` N times
              in one handler (the master asks it to, and the clock runs around that ask);
``trio``      the floor of this design: per "actor" a bare trio task reading a memory
              channel of the same size as an actor's mailbox, started with
              ``nursery.start`` (so it, too, is running when the start returns);
``trio-soon`` the same started with ``nursery.start_soon`` (none of ``start``'s
              bookkeeping); the clock stops once every task has run up to its first
              receive (``trio.testing.wait_all_tasks_blocked``): the floor of the floor;
``erlang``    not measured: a newly spawned Erlang process uses 327 words, 2,616 bytes on a
              64-bit machine (Erlang/OTP 27 Efficiency Guide, "Processes"), quoted as the
              yardstick for "a small actor".

Then one ask to each of the N actors in turn, from the master (``ref.ask(Hello(n))``;
for trio a send of ``(n, reply_channel)`` and a receive of the reply), each reply checked;
then everything is stopped (``open_system`` left, or every channel closed and the nursery
done) and that is timed too.

Memory per actor is the growth of the process's resident set (RSS, ``/proc/self/statm``)
from just before the first spawn to just after the last (and again after the asks), each
reading after ``gc.collect()``, divided by N. RSS is what the machine pays: Python objects,
the allocator's overhead and fragmentation, trio's task and channel structures, whatever
C allocates. A separate traced run per implementation (not timed; ``tracemalloc`` slows
allocation several-fold) reports the Python heap still held per actor, which says how much
of the RSS figure is objects and how much the allocator.

Rounds are interleaved (round 1 of every implementation, then round 2, ...), each figure is
the MEDIAN over the rounds with "±" half the min-max range relative to it. Targets (printed,
never asserted): <= 4 KiB per actor and >= 20,000 spawns/s. The exit status is 1 if an
implementation failed a round (a child that failed, timed out or answered wrongly).

The Actor and Message classes live at module top level, and the entry point is guarded by
``if __name__ == "__main__"``.
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import trio
import trio.testing

# Wherever this runs from, `_harness` is next to it.
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import (  # also puts the repository root on sys.path, for `actors`
    Outcome,
    Verdict,
    arguments,
    check_available,
    chosen,
    describe,
    interleave,
    machine,
    machine_line,
    median,
    progress,
    ratio,
    spread,
    times,
    with_spread,
)

IMPLS = ("ours", "ours-ctx", "trio", "trio-soon")
OURS = ("ours", "ours-ctx")
LABELS = {
    "ours": "ours system.spawn",
    "ours-ctx": "ours ctx.spawn",
    "trio": "trio task+channel",
    "trio-soon": "trio start_soon",
}
WARM_ACTORS = 100  # spawned and asked before the baseline: first-use costs are not counted
ERLANG_PROCESS_BYTES = 2_616  # OTP 27 Efficiency Guide: 327 words (heap of 233 included)
TARGET_BYTES_PER_ACTOR = 4 * 1024
TARGET_SPAWNS_PER_S = 20_000.0

# --------------------------------------------------------------------------------------------
# OUR runtime: messages and actors (the runtime may be broken while it is being changed; the
# trio floor still runs, and the "ours" columns say why they are empty)
# --------------------------------------------------------------------------------------------

try:
    from actors import Actor, ActorRef, handler, open_system
    from protocol import Message
except Exception as exc:
    OURS_IMPORT_ERROR: str | None = f"{type(exc).__name__}: {exc}"
    MAILBOX_SIZE = 1024
else:
    OURS_IMPORT_ERROR = None
    MAILBOX_SIZE = Actor.mailbox_size  # the trio floor's channels hold as many

    class Hello(Message):
        n: int

    class SpawnMany(Message):
        n: int

    class Spawned(Message):
        refs: list[ActorRef]

    class Small(Actor):
        """A small actor: no state, one handler."""

        @handler
        async def hello(self, msg: Hello) -> Hello:
            return msg

    class Parent(Actor):
        """Spawns its children from one handler (``ours-ctx``)."""

        @handler
        async def spawn_many(self, msg: SpawnMany) -> Spawned:
            return Spawned(refs=[await self.ctx.spawn(Small) for _ in range(msg.n)])


# --------------------------------------------------------------------------------------------
# One round, in a fresh interpreter (--child)
# --------------------------------------------------------------------------------------------


def rss_bytes() -> int:
    """This process's resident set, from /proc/self/statm."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class Meter:
    """Memory readings after a full collection: RSS always, the traced heap when tracing."""

    def __init__(self, traced: bool) -> None:
        self.traced = traced
        self.readings: dict[str, int] = {}

    def start(self) -> None:
        gc.collect()
        if self.traced:
            tracemalloc.start()
        self.read("before")

    def read(self, name: str) -> None:
        gc.collect()
        self.readings[f"rss_{name}"] = rss_bytes()
        if self.traced:
            self.readings[f"traced_{name}"] = tracemalloc.get_traced_memory()[0]


async def _ours_child(impl: str, n: int, meter: Meter) -> dict[str, float]:
    times_s: dict[str, float] = {}
    t_stop = 0.0
    # A name of its own, so that runs from several checkouts at once do not collide.
    async with open_system(name=f"bench-many-{os.getpid()}") as system:
        warm = [await system.spawn(Small) for _ in range(WARM_ACTORS)]
        for i, ref in enumerate(warm):
            await ref.ask(Hello(n=i), Hello)
        parent = await system.spawn(Parent) if impl == "ours-ctx" else None

        meter.start()
        t0 = time.perf_counter()
        if parent is None:
            refs = [await system.spawn(Small) for _ in range(n)]
        else:
            refs = (await parent.ask(SpawnMany(n=n), Spawned)).refs
        times_s["spawn_s"] = time.perf_counter() - t0
        meter.read("spawned")
        if len(set(refs)) != n:
            raise Verdict(f"{len(set(refs))} distinct actors spawned, not {n}")

        t0 = time.perf_counter()
        for i, ref in enumerate(refs):
            reply = await ref.ask(Hello(n=i))
            if not isinstance(reply, Hello) or reply.n != i:
                raise Verdict(f"reply {reply!r} to ask {i}")
        times_s["ask_s"] = time.perf_counter() - t0
        meter.read("asked")
        t_stop = time.perf_counter()
    times_s["stop_s"] = time.perf_counter() - t_stop
    return times_s


async def _trio_actor(
    inbox: trio.MemoryReceiveChannel[tuple[int, trio.MemorySendChannel[int]]],
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """The floor's "actor": a task reading its channel, answering on the channel it is sent."""
    task_status.started()
    async with inbox:
        async for n, reply_to in inbox:
            await reply_to.send(n)


async def _trio_child(n: int, meter: Meter, soon: bool) -> dict[str, float]:
    times_s: dict[str, float] = {}
    reply_to, replies = trio.open_memory_channel[int](1)

    async def start(nursery: trio.Nursery) -> trio.MemorySendChannel[Any]:
        send, receive = trio.open_memory_channel[tuple[int, trio.MemorySendChannel[int]]](
            MAILBOX_SIZE
        )
        if soon:
            nursery.start_soon(_trio_actor, receive)
        else:
            await nursery.start(_trio_actor, receive)
        return send

    async def ask(mailbox: trio.MemorySendChannel[Any], i: int) -> None:
        await mailbox.send((i, reply_to))
        if (got := await replies.receive()) != i:
            raise Verdict(f"reply {got!r} to ask {i}")

    t_stop = 0.0
    async with trio.open_nursery() as nursery:
        warm = [await start(nursery) for _ in range(WARM_ACTORS)]
        for i, mailbox in enumerate(warm):
            await ask(mailbox, i)

        meter.start()
        t0 = time.perf_counter()
        mailboxes = [await start(nursery) for _ in range(n)]
        if soon:  # started, not yet running: let every task reach its first receive
            await trio.testing.wait_all_tasks_blocked()
        times_s["spawn_s"] = time.perf_counter() - t0
        meter.read("spawned")

        t0 = time.perf_counter()
        for i, mailbox in enumerate(mailboxes):
            await ask(mailbox, i)
        times_s["ask_s"] = time.perf_counter() - t0
        meter.read("asked")

        t_stop = time.perf_counter()
        for mailbox in [*warm, *mailboxes]:
            await mailbox.aclose()  # each task ends at the end of its channel
    times_s["stop_s"] = time.perf_counter() - t_stop
    return times_s


def child_main(impl: str, n: int, traced: bool) -> int:
    """Run one round of ``impl`` in this interpreter and print its raw figures as JSON."""
    meter = Meter(traced)
    if impl in ("trio", "trio-soon"):
        figures = trio.run(_trio_child, n, meter, impl == "trio-soon")
    else:
        if OURS_IMPORT_ERROR is not None:
            raise RuntimeError(OURS_IMPORT_ERROR)
        figures = trio.run(_ours_child, impl, n, meter)
    print(json.dumps({"n": n, **figures, **meter.readings}))
    return 0


# --------------------------------------------------------------------------------------------
# The driver: rounds in fresh interpreters, interleaved
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Config:
    rounds: int
    actors: int
    trace: bool  # one traced run per implementation after the rounds
    timeout_s: float


@dataclass(frozen=True)
class RoundFigures:
    spawns_per_s: float
    bytes_per_actor: float  # RSS growth over the spawns / N
    bytes_per_actor_asked: float  # RSS growth up to after the asks / N
    asks_per_s: float
    stop_s: float
    rss_before_mib: float  # the process before the first timed spawn (runtime, warm actors)

    @classmethod
    def of(cls, raw: dict[str, Any]) -> RoundFigures:
        n = raw["n"]
        return cls(
            spawns_per_s=n / raw["spawn_s"],
            bytes_per_actor=(raw["rss_spawned"] - raw["rss_before"]) / n,
            bytes_per_actor_asked=(raw["rss_asked"] - raw["rss_before"]) / n,
            asks_per_s=n / raw["ask_s"],
            stop_s=raw["stop_s"],
            rss_before_mib=raw["rss_before"] / 2**20,
        )


METRICS = tuple(RoundFigures.__dataclass_fields__)


@dataclass
class ImplResult(Outcome):
    rounds: list[RoundFigures] = field(default_factory=list)
    traced: dict[str, float] | None = None  # traced heap bytes per actor, spawned / asked

    def values(self, metric: str) -> list[float]:
        return [getattr(r, metric) for r in self.rounds] if self.status == "ok" else []

    def median(self, metric: str) -> float | None:
        return median(self.values(metric))

    def spread(self, metric: str) -> float | None:
        return spread(self.values(metric), self.median(metric))


def run_child(impl: str, cfg: Config, traced: bool) -> dict[str, Any]:
    """One round of ``impl`` in a fresh interpreter; its JSON (RuntimeError if it failed)."""
    argv = [sys.executable, str(Path(__file__).resolve()), "--child", impl]
    argv += ["--actors", str(cfg.actors)]
    if traced:
        argv.append("--traced")
    out = subprocess.run(
        argv, capture_output=True, text=True, timeout=cfg.timeout_s, check=False
    )  # on a timeout, subprocess.run kills and reaps the child
    if out.returncode != 0:
        tail = out.stderr.strip().splitlines()[-3:]
        raise RuntimeError(f"child exited with {out.returncode}: {' | '.join(tail)}")
    raw: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return raw


def run_all(cfg: Config, impls: Sequence[str], log: Callable[[str], None]) -> dict[str, ImplResult]:
    results = {impl: ImplResult() for impl in impls}
    check_available(results, OURS, OURS_IMPORT_ERROR)

    def run(impl: str, _: int) -> RoundFigures:
        return RoundFigures.of(run_child(impl, cfg, traced=False))

    for i, impl, f, seconds in interleave(results, cfg.rounds, run, log):
        results[impl].rounds.append(f)
        log(
            f"round {i + 1}/{cfg.rounds} {impl:>8}: {f.spawns_per_s:>9,.0f} spawns/s  "
            f"{f.bytes_per_actor:>7,.0f} B/actor ({f.bytes_per_actor_asked:,.0f} after asks)  "
            f"{f.asks_per_s:>8,.0f} asks/s  stop {f.stop_s:.2f} s  ({seconds:.1f} s)"
        )
    if cfg.trace:
        for impl, result in results.items():
            if result.status != "ok":
                continue
            try:
                raw = run_child(impl, cfg, traced=True)
            except Exception as exc:
                result.status, result.error = "error", f"traced run: {describe(exc)}"
                log(f"traced {impl}: {result.error}")
                continue
            result.traced = {
                "spawned": (raw["traced_spawned"] - raw["traced_before"]) / raw["n"],
                "asked": (raw["traced_asked"] - raw["traced_before"]) / raw["n"],
            }
            log(
                f"traced {impl:>8}: {result.traced['spawned']:,.0f} B/actor held in the "
                f"Python heap ({result.traced['asked']:,.0f} after asks)"
            )
    return results


# --------------------------------------------------------------------------------------------
# Summary and output
# --------------------------------------------------------------------------------------------


def ratios(results: dict[str, ImplResult]) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    floor = results.get("trio")  # the like-for-like floor: started and running, as ours
    for impl in OURS:
        ours = results.get(impl)
        if ours is None:
            continue
        if floor is not None:
            out[f"{impl} / trio spawns/s"] = ratio(
                ours.median("spawns_per_s"), floor.median("spawns_per_s")
            )
            out[f"{impl} / trio bytes/actor"] = ratio(
                ours.median("bytes_per_actor"), floor.median("bytes_per_actor")
            )
            out[f"{impl} / trio asks/s"] = ratio(
                ours.median("asks_per_s"), floor.median("asks_per_s")
            )
        out[f"{impl} / erlang bytes/actor"] = ratio(
            ours.median("bytes_per_actor"), ERLANG_PROCESS_BYTES
        )
    for name in ("trio", "trio-soon"):
        if name in results:
            out[f"{name} / erlang bytes/actor"] = ratio(
                results[name].median("bytes_per_actor"), ERLANG_PROCESS_BYTES
            )
    return out


def targets(results: dict[str, ImplResult]) -> list[tuple[str, bool | None]]:
    out: list[tuple[str, bool | None]] = []
    for impl in OURS:
        if impl not in results:
            continue
        b = results[impl].median("bytes_per_actor")
        s = results[impl].median("spawns_per_s")
        out.append(
            (
                f"{impl}: <= {TARGET_BYTES_PER_ACTOR // 1024} KiB per actor",
                None if b is None else b <= TARGET_BYTES_PER_ACTOR,
            )
        )
        out.append(
            (
                f"{impl}: >= {TARGET_SPAWNS_PER_S:,.0f} spawns/s",
                None if s is None else s >= TARGET_SPAWNS_PER_S,
            )
        )
    return out


def render_table(cfg: Config, results: dict[str, ImplResult]) -> str:
    def cell(result: ImplResult, metric: str, fmt: str) -> str:
        if result.status != "ok":
            return result.cell
        med = result.median(metric)
        return "n/a" if med is None else with_spread(med, result.spread(metric), fmt)

    def traced(result: ImplResult, key: str) -> str:
        if result.status != "ok":
            return result.cell
        return "-" if result.traced is None else f"{result.traced[key]:,.0f}"

    width = 20
    lines = [
        f"Many small actors: {cfg.actors:,} in one process, median of {cfg.rounds} rounds "
        "(each in a fresh interpreter)",
        machine_line(),
        "",
        f"{'':<30}" + "".join(f"{LABELS[i]:>{width}}" for i in results) + f"{'erlang':>{width}}",
    ]
    rows = (
        ("spawns/s", "spawns_per_s", ",.0f", "-"),
        ("bytes/actor (RSS)", "bytes_per_actor", ",.0f", f"{ERLANG_PROCESS_BYTES:,} (quoted)"),
        ("bytes/actor after asks (RSS)", "bytes_per_actor_asked", ",.0f", "-"),
        ("asks/s (one to each)", "asks_per_s", ",.0f", "-"),
        ("stop all, s", "stop_s", ",.2f", "-"),
        ("RSS before spawning, MiB", "rss_before_mib", ",.1f", "-"),
    )
    for label, metric, fmt, erlang in rows:
        lines.append(
            f"{label:<30}"
            + "".join(f"{cell(results[i], metric, fmt):>{width}}" for i in results)
            + f"{erlang:>{width}}"
        )
    if cfg.trace:
        for label, key in (
            ("traced heap B/actor (1 run)", "spawned"),
            ("  after asks", "asked"),
        ):
            lines.append(
                f"{label:<30}"
                + "".join(f"{traced(results[i], key):>{width}}" for i in results)
                + f"{'-':>{width}}"
            )
    for impl, result in results.items():
        if (problem := result.problem(impl)) is not None:
            lines.append(problem)
    rs = ratios(results)
    if rs:
        lines += ["", "ratios of medians (rates: >1x is faster; bytes: <1x is smaller)"]
        lines += [f"  {name:<32} = {times(value)}" for name, value in rs.items()]
    met = targets(results)
    if met:
        lines += ["", "targets (printed, not asserted)"]
        lines += [
            f"  {name:<40} {'n/a' if ok is None else 'met' if ok else 'NOT met'}"
            for name, ok in met
        ]
    return "\n".join(lines)


def render_json(cfg: Config, results: dict[str, ImplResult]) -> str:
    doc = {
        "config": asdict(cfg) | {"warm_actors": WARM_ACTORS, "mailbox_size": MAILBOX_SIZE},
        "machine": machine(),
        "erlang_process_bytes_quoted": ERLANG_PROCESS_BYTES,
        "results": {
            impl: {
                "status": r.status,
                "error": r.error,
                "median": {m: r.median(m) for m in METRICS},
                "spread": {m: r.spread(m) for m in METRICS},
                "traced_bytes_per_actor": r.traced,
                "rounds": [asdict(x) for x in r.rounds],
            }
            for impl, r in results.items()
        },
        "ratios": ratios(results),
        "targets": {name: ok for name, ok in targets(results)},
    }
    return json.dumps(doc, indent=2)


def parse_args(argv: Sequence[str] | None = None) -> tuple[Config, list[str], bool, Any]:
    p = arguments(__doc__, "2 rounds instead of 3", "--impl", IMPLS)
    p.add_argument("--rounds", type=int, help="rounds per implementation (default 3, quick 2)")
    p.add_argument("--actors", type=int, default=10_000, help="N: actors spawned per round")
    p.add_argument("--no-trace", action="store_true", help="skip the traced (tracemalloc) runs")
    p.add_argument("--timeout", type=float, default=300.0, help="max seconds for one round")
    p.add_argument("--child", choices=IMPLS, help="(internal) run one round here, print JSON")
    p.add_argument("--traced", action="store_true", help="(internal) with --child: trace")
    ns = p.parse_args(argv)
    impls = chosen(p, "--impl", ns.impl, IMPLS)
    rounds = ns.rounds if ns.rounds is not None else (2 if ns.quick else 3)
    if min(rounds, ns.actors) < 1:
        p.error("--rounds and --actors must be positive")
    cfg = Config(rounds=rounds, actors=ns.actors, trace=not ns.no_trace, timeout_s=ns.timeout)
    return cfg, impls, ns.json, ns


def main(argv: Sequence[str] | None = None) -> int:
    cfg, impls, as_json, ns = parse_args(argv)
    if ns.child is not None:
        return child_main(ns.child, cfg.actors, ns.traced)
    results = run_all(cfg, impls, progress)
    print(render_json(cfg, results) if as_json else render_table(cfg, results))
    return 1 if any(r.failed for r in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
