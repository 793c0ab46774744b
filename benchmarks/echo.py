"""Echo benchmark: examples/echo_cluster.py under its four policies against Node and trio.

Usage::

    python benchmarks/echo.py [--quick] [--json] [--servers a,b,...] [--rounds R]
                              [--seconds T] [--warmup W] [--conns N] [--slots C]

Every server is a separate OS process tree with 2 worker processes, started fresh for each
round on a free port of 127.0.0.1 (``--port 0``; the address is read from its ready line),
and stopped with SIGTERM (then reaped, and any process left over SIGKILLed) after it:

``round_robin`` ``least_busy`` ``shared`` ``reuseport``
            ``examples/echo_cluster.py --workers 2 --policy X`` (this runtime);
``node_rr`` ``node_none``
            a Node.js ``cluster`` echo (``benchmarks/node/echo_cluster.js``), 2 workers, with
            ``cluster.schedulingPolicy = SCHED_RR`` (the primary accepts and hands connections
            out) or ``SCHED_NONE`` (the workers accept on the shared socket);
``trio``    ``benchmarks/trio_echo.py``: a parent binds and listens, 2 forked children run
            ``trio.serve_listeners`` on the inherited socket; the no-runtime baseline;
``ceiling`` (round 1 only) ``loadgen serve``: a single-threaded C epoll echo in one process,
            how far the load generator and the kernel go on this machine with no Python or
            Node in the way.

Two loads, the same for every server, from ``benchmarks/echo/loadgen.c`` (single-threaded
epoll, compiled with ``gcc -O2`` into ``benchmarks/build/``), each W s of untimed warm-up
then T timed seconds, every echoed byte checked:

keep-alive  N (64) connections, each a loop of "send 64 bytes, read the 64 back": round trips/s;
new conn    C (32) slots, each a loop of "connect, send 64 bytes, read them back, close": new
            connections/s.

Rounds are interleaved (every server once, then again; the order rotates by one each round),
so drift in the load of a shared machine hits them all, and each figure is the MEDIAN over the
rounds; "±" is half the min-max range over the rounds relative to the median. Errors are
summed over the rounds. Progress goes to stderr, the table (or the JSON) to stdout. The exit
status is 1 if a server failed to start, died, did not stop, or if any echo failed.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

# Wherever this runs from (or as `python -m benchmarks.echo`), `_harness` is next to it.
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import (
    ROOT,
    arguments,
    chosen,
    describe,
    machine,
    machine_line,
    median,
    progress,
    ratio,
    spread,
    times,
    with_spread,
)

_HERE = Path(__file__).resolve().parent
LOADGEN_SRC = _HERE / "echo" / "loadgen.c"
BUILD_DIR = _HERE / "build"  # git-ignored
LOADGEN = BUILD_DIR / "loadgen"
HOST = "127.0.0.1"
SIZE = 64
WORKERS = 2
TICK = os.sysconf("SC_CLK_TCK")
READY = re.compile(r"listening on (\d+\.\d+\.\d+\.\d+):(\d+)")

OURS = ("round_robin", "least_busy", "shared", "reuseport")
SERVERS = (*OURS, "node_rr", "node_none", "trio", "ceiling")
LABELS = {
    "round_robin": "ours round_robin",
    "least_busy": "ours least_busy",
    "shared": "ours shared",
    "reuseport": "ours reuseport",
    "node_rr": "node SCHED_RR",
    "node_none": "node SCHED_NONE",
    "trio": "trio hand-written",
    "ceiling": "C epoll, 1 proc",
}
BASELINES = ("trio", "node_rr")


def server_argv(name: str) -> list[str]:
    listen = ["--host", HOST, "--port", "0", "--workers", str(WORKERS)]
    if name in OURS:
        script = ROOT / "examples" / "echo_cluster.py"
        return [sys.executable, str(script), *listen, "--policy", name]
    if name in ("node_rr", "node_none"):
        node = shutil.which("node") or "node"
        return [node, str(_HERE / "node" / "echo_cluster.js"), "--policy", name[5:], *listen]
    if name == "trio":
        return [sys.executable, str(_HERE / "trio_echo.py"), *listen]
    if name == "ceiling":
        return [str(LOADGEN), "serve", "--host", HOST, "--port", "0"]
    raise ValueError(name)


# --------------------------------------------------------------------------------------------
# Configuration and results
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Config:
    rounds: int
    seconds: float  # timed part of each load
    warmup: float  # untimed part before it
    conns: int  # keep-alive connections
    slots: int  # concurrent new-connection slots
    timeout_ms: int  # an echo (or a connect) taking longer is an error
    ready_timeout_s: float
    stop_timeout_s: float


@dataclass
class Load:
    """One run of the load generator against one server."""

    rate: float  # round trips/s or connections/s over the timed window
    ops: int
    elapsed_s: float
    errors: int
    error_kinds: dict[str, int]
    first_error: str
    loadgen_cpu: float  # the load generator's CPU time / the timed window (1.0 = one core)
    server_cpu: float  # the server's processes' CPU time / the load's wall time (cores)
    process_cpu: dict[str, float]  # the same per process ("m<pid>": the one we started)
    per_cpu_s: float  # echoes (warm-up + timed) per CPU-second of the server's processes
    other_cpu: float  # cores busy with anything else on the machine (other users) meanwhile
    steal: float  # cores taken by the hypervisor meanwhile


@dataclass
class RoundResult:
    keepalive: Load
    connect: Load
    ready_s: float
    pids_started: int  # processes of the server tree that appeared during the loads
    pids_gone: int  # ... and that disappeared (a worker replaced, a crash)
    exit_code: int | None
    notes: list[str] = field(default_factory=list)


class ServerFailed(Exception):
    pass


# --------------------------------------------------------------------------------------------
# Processes: the load generator, the servers, their process trees
# --------------------------------------------------------------------------------------------


def build_loadgen() -> Path:
    """Compile the load generator unless an up-to-date binary is there."""
    if LOADGEN.exists() and LOADGEN.stat().st_mtime >= LOADGEN_SRC.stat().st_mtime:
        return LOADGEN
    gcc = shutil.which("gcc") or shutil.which("cc")
    if gcc is None:
        raise SystemExit("echo.py: gcc (or cc) is needed to build the load generator")
    BUILD_DIR.mkdir(exist_ok=True)
    tmp = LOADGEN.with_suffix(".tmp")
    subprocess.run([gcc, "-O2", "-Wall", "-o", str(tmp), str(LOADGEN_SRC)], check=True)
    tmp.replace(LOADGEN)
    return LOADGEN


def _proc_stat(pid: int) -> tuple[int, str, int] | None:
    """(ppid, state, utime + stime in ticks) of a live process, None if gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2 :].split()
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[1]), fields[0], int(fields[11]) + int(fields[12])


def machine_ticks() -> tuple[int, int]:
    """(busy, steal) CPU ticks of the whole machine so far, from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    return user + nice + system + irq + softirq, steal


def tree(root: int) -> dict[int, int]:
    """The live processes of root's tree (root included): pid -> CPU ticks so far."""
    stats: dict[int, tuple[int, str, int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            st = _proc_stat(int(entry))
            if st is not None:
                stats[int(entry)] = st
    found: dict[int, int] = {}
    if root in stats:
        found[root] = stats[root][2]
    grew = True
    while grew:
        grew = False
        for pid, (ppid, _, ticks) in stats.items():
            if ppid in found and pid not in found:
                found[pid] = ticks
                grew = True
    return found


class Server:
    """One server process tree: started in a session of its own, stopped with SIGTERM."""

    def __init__(self, name: str, cfg: Config, workdir: Path) -> None:
        self.name = name
        self.cfg = cfg
        self.out = workdir / f"{name}.out"
        self.err = workdir / f"{name}.err"
        self.known: set[int] = set()
        t0 = time.perf_counter()
        with self.out.open("wb") as out, self.err.open("wb") as err:
            self.proc = subprocess.Popen(
                server_argv(name),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                cwd=ROOT,
                start_new_session=True,
            )
        try:
            self.host, self.port = self._wait_ready()
        except BaseException:
            self.stop()
            raise
        self.ready_s = time.perf_counter() - t0
        self.known.update(tree(self.proc.pid))

    def _wait_ready(self) -> tuple[str, int]:
        deadline = time.monotonic() + self.cfg.ready_timeout_s
        while time.monotonic() < deadline:
            match = READY.search(self.out.read_text(errors="replace"))
            if match:
                return match.group(1), int(match.group(2))
            if self.proc.poll() is not None:
                raise ServerFailed(
                    f"exited with {self.proc.returncode} before it was ready{self.tail()}"
                )
            time.sleep(0.02)
        raise ServerFailed(f"not ready after {self.cfg.ready_timeout_s} s{self.tail()}")

    def tail(self) -> str:
        lines = self.err.read_text(errors="replace").strip().splitlines()[-4:]
        return (": " + " | ".join(lines)) if lines else ""

    def stop(self) -> tuple[int | None, list[str]]:
        """SIGTERM, wait, reap; SIGKILL whatever is left. Returns (exit code, notes)."""
        notes = []
        self.known.update(tree(self.proc.pid))
        code: int | None = None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                code = self.proc.wait(self.cfg.stop_timeout_s)
            except subprocess.TimeoutExpired:
                notes.append(f"did not stop within {self.cfg.stop_timeout_s} s of SIGTERM")
        else:
            code = self.proc.returncode
            notes.append(f"had exited (status {code}) before SIGTERM")
        if code is not None and code != 0:
            notes.append(f"exit status {code}{self.tail()}")
        # Whatever of its tree is still there once the root is gone (or stuck) gets SIGKILL.
        deadline = time.monotonic() + 5
        while True:
            left = [pid for pid in self.known if _proc_stat(pid) is not None]
            if not left or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if left:
            notes.append(f"processes left after it stopped, killed: {sorted(left)}")
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        return code, notes


def run_load(server: Server, mode: str, cfg: Config) -> Load:
    conns = cfg.conns if mode == "keepalive" else cfg.slots
    argv = [
        str(LOADGEN),
        "client",
        "--host",
        server.host,
        "--port",
        str(server.port),
        "--mode",
        mode,
        "--conns",
        str(conns),
        "--size",
        str(SIZE),
        "--seconds",
        str(cfg.seconds),
        "--warmup",
        str(cfg.warmup),
        "--timeout-ms",
        str(cfg.timeout_ms),
    ]
    before = tree(server.proc.pid)
    children0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    busy0, steal0 = machine_ticks()
    t0 = time.perf_counter()
    out = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        check=False,
        timeout=cfg.warmup + cfg.seconds + cfg.timeout_ms / 1e3 + 40,
    )
    wall = time.perf_counter() - t0
    busy1, steal1 = machine_ticks()
    children1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    after = tree(server.proc.pid)
    server.known.update(after)
    if out.returncode != 0:
        raise ServerFailed(f"loadgen exited with {out.returncode}: {out.stderr.strip()}")
    r = json.loads(out.stdout)
    cpu = {pid: (ticks - before.get(pid, 0)) / TICK / wall for pid, ticks in after.items()}
    loadgen_all = (
        children1.ru_utime + children1.ru_stime - children0.ru_utime - children0.ru_stime
    ) / wall
    machine_busy = (busy1 - busy0) / TICK / wall
    return Load(
        rate=r["ops"] / r["elapsed_s"],
        ops=r["ops"],
        elapsed_s=r["elapsed_s"],
        errors=r["errors"],
        error_kinds={k: v for k, v in r["error_kinds"].items() if v},
        first_error=r["first_error"],
        loadgen_cpu=r["cpu_s"] / r["elapsed_s"],
        server_cpu=sum(cpu.values()),
        process_cpu={
            (f"m{pid}" if pid == server.proc.pid else str(pid)): round(c, 3)
            for pid, c in sorted(cpu.items())
        },
        per_cpu_s=(r["ops"] + r["warmup_ops"]) / max(1e-9, sum(cpu.values()) * wall),
        other_cpu=max(0.0, machine_busy - sum(cpu.values()) - loadgen_all),
        steal=(steal1 - steal0) / TICK / wall,
    )


def run_round(name: str, cfg: Config, workdir: Path) -> RoundResult:
    server = Server(name, cfg, workdir)
    try:
        start = set(tree(server.proc.pid))
        keepalive = run_load(server, "keepalive", cfg)
        connect = run_load(server, "connect", cfg)
        end = set(tree(server.proc.pid))
        alive = server.proc.poll() is None
    finally:
        code, notes = server.stop()
    if not alive:
        raise ServerFailed("; ".join(notes) or "the server died during the round")
    gone, started = start - end, end - start
    if gone or started:
        notes.append(
            f"processes replaced during the loads: {len(gone)} gone, {len(started)} started"
        )
    return RoundResult(keepalive, connect, server.ready_s, len(started), len(gone), code, notes)


# --------------------------------------------------------------------------------------------
# Driver and summary
# --------------------------------------------------------------------------------------------


@dataclass
class ServerResult:
    rounds: list[RoundResult] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def values(self, metric: str) -> list[float]:
        load, attr = metric.split(".")
        return [getattr(getattr(r, load), attr) for r in self.rounds]

    def median(self, metric: str) -> float | None:
        return median(self.values(metric))

    def spread(self, metric: str) -> float | None:
        return spread(self.values(metric), self.median(metric))

    def errors(self, load: str) -> int:
        return sum(getattr(r, load).errors for r in self.rounds)

    @property
    def clean(self) -> bool:
        return not self.failures and not any(
            r.keepalive.errors or r.connect.errors or r.exit_code != 0 or r.notes
            for r in self.rounds
        )


def run_all(
    cfg: Config, names: Sequence[str], log: Callable[[str], None]
) -> dict[str, ServerResult]:
    results = {name: ServerResult() for name in names}
    main = [n for n in names if n != "ceiling"]
    with tempfile.TemporaryDirectory(prefix="echo-bench-") as tmp:
        for i in range(cfg.rounds):
            shift = i % len(main) if main else 0
            order = main[shift:] + main[:shift]
            if i == 0 and "ceiling" in results:
                order.append("ceiling")
            for name in order:
                t0 = time.perf_counter()
                try:
                    r = run_round(name, cfg, Path(tmp))
                except Stopped:
                    raise
                except Exception as exc:
                    results[name].failures.append(f"round {i + 1}: {describe(exc)}")
                    log(f"round {i + 1}/{cfg.rounds} {name}: FAILED: {describe(exc)}")
                    continue
                results[name].rounds.append(r)
                ka, nc = r.keepalive, r.connect
                log(
                    f"round {i + 1}/{cfg.rounds} {name:>11}: "
                    f"keep-alive {ka.rate:>8,.0f} rt/s (err {ka.errors}, "
                    f"server {ka.server_cpu:.2f} cores {_split(ka)}, loadgen {ka.loadgen_cpu:.0%})"
                    f"  new conn {nc.rate:>7,.0f}/s (err {nc.errors}, "
                    f"server {nc.server_cpu:.2f} cores {_split(nc)}, loadgen {nc.loadgen_cpu:.0%})"
                    f"  others {ka.other_cpu:.2f}/{nc.other_cpu:.2f} cores"
                    f"  ready {r.ready_s:.2f} s ({time.perf_counter() - t0:.1f} s)"
                )
                for load in (ka, nc):
                    if load.errors:
                        log(f"    errors {load.error_kinds}: first: {load.first_error}")
                for note in r.notes:
                    log(f"    note: {note}")
    return results


def _split(load: Load) -> str:
    """The busy processes' shares, e.g. [m0.05 0.81 0.77] (m: the process we started)."""
    busy = [
        f"{k[0] if k[0] == 'm' else ''}{v:.2f}" for k, v in load.process_cpu.items() if v >= 0.01
    ]
    return "[" + " ".join(busy) + "]"


METRICS = ("keepalive.rate", "connect.rate")
EFFICIENCY = ("keepalive.per_cpu_s", "connect.per_cpu_s")


def ratios(
    results: dict[str, ServerResult], metrics: Sequence[str] = METRICS
) -> dict[str, dict[str, float | None]]:
    out: dict[str, dict[str, float | None]] = {}
    for name, result in results.items():
        row: dict[str, float | None] = {}
        for base in BASELINES:
            if base not in results or base == name:
                continue
            for metric in metrics:
                key = f"{metric.split('.')[0]} / {base}"
                row[key] = ratio(result.median(metric), results[base].median(metric))
        out[name] = row
    return out


# (ours metric, baseline, factor): ours >= factor x baseline
TARGETS = (
    ("keepalive.rate", "trio", 1.0),
    ("connect.rate", "trio", 1.0),
    ("connect.rate", "node_rr", 1.5),
)


def targets(results: dict[str, ServerResult]) -> list[dict[str, Any]]:
    found = []
    for name in OURS:
        if name not in results:
            continue
        for metric, base, factor in TARGETS:
            if base not in results:
                continue
            value = ratio(results[name].median(metric), results[base].median(metric))
            found.append(
                {
                    "server": name,
                    "metric": metric,
                    "baseline": base,
                    "factor": factor,
                    "ratio": value,
                    "met": None if value is None else value >= factor,
                }
            )
    return found


def render_table(cfg: Config, results: dict[str, ServerResult]) -> str:
    lines = [
        f"Echo benchmark, {SIZE}-byte echoes, {WORKERS} worker processes per server, "
        f"median of {cfg.rounds} rounds",
        f"keep-alive: {cfg.conns} connections; new conn: {cfg.slots} slots; "
        f"{cfg.seconds:g} s timed after {cfg.warmup:g} s warm-up; loads from one C epoll "
        f"process on the same host",
        machine_line(),
        "",
    ]

    def cell(result: ServerResult, metric: str) -> str:
        med, spread = result.median(metric), result.spread(metric)
        if med is None or spread is None:
            return "error"
        return with_spread(med, spread, ",.0f")

    def cpu(result: ServerResult, load: str) -> str:
        srv = result.median(f"{load}.server_cpu")
        gen = result.median(f"{load}.loadgen_cpu")
        return "-" if srv is None or gen is None else f"{srv:.2f} / {gen:.2f}"

    header = (
        f"{'':<19}{'keep-alive rt/s':>17}{'new conn/s':>15}{'errors ka/new':>15}"
        f"{'cpu srv/gen ka':>17}{'cpu srv/gen new':>17}"
    )
    lines.append(header)
    for name, result in results.items():
        label = LABELS[name] + (" *" if name == "ceiling" else "")
        errors = f"{result.errors('keepalive')}/{result.errors('connect')}"
        lines.append(
            f"{label:<19}{cell(result, 'keepalive.rate'):>17}{cell(result, 'connect.rate'):>15}"
            f"{errors:>15}{cpu(result, 'keepalive'):>17}{cpu(result, 'connect'):>17}"
        )
    if "ceiling" in results:
        lines.append("* the ceiling is measured in round 1 only; it is not a target")
    lines.append("cpu srv/gen: cores used by the server's processes / by the load generator")
    others = [
        x.other_cpu for r in results.values() for rr in r.rounds for x in (rr.keepalive, rr.connect)
    ]
    steal = [
        x.steal for r in results.values() for rr in r.rounds for x in (rr.keepalive, rr.connect)
    ]
    if others:
        lines.append(
            f"other processes on the machine used {statistics.median(others):.2f} cores "
            f"(median; {min(others):.2f}-{max(others):.2f}) during the loads; "
            f"hypervisor steal {statistics.median(steal):.2f} cores"
        )
    for name, result in results.items():
        for failure in result.failures:
            lines.append(f"{name}: {failure}")
        for i, r in enumerate(result.rounds):
            for load in ("keepalive", "connect"):
                x: Load = getattr(r, load)
                if x.errors:
                    lines.append(
                        f"{name}: a round's {load}: {x.errors} errors {x.error_kinds}; "
                        f"first: {x.first_error}"
                    )
            for note in r.notes:
                lines.append(f"{name}: round #{i + 1} that ran: {note}")
        for load in ("keepalive", "connect"):
            busy = result.median(f"{load}.loadgen_cpu")
            if busy is not None and busy > 0.9 and name != "ceiling":
                lines.append(
                    f"note: the load generator was busy {busy:.0%} of the time "
                    f"against {name} ({load}): it may be what limits the rate"
                )

    present = [b for b in BASELINES if b in results]
    if present:
        cols = [f"{load} / {base}" for base in present for load in ("keepalive", "connect")]

        def ratio_rows(rs: dict[str, dict[str, float | None]]) -> None:
            lines.append(f"{'':<19}" + "".join(f"{c:>21}" for c in cols))
            for name, row in rs.items():
                if name == "ceiling":
                    continue
                cells = []
                for c in cols:
                    value = row.get(c)
                    cells.append("-" if c not in row else times(value))
                lines.append(f"{LABELS[name]:<19}" + "".join(f"{v:>21}" for v in cells))

        lines.append("")
        lines.append("Ratios of medians (>1x: more per second than the baseline)")
        ratio_rows(ratios(results))
        lines.append("")
        lines.append(
            "Echoes per CPU-second of the server's processes (efficiency; less sensitive "
            "than rates to other load)"
        )
        lines.append(f"{'':<19}{'keep-alive rt':>17}{'new conn':>15}")
        for name, result in results.items():
            ka, nc = (result.median(m) for m in EFFICIENCY)
            lines.append(
                f"{LABELS[name]:<19}"
                + (f"{ka:>17,.0f}" if ka else f"{'-':>17}")
                + (f"{nc:>15,.0f}" if nc else f"{'-':>15}")
            )
        lines.append("Ratios of those medians")
        ratio_rows(ratios(results, EFFICIENCY))
    ts = targets(results)
    if ts:
        lines.append("")
        lines.append("Targets (echo_cluster, each policy):")
        for t in ts:
            what = "keep-alive rt/s" if t["metric"].startswith("keepalive") else "new conn/s"
            goal = f">= {t['factor']:g}x {LABELS[t['baseline']]} {what}"
            shown = times(t["ratio"])
            verdict = "n/a" if t["met"] is None else "met" if t["met"] else "NOT met"
            lines.append(f"  {LABELS[t['server']]:<18} {goal:<42} {shown:>7}  {verdict}")
    return "\n".join(lines)


def render_json(cfg: Config, results: dict[str, ServerResult]) -> str:
    doc = {
        "config": asdict(cfg) | {"size": SIZE, "workers": WORKERS, "host": HOST},
        "machine": machine(),
        "results": {
            name: {
                "label": LABELS[name],
                "failures": r.failures,
                "median": {
                    k: r.median(k)
                    for k in (
                        *METRICS,
                        "keepalive.server_cpu",
                        "connect.server_cpu",
                        "keepalive.loadgen_cpu",
                        "connect.loadgen_cpu",
                        "keepalive.other_cpu",
                        "connect.other_cpu",
                        *EFFICIENCY,
                    )
                },
                "spread": {k: r.spread(k) for k in METRICS},
                "errors": {"keepalive": r.errors("keepalive"), "connect": r.errors("connect")},
                "rounds": [asdict(x) for x in r.rounds],
            }
            for name, r in results.items()
        },
        "ratios": ratios(results),
        "ratios_per_cpu_s": ratios(results, EFFICIENCY),
        "targets": targets(results),
    }
    return json.dumps(doc, indent=2)


def parse_args(argv: Sequence[str] | None = None) -> tuple[Config, list[str], bool]:
    p = arguments(__doc__, "2 rounds of 3 s instead of 3 of 5 s", "--servers", SERVERS)
    p.add_argument("--rounds", type=int, help="rounds per server (default 3, quick 2)")
    p.add_argument("--seconds", type=float, help="timed seconds per load (default 5, quick 3)")
    p.add_argument("--warmup", type=float, default=0.3, help="untimed seconds before each load")
    p.add_argument("--conns", type=int, default=64, help="keep-alive connections")
    p.add_argument("--slots", type=int, default=32, help="concurrent new-connection slots")
    p.add_argument(
        "--timeout-ms",
        type=int,
        default=2000,
        help="an echo or connect slower than this is an error",
    )
    ns = p.parse_args(argv)
    names = chosen(p, "--servers", ns.servers, SERVERS)
    if any(s.startswith("node") for s in names) and shutil.which("node") is None:
        print("echo.py: node not found: skipping the Node servers", file=sys.stderr)
        names = [s for s in names if not s.startswith("node")]
    rounds = ns.rounds if ns.rounds is not None else (2 if ns.quick else 3)
    seconds = ns.seconds if ns.seconds is not None else (3.0 if ns.quick else 5.0)
    if rounds < 1 or seconds <= 0 or ns.warmup < 0 or min(ns.conns, ns.slots) < 1:
        p.error("--rounds, --seconds, --conns and --slots must be positive, --warmup >= 0")
    cfg = Config(
        rounds=rounds,
        seconds=seconds,
        warmup=ns.warmup,
        conns=ns.conns,
        slots=ns.slots,
        timeout_ms=ns.timeout_ms,
        ready_timeout_s=30.0,
        stop_timeout_s=15.0,
    )
    return cfg, names, ns.json


class Stopped(Exception):
    pass


def _stop_on_sigterm(number: int, frame: Any) -> None:
    raise Stopped(f"stopped by {signal.Signals(number).name}")


def main(argv: Sequence[str] | None = None) -> int:
    cfg, names, as_json = parse_args(argv)
    # The servers run in sessions of their own (a Ctrl-C does not reach them): an interrupted
    # run must unwind through Server.stop() to stop and reap them.
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    build_loadgen()
    try:
        results = run_all(cfg, names, progress)
    except (Stopped, KeyboardInterrupt) as exc:
        progress(f"echo.py: {exc or 'interrupted'}; every server was stopped")
        return 130
    print(render_json(cfg, results) if as_json else render_table(cfg, results))
    return 0 if all(r.clean and r.rounds for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
