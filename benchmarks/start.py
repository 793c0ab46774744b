"""Start time: a fresh interpreter importing the runtime, and a whole program's first reply.

Usage::

    python benchmarks/start.py [--quick] [--json] [--impl python,imports,actors,...]
                               [--runs N] [--timeout S]

Every figure is a fresh ``python`` (``sys.executable``) started with ``subprocess`` and timed
from just before the exec to the moment the first line it prints arrives here:

``python``        ``-c "print('ok')"``: the interpreter alone (site, the venv);
``imports``       ``-c "import trio, pydantic; print('ok')"``;
``actors``        ``-c "import actors; print('ok')"``;
``ours``          ``start/ours_first_reply.py``: the imports of a user's program, then
                  ``open_system()``, one process actor spawned (forked from the system's fork
                  server, which this first spawn starts) and asked once; the line is printed
                  when the reply is in;
``ours-spawn``    the same with ``open_system(start_method="spawn")`` (the worker is a fresh
                  interpreter, no fork server);
``mp``            ``start/mp_first_reply.py``: ``multiprocessing`` with the fork context, a
                  ``Process`` running an echo loop, one reply over a ``Pipe``;
``trio``          ``start/trio_first_line.py``: a bare trio program that starts a child
                  ``python -c`` echoing one line of its stdin, and reads the line back;
``thespian``      ``start/thespian_first_reply.py``: Thespian's ``multiprocQueueBase``, one
                  actor in its own process, one ``ask`` (if ``thespian`` is installed:
                  ``pip install thespian``; otherwise its row says so).

The programs print, in that line, the seconds from just before their system (or Pipe, or
child) is made to the reply (``inside``): for ours the part from just before
``open_system()`` to the first reply. After the line, the time until the program has exited
is measured too (``exit``: stopping and reaping what it started), not counted in ``whole``.

Each run is in a session of its own; this process is the children's subreaper
(``PR_SET_CHILD_SUBREAPER``), so that anything a program leaves behind becomes our child:
it is given 1 s to exit, then killed, reaped and reported, and it fails that
implementation (a process outliving its program is a bug). Runs are interleaved (every
implementation once, then again, N times, after one untimed run of each that compiles and
caches what it imports); figures are the MEDIAN of the N runs, "±" half the min-max range
relative to it, and the fastest run. Targets, printed and never asserted: ours ``inside``
<= 50 ms, ``import actors`` <= 1.3x ``import trio, pydantic``. One ``-X importtime`` run
then lists what ``import actors`` imports beyond ``import trio, pydantic``. The exit status
is 1 if an implementation failed a run.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import (  # also puts the repository root on sys.path, for `actors`
    ROOT,
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
)

_HERE = Path(__file__).resolve().parent
PROGRAMS = _HERE / "start"

# name -> (label, argv after the interpreter, prints inner_s)
IMPLS: dict[str, tuple[str, list[str], bool]] = {
    "python": ("python -c print (interpreter)", ["-c", "print('ok', flush=True)"], False),
    "imports": (
        "import trio, pydantic",
        ["-c", "import trio, pydantic; print('ok', flush=True)"],
        False,
    ),
    "actors": ("import actors", ["-c", "import actors; print('ok', flush=True)"], False),
    "ours": ("ours: open_system -> 1st reply", [str(PROGRAMS / "ours_first_reply.py")], True),
    "ours-spawn": (
        "ours, start_method='spawn'",
        [str(PROGRAMS / "ours_first_reply.py"), "--spawn"],
        True,
    ),
    "mp": ("mp fork: Process + Pipe", [str(PROGRAMS / "mp_first_reply.py")], True),
    "trio": ("trio: subprocess, 1 line back", [str(PROGRAMS / "trio_first_line.py")], True),
    "thespian": (
        "thespian multiprocQueueBase",
        [str(PROGRAMS / "thespian_first_reply.py")],
        True,
    ),
}
OURS = ("actors", "ours", "ours-spawn")
ANCHORS = ("mp", "trio", "thespian")
TARGET_INSIDE_S = 0.050
TARGET_IMPORT_RATIO = 1.3
ORPHAN_GRACE_S = 1.0

try:
    import actors  # noqa: F401  (only: does it import here? its rows say why not)
except Exception as exc:
    OURS_IMPORT_ERROR: str | None = f"{type(exc).__name__}: {exc}"
else:
    OURS_IMPORT_ERROR = None

# --------------------------------------------------------------------------------------------
# Running one program, and whatever it leaves behind
# --------------------------------------------------------------------------------------------


def become_subreaper() -> bool:
    """Make this process the reaper of its orphaned descendants (Linux; False elsewhere)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(36, 1, 0, 0, 0)) == 0  # PR_SET_CHILD_SUBREAPER
    except (OSError, AttributeError):
        return False


def our_children() -> list[int]:
    """Pids whose parent is this process (orphans reparented to us, once we are subreaper)."""
    me = os.getpid()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        if int(stat.rpartition(")")[2].split()[1]) == me:
            found.append(int(entry))
    return found


def reap_orphans(grace_s: float) -> tuple[int, int]:
    """Reap what outlived its program: (exited within the grace period, killed after it)."""
    late = killed = 0
    deadline = time.monotonic() + grace_s
    while pids := our_children():
        for pid in pids:
            with contextlib.suppress(ChildProcessError):
                done, _ = os.waitpid(pid, os.WNOHANG)
                if done:
                    late += 1
        if time.monotonic() >= deadline:
            for pid in our_children():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(pid, 0)
                    killed += 1
        else:
            time.sleep(0.01)
    return late, killed


def read_line(fd: int, deadline: float) -> bytes:
    """The first line written to ``fd`` (TimeoutError at the deadline, EOFError at its end)."""
    got = b""
    while b"\n" not in got:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            raise TimeoutError("no line before the timeout")
        chunk = os.read(fd, 4096)
        if not chunk:
            raise EOFError(f"the program ended without a line ({got!r})")
        got += chunk
    return got.split(b"\n", 1)[0]


@dataclass(frozen=True)
class Run:
    whole_s: float  # exec -> the first line here
    exit_s: float  # the line -> the program reaped
    inside_s: float | None  # what the program measured (its setup -> the reply)
    late_children: int  # processes that outlived the program, exited within the grace period


def run_once(impl: str, timeout_s: float, env: dict[str, str], cwd: str) -> Run:
    """One fresh interpreter running ``impl``; Verdict if it left a process to kill."""
    _, args, has_inner = IMPLS[impl]
    with tempfile.TemporaryFile() as err:
        deadline = time.monotonic() + timeout_s
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=err,
            env=env,
            cwd=cwd,
            start_new_session=True,
        )
        assert proc.stdout is not None
        try:
            line = read_line(proc.stdout.fileno(), deadline)
            t_line = time.perf_counter()
            code = proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            t_exit = time.perf_counter()
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            reap_orphans(0)
            raise
        finally:
            proc.stdout.close()
        late, killed = reap_orphans(ORPHAN_GRACE_S)
        if code != 0:
            err.seek(0)
            tail = err.read().decode(errors="replace").strip().splitlines()[-3:]
            raise RuntimeError(f"exited with {code}: {' | '.join(tail)}")
    if killed:
        raise Verdict(f"left {killed} process(es) running after it exited (killed)")
    inside = None
    if has_inner:
        doc = json.loads(line)
        if doc.get("seq") != 1:
            raise Verdict(f"wrong reply: {line!r}")
        inside = float(doc["inner_s"])
    return Run(t_line - t0, t_exit - t_line, inside, late)


# --------------------------------------------------------------------------------------------
# Rounds, summary
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Config:
    runs: int
    timeout_s: float


@dataclass
class ImplResult(Outcome):
    runs: list[Run] = field(default_factory=list)

    def values(self, metric: str) -> list[float]:
        if self.status != "ok":
            return []
        return [v for r in self.runs if (v := getattr(r, metric)) is not None]

    def median(self, metric: str) -> float | None:
        return median(self.values(metric))

    def spread(self, metric: str) -> float | None:
        return spread(self.values(metric), self.median(metric))

    def fastest(self, metric: str) -> float | None:
        values = self.values(metric)
        return min(values) if values else None


def child_env() -> dict[str, str]:
    """The environment of every program: ours, with this checkout first on the path."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # the warm-up run caches bytecode, as in use
    return env


def run_all(cfg: Config, impls: Sequence[str], log: Callable[[str], None]) -> dict[str, ImplResult]:
    results = {impl: ImplResult() for impl in impls}
    check_available(results, OURS, OURS_IMPORT_ERROR)
    if "thespian" in results and importlib.util.find_spec("thespian") is None:
        results["thespian"].status = "unavailable"
        results["thespian"].error = "not installed (pip install thespian)"
    env = child_env()
    with tempfile.TemporaryDirectory(prefix="bench-start-") as cwd:  # whatever they write

        def run(impl: str, index: int) -> Run | None:
            r = run_once(impl, cfg.timeout_s, env, cwd)
            if index == 0:
                return None  # the untimed first run of each: bytecode compiled, files cached
            return r

        rounds = cfg.runs + 1
        for i, impl, r, _ in interleave(results, rounds, run, log):
            results[impl].runs.append(r)
            inside = "" if r.inside_s is None else f"  inside {r.inside_s * 1e3:7.1f} ms"
            late = f"  ({r.late_children} exited after it)" if r.late_children else ""
            log(
                f"run {i}/{cfg.runs} {impl:>10}: whole {r.whole_s * 1e3:7.1f} ms{inside}"
                f"  exit {r.exit_s * 1e3:6.1f} ms{late}"
            )
    return results


def import_breakdown(env: dict[str, str], top: int = 10) -> list[tuple[str, float]]:
    """What ``import actors`` imports beyond ``import trio, pydantic``: (package, self ms),
    the biggest first, from one ``-X importtime`` run of each."""

    def self_us(code: str) -> dict[str, int]:
        out = subprocess.run(
            [sys.executable, "-X", "importtime", "-c", code],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
            check=True,
        )
        found: dict[str, int] = {}
        for line in out.stderr.splitlines():
            if not line.startswith("import time:") or "self [us]" in line:
                continue
            own, _, name = line.removeprefix("import time:").split("|")
            found[name.strip()] = int(own)
        return found

    base = self_us("import trio, pydantic")
    extra: dict[str, float] = {}
    for name, us in self_us("import actors").items():
        if name not in base:
            package = name.split(".")[0]
            extra[package] = extra.get(package, 0.0) + us / 1e3
    return sorted(extra.items(), key=lambda kv: -kv[1])[:top]


def ratios(results: dict[str, ImplResult]) -> dict[str, float | None]:
    def med(impl: str, metric: str) -> float | None:
        return results[impl].median(metric) if impl in results else None

    out: dict[str, float | None] = {}
    if "actors" in results and "imports" in results:
        out["import actors / import trio, pydantic"] = ratio(
            med("actors", "whole_s"), med("imports", "whole_s")
        )
        if "python" in results:
            bare = med("python", "whole_s")
            a, b = med("actors", "whole_s"), med("imports", "whole_s")
            if bare is not None and a is not None and b is not None:
                out["  the same, less the interpreter's start"] = ratio(a - bare, b - bare)
        # The fastest runs: what a run costs when nothing else takes the CPU (on a shared
        # machine the medians carry the other jobs' load).
        out["  the same, fastest runs"] = ratio(
            results["actors"].fastest("whole_s"), results["imports"].fastest("whole_s")
        )
    for ours in ("ours", "ours-spawn"):
        if ours not in results:
            continue
        for anchor in ANCHORS:
            if anchor in results:
                out[f"{ours} / {anchor} inside"] = ratio(
                    med(ours, "inside_s"), med(anchor, "inside_s")
                )
                out[f"{ours} / {anchor} whole"] = ratio(
                    med(ours, "whole_s"), med(anchor, "whole_s")
                )
    return out


def targets(results: dict[str, ImplResult]) -> list[tuple[str, bool | None]]:
    out: list[tuple[str, bool | None]] = []
    if "ours" in results:
        inside = results["ours"].median("inside_s")
        out.append(
            (
                f"open_system -> first reply (inside) <= {TARGET_INSIDE_S * 1e3:.0f} ms",
                None if inside is None else inside <= TARGET_INSIDE_S,
            )
        )
    value = ratios(results).get("import actors / import trio, pydantic")
    if "actors" in results and "imports" in results:
        out.append(
            (
                f"import actors <= {TARGET_IMPORT_RATIO:g}x import trio, pydantic",
                None if value is None else value <= TARGET_IMPORT_RATIO,
            )
        )
    return out


def render_table(
    cfg: Config, results: dict[str, ImplResult], breakdown: list[tuple[str, float]]
) -> str:
    def ms(result: ImplResult, metric: str, with_spread: bool = False) -> str:
        if result.status != "ok":
            return result.cell
        value = result.median(metric)
        if value is None:
            return "-"
        if with_spread:
            return f"{value * 1e3:,.1f} ±{result.spread(metric) or 0:3.0%}"
        return f"{value * 1e3:,.1f}"

    def fastest(result: ImplResult, metric: str) -> str:
        value = result.fastest(metric)
        return "-" if result.status != "ok" or value is None else f"{value * 1e3:,.1f}"

    lines = [
        f"Start time: fresh interpreters, median of {cfg.runs} runs (ms)",
        machine_line(),
        "",
        f"{'':<34}{'whole':>16}{'fastest':>10}{'inside':>16}{'fastest':>10}{'exit':>9}",
    ]
    for impl, result in results.items():
        label = IMPLS[impl][0]
        lines.append(
            f"{label:<34}{ms(result, 'whole_s', True):>16}{fastest(result, 'whole_s'):>10}"
            f"{ms(result, 'inside_s', True):>16}{fastest(result, 'inside_s'):>10}"
            f"{ms(result, 'exit_s'):>9}"
        )
    lines.append(
        "  whole: exec to its first line; inside: measured by the program, from just before"
    )
    lines.append("  its system / Pipe / child is made to the reply; exit: the line to its reaping")
    for impl, result in results.items():
        if (problem := result.problem(impl)) is not None:
            lines.append(problem)
        late = sum(r.late_children for r in result.runs)
        if late:
            lines.append(
                f"{impl}: {late} process(es) outlived their program (exited within "
                f"{ORPHAN_GRACE_S:g} s, reaped here), over {len(result.runs)} runs"
            )
    rs = ratios(results)
    if rs:
        lines += ["", "ratios of medians (<1x is faster)"]
        lines += [f"  {name:<40} = {times(value)}" for name, value in rs.items()]
    met = targets(results)
    if met:
        lines += ["", "targets (printed, not asserted)"]
        lines += [
            f"  {name:<50} {'n/a' if ok is None else 'met' if ok else 'NOT met'}"
            for name, ok in met
        ]
    if breakdown:
        lines += ["", "what import actors adds to import trio, pydantic (-X importtime, self ms):"]
        lines.append("  " + ", ".join(f"{name} {value:.1f}" for name, value in breakdown))
    return "\n".join(lines)


def render_json(
    cfg: Config, results: dict[str, ImplResult], breakdown: list[tuple[str, float]]
) -> str:
    metrics = ("whole_s", "inside_s", "exit_s")
    doc = {
        "config": asdict(cfg),
        "machine": machine(),
        "results": {
            impl: {
                "label": IMPLS[impl][0],
                "status": r.status,
                "error": r.error,
                "median": {m: r.median(m) for m in metrics},
                "spread": {m: r.spread(m) for m in metrics},
                "fastest": {m: r.fastest(m) for m in metrics},
                "runs": [asdict(x) for x in r.runs],
            }
            for impl, r in results.items()
        },
        "ratios": ratios(results),
        "targets": {name: ok for name, ok in targets(results)},
        "import_breakdown_ms": dict(breakdown),
    }
    return json.dumps(doc, indent=2)


def parse_args(argv: Sequence[str] | None = None) -> tuple[Config, list[str], bool]:
    p = arguments(__doc__, "10 runs instead of 20", "--impl", tuple(IMPLS))
    p.add_argument("--runs", type=int, help="timed runs per implementation (default 20, quick 10)")
    p.add_argument("--timeout", type=float, default=60.0, help="max seconds for one run")
    ns = p.parse_args(argv)
    impls = chosen(p, "--impl", ns.impl, tuple(IMPLS))
    runs = ns.runs if ns.runs is not None else (10 if ns.quick else 20)
    if runs < 1:
        p.error("--runs must be positive")
    return Config(runs=runs, timeout_s=ns.timeout), impls, ns.json


def main(argv: Sequence[str] | None = None) -> int:
    cfg, impls, as_json = parse_args(argv)
    if not become_subreaper():
        progress("not a subreaper (not Linux?): a process left behind would not be seen")
    results = run_all(cfg, impls, progress)
    breakdown: list[tuple[str, float]] = []
    if "actors" in results and results["actors"].status == "ok":
        try:
            breakdown = import_breakdown(child_env())
        except (subprocess.SubprocessError, OSError) as exc:
            progress(f"-X importtime: {describe(exc)}")
    render = render_json if as_json else render_table
    print(render(cfg, results, breakdown))
    return 1 if any(r.failed for r in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
