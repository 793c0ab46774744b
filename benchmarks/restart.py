"""Restart-latency benchmark: how fast a SIGKILLed worker is replaced, ours against Node.

Usage::

    python benchmarks/restart.py [--quick] [--json] [--restarts N] [--spawn-restarts M]
                                 [--impl forkserver,spawn,node] [--rounds R]

Restart latency is the time from SIGKILL of a worker process to its replacement being ready,
measured by the process that supervises it, for three implementations:

``forkserver``  this runtime with its default start method: a supervisor
                (``max_restarts=100000, within=1.0``) with one ``worker(Member, process=True)``
                in ``open_system(tree)``; the replacement is forked by the fork server; ready
                is the ``ActorReady`` event of the new pid, as ``system.events()`` delivers it;
``spawn``       the same with ``open_system(tree, start_method="spawn")``: every replacement is
                a cold interpreter (fewer restarts: it is context, and slow);
``node``        a Node.js ``cluster`` master (``benchmarks/node/restart_master.js``) with one
                worker, restarted by ``cluster.on('exit', () => cluster.fork())``; ready is the
                replacement's ``'online'`` event (also timed: its first ``'ready'`` message).

The benchmark kills the worker itself (ours: ``os.kill`` in the master's trio loop; Node:
``process.kill`` in the master), the clock starting just before the kill, then waits for the
replacement to be ready and ``--gap`` seconds more before the next kill. Each round starts a
fresh system (or Node master), does ``--warmup`` untimed restarts, then its share of the timed
ones. Rounds are interleaved (round 1 of every implementation, then round 2, ...), so drift in
the load of a shared machine hits all of them alike. p50 and p99 (nearest rank) are taken over
all the timed restarts of an implementation; the "±" next to a p50 is half the min-max range of
the per-round medians, relative to that p50.

The Actor class lives at module top level and the entry point is guarded by
``if __name__ == "__main__"``: the runtime's workers (and its fork server) import this file
as ``__mp_main__``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import trio

# Wherever this runs from (or as `python -m benchmarks.restart`), `_harness` is next to it.
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
    node_json,
    percentile,
    progress,
    ratio,
    spread,
    times,
    with_spread,
)

_HERE = Path(__file__).resolve().parent

NODE_MASTER = _HERE / "node" / "restart_master.js"
IMPLS = ("forkserver", "spawn", "node")
LABELS = {"forkserver": "ours fork server", "spawn": "ours spawn", "node": "node cluster"}
WORKER_PATH = "root/w"
StartMethod = Literal["forkserver", "spawn"]

# --------------------------------------------------------------------------------------------
# OUR runtime: the supervised worker. If the runtime does not import, the anchor still runs.
# --------------------------------------------------------------------------------------------

try:
    from actors import (
        Actor,
        ActorExited,
        ActorReady,
        Event,
        SupervisorGaveUp,
        open_system,
        supervisor,
        worker,
    )
except Exception as exc:
    OURS_IMPORT_ERROR: str | None = f"{type(exc).__name__}: {exc}"
else:
    OURS_IMPORT_ERROR = None

    class Member(Actor):
        """Does nothing: ready as soon as the runtime has started it."""

    TREE = supervisor(
        "root",
        max_restarts=100_000,
        within=1.0,
        children=[worker(Member, name="w", process=True)],
    )


# --------------------------------------------------------------------------------------------
# Configuration and results
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Config:
    restarts: int  # timed restarts, ours with the fork server and node (split over the rounds)
    spawn_restarts: int  # timed restarts, ours with start_method="spawn"
    rounds: int
    warmup: int  # untimed restarts at the start of every round of every implementation
    gap_s: float  # pause between a replacement being ready and the next kill
    timeout_s: float  # one restart taking longer than this is an error

    def timed(self, impl: str) -> int:
        return self.spawn_restarts if impl == "spawn" else self.restarts

    def share(self, impl: str, round_index: int) -> int:
        """Timed restarts of ``impl`` in round ``round_index`` (the total split evenly)."""
        base, extra = divmod(self.timed(impl), self.rounds)
        return base + (1 if round_index < extra else 0)


@dataclass(frozen=True)
class Sample:
    """One restart; nanoseconds from just before the SIGKILL."""

    exit_ns: int | None  # until the supervisor saw the death (ActorExited / cluster 'exit')
    ready_ns: int  # until the replacement was ready (ActorReady / cluster 'online')
    message_ns: int | None = None  # node only: until the replacement's 'ready' message


@dataclass(frozen=True)
class RoundData:
    samples: list[Sample]
    anomalies: list[str]


# --------------------------------------------------------------------------------------------
# (a), (b) OUR runtime
# --------------------------------------------------------------------------------------------


def _pending(events: trio.MemoryReceiveChannel[Event]) -> list[Event]:
    out: list[Event] = []
    while True:
        try:
            out.append(events.receive_nowait())
        except trio.WouldBlock:
            return out


async def _restart_once(
    events: trio.MemoryReceiveChannel[Event], pid: int, anomalies: list[str]
) -> tuple[Sample, int]:
    """SIGKILL ``pid``; return the timings and the replacement's pid once it is ready."""
    for ev in _pending(events):  # anything that happened since the last restart is odd
        anomalies.append(f"unexpected event between restarts: {ev!r}")
    exit_ns: int | None = None
    t0 = time.perf_counter_ns()
    os.kill(pid, signal.SIGKILL)
    async for ev in events:
        now = time.perf_counter_ns()
        if isinstance(ev, SupervisorGaveUp):
            raise Verdict(f"supervisor {ev.path} gave up: {ev.reason.describe()}")
        if ev.path != WORKER_PATH:
            anomalies.append(f"event for another path: {ev!r}")
        elif isinstance(ev, ActorExited):
            if ev.pid != pid:
                anomalies.append(f"exit of pid {ev.pid}, expected {pid}")
            elif ev.reason.kind != "killed" or ev.reason.signal != signal.SIGKILL:
                anomalies.append(f"pid {pid} exit reported as {ev.reason.describe()}")
            exit_ns = now - t0
        elif isinstance(ev, ActorReady) and ev.pid != pid:
            if ev.pid is None:
                raise Verdict(f"ActorReady without a pid: {ev!r}")
            if exit_ns is None:
                anomalies.append(f"replacement {ev.pid} ready before the exit of {pid} was seen")
            return Sample(exit_ns=exit_ns, ready_ns=now - t0), ev.pid
    raise Verdict("the events channel closed during a restart")


async def _ours_round(start_method: StartMethod, timed: int, cfg: Config) -> RoundData:
    anomalies: list[str] = []
    samples: list[Sample] = []
    async with open_system(TREE, start_method=start_method) as system:
        events = system.events(history=True)
        pid: int | None = None
        for ev in _pending(events):  # the tree's start
            if isinstance(ev, ActorReady) and ev.path == WORKER_PATH:
                pid = ev.pid
        if pid is None:
            raise Verdict(f"no ActorReady with a pid for {WORKER_PATH} after the tree started")
        for i in range(cfg.warmup + timed):
            await trio.sleep(cfg.gap_s)
            with trio.move_on_after(cfg.timeout_s) as scope:
                sample, pid = await _restart_once(events, pid, anomalies)
            if scope.cancelled_caught:
                raise TimeoutError(f"no replacement ready within {cfg.timeout_s} s of a kill")
            if i >= cfg.warmup:
                samples.append(sample)
        events.close()
    return RoundData(samples, anomalies)


def run_ours(start_method: StartMethod) -> Callable[[int, Config], RoundData]:
    def run(timed: int, cfg: Config) -> RoundData:
        return trio.run(_ours_round, start_method, timed, cfg)

    return run


class _ExpectedKills(logging.Filter):
    """Silences the runtime's warning for each exit we cause; counts every other warning."""

    def __init__(self) -> None:
        super().__init__()
        self.unexpected = 0

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args if isinstance(record.args, tuple) else ()
        if (
            record.msg == "%s exited: %s"
            and args[:1] == (WORKER_PATH,)
            and str(args[1]).startswith("killed")
        ):
            return False
        if record.levelno >= logging.WARNING:
            self.unexpected += 1
        return True


# --------------------------------------------------------------------------------------------
# (c) Node: a cluster master restarting its worker, measured by node/restart_master.js
# --------------------------------------------------------------------------------------------


def run_node(timed: int, cfg: Config) -> RoundData:
    args = [
        "--restarts",
        str(timed),
        "--warmup",
        str(cfg.warmup),
        "--gap-ms",
        str(cfg.gap_s * 1e3),
        "--timeout-ms",
        str(cfg.timeout_s * 1e3),
    ]
    # The master stops by itself after a restart exceeds its timeout; this bounds the rest.
    limit = (cfg.warmup + timed + 1) * (cfg.timeout_s + cfg.gap_s) + 10
    doc = node_json(NODE_MASTER, args, limit)
    samples = []
    for r in doc["restarts"]:
        if r["online_ns"] is None:
            raise Verdict(f"a restart without an 'online' event: {r}")
        samples.append(Sample(r["exit_ns"], r["online_ns"], r["message_ns"]))
    return RoundData(samples, list(doc["anomalies"]))


# --------------------------------------------------------------------------------------------
# Driver, summary, output
# --------------------------------------------------------------------------------------------

RUNNERS: dict[str, Callable[[int, Config], RoundData]] = {
    "forkserver": run_ours("forkserver"),
    "spawn": run_ours("spawn"),
    "node": run_node,
}
# (name, attribute of Sample)
METRICS = {"ready": "ready_ns", "exit": "exit_ns", "message": "message_ns"}


@dataclass
class ImplResult(Outcome):
    rounds: list[RoundData] = field(default_factory=list)

    def values_ms(self, metric: str, round_data: RoundData | None = None) -> list[float]:
        """Sorted values of a metric, in ms, over one round or all of them."""
        rounds = [round_data] if round_data is not None else self.rounds
        attr = METRICS[metric]
        return sorted(
            getattr(s, attr) / 1e6
            for r in rounds
            for s in r.samples
            if getattr(s, attr) is not None
        )

    def pct(self, metric: str, p: float) -> float | None:
        values = self.values_ms(metric)
        return percentile(values, p) if values and self.status == "ok" else None

    def spread(self, metric: str) -> float | None:
        """Half the min-max range of the per-round medians, relative to the overall p50."""
        medians = [statistics.median(v) for r in self.rounds if (v := self.values_ms(metric, r))]
        return spread(medians, self.pct(metric, 50))

    @property
    def count(self) -> int:
        return sum(len(r.samples) for r in self.rounds)

    @property
    def anomalies(self) -> list[str]:
        return [a for r in self.rounds for a in r.anomalies]


def run_all(cfg: Config, impls: Sequence[str], log: Callable[[str], None]) -> dict[str, ImplResult]:
    results = {impl: ImplResult() for impl in impls}
    check_available(results, ("forkserver", "spawn"), OURS_IMPORT_ERROR)

    def run(impl: str, i: int) -> RoundData | None:
        timed = cfg.share(impl, i)
        return RUNNERS[impl](timed, cfg) if timed else None

    for i, impl, data, seconds in interleave(results, cfg.rounds, run, log):
        result = results[impl]
        result.rounds.append(data)
        ready = result.values_ms("ready", data)
        exits = result.values_ms("exit", data)
        extra = ""
        if impl == "node":
            message = result.values_ms("message", data)
            extra = f"  'message' p50 {statistics.median(message):6.1f} ms"
        log(
            f"round {i + 1}/{cfg.rounds} {impl:>10}: {len(ready):3d} restarts  "
            f"ready p50 {statistics.median(ready):6.1f} ms  max {ready[-1]:6.1f} ms  "
            f"exit seen p50 {statistics.median(exits) if exits else math.nan:5.1f} ms"
            f"{extra}  ({seconds:.1f} s)"
            + (f"  [{len(data.anomalies)} anomalies]" if data.anomalies else "")
        )
    return results


# (name, our implementation, node metric, percentile)
RATIOS = (
    ("fork server / node 'online' p50", "forkserver", "ready", 50),
    ("fork server / node 'online' p99", "forkserver", "ready", 99),
    ("spawn / node 'online' p50", "spawn", "ready", 50),
    ("spawn / node 'online' p99", "spawn", "ready", 99),
    ("fork server / node 'message' p50", "forkserver", "message", 50),
    ("fork server / node 'message' p99", "forkserver", "message", 99),
)


def ratios(results: dict[str, ImplResult]) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    node = results.get("node")
    if node is None:
        return out
    for name, ours, node_metric, p in RATIOS:
        if ours not in results:
            continue
        out[name] = ratio(results[ours].pct("ready", p), node.pct(node_metric, p))
    return out


def render_table(cfg: Config, results: dict[str, ImplResult], warnings: int) -> str:
    def cell(result: ImplResult, metric: str, p: float | None) -> str:
        if result.status != "ok":
            return result.cell
        if p is None:  # the count row
            return f"{result.count}"
        value = result.pct(metric, p)
        if value is None:
            return "-"
        if p == 50:
            return with_spread(value, result.spread(metric), ",.1f")
        return f"{value:,.1f}"

    lines = [
        "Restart latency: SIGKILL of a worker -> its replacement ready, seen by its supervisor",
        f"{cfg.rounds} interleaved rounds, {cfg.warmup} untimed restart(s) per round, "
        f"{cfg.gap_s * 1e3:.0f} ms between ready and the next kill; "
        "percentiles over all timed restarts (nearest rank)",
        machine_line(),
        "",
    ]
    impls = list(results)
    width = 18
    rows: list[tuple[str, str, float | None, set[str]]] = [
        ("timed restarts", "ready", None, set(IMPLS)),
        ("restart p50 ms", "ready", 50, set(IMPLS)),
        ("restart p99 ms", "ready", 99, set(IMPLS)),
        ("  to 'message' p50 ms", "message", 50, {"node"}),
        ("  to 'message' p99 ms", "message", 99, {"node"}),
        ("death seen p50 ms", "exit", 50, set(IMPLS)),
        ("death seen p99 ms", "exit", 99, set(IMPLS)),
    ]
    lines.append(f"{'':<24}" + "".join(f"{LABELS[i]:>{width}}" for i in impls))
    for label, metric, p, which in rows:
        if not which & set(impls):
            continue
        cells = [cell(results[i], metric, p) if i in which else "" for i in impls]
        lines.append(f"{label:<24}" + "".join(f"{c:>{width}}" for c in cells))
    lines.append(
        "ready = ours: ActorReady of the new pid; node: cluster 'online' "
        "('message' = the worker's first process.send)"
    )
    for impl, result in results.items():
        if (problem := result.problem(impl)) is not None:
            lines.append(problem)
        if result.anomalies:
            lines.append(f"{impl}: {len(result.anomalies)} anomalies, e.g. {result.anomalies[0]}")
    if warnings:
        lines.append(f"note: the runtime logged {warnings} unexpected warning(s) (see stderr)")
    rs = ratios(results)
    if rs:
        lines.append("")
        lines.append("ours / node cluster (below 1x: we restart faster)")
        for name, value in rs.items():
            lines.append(f"  {name:<34} = " + times(value))
    return "\n".join(lines)


def render_json(cfg: Config, results: dict[str, ImplResult], warnings: int) -> str:
    def summary(r: ImplResult) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for metric in METRICS:
            if r.values_ms(metric):
                out[f"{metric}_p50_ms"] = r.pct(metric, 50)
                out[f"{metric}_p99_ms"] = r.pct(metric, 99)
                out[f"{metric}_p50_spread"] = r.spread(metric)
        return out

    doc = {
        "config": asdict(cfg),
        "machine": machine(),
        "results": {
            impl: {
                "status": r.status,
                "error": r.error,
                "restarts": r.count,
                **summary(r),
                "anomalies": r.anomalies,
                "rounds": [[asdict(s) for s in data.samples] for data in r.rounds],
            }
            for impl, r in results.items()
        },
        "ratios": ratios(results),
        "unexpected_runtime_warnings": warnings,
    }
    return json.dumps(doc, indent=2)


def parse_args(argv: Sequence[str] | None = None) -> tuple[Config, list[str], bool]:
    p = arguments(__doc__, "30 restarts (spawn: 10) instead of 60", "--impl", IMPLS)
    p.add_argument(
        "--restarts", type=int, help="timed restarts, fork server and node (default 60, quick 30)"
    )
    p.add_argument(
        "--spawn-restarts", type=int, help="timed restarts with spawn (default 20, quick 10)"
    )
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    p.add_argument("--warmup", type=int, default=1, help="untimed restarts per round (default 1)")
    p.add_argument(
        "--gap", type=float, default=0.05, help="seconds from ready to the next kill (0.05)"
    )
    p.add_argument("--timeout", type=float, default=30.0, help="max seconds for one restart")
    ns = p.parse_args(argv)
    impls = chosen(p, "--impl", ns.impl, IMPLS)
    restarts = ns.restarts if ns.restarts is not None else (30 if ns.quick else 60)
    spawn = ns.spawn_restarts if ns.spawn_restarts is not None else (10 if ns.quick else 20)
    if min(restarts, spawn, ns.rounds) < 1 or ns.warmup < 0 or ns.gap < 0 or ns.timeout <= 0:
        p.error(
            "--restarts, --spawn-restarts and --rounds must be positive, --warmup and --gap "
            "non-negative, --timeout positive"
        )
    cfg = Config(
        restarts=restarts,
        spawn_restarts=spawn,
        rounds=ns.rounds,
        warmup=ns.warmup,
        gap_s=ns.gap,
        timeout_s=ns.timeout,
    )
    return cfg, impls, ns.json


def main(argv: Sequence[str] | None = None) -> int:
    cfg, impls, as_json = parse_args(argv)
    expected = _ExpectedKills()
    logging.getLogger("actors.events").addFilter(expected)
    results = run_all(cfg, impls, progress)
    output = render_json if as_json else render_table
    print(output(cfg, results, expected.unexpected))
    return 1 if any(r.failed for r in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
