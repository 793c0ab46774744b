"""What the benchmarks (``ipc.py``, ``restart.py``, ``echo.py``) share.

Statistics (nearest-rank percentile, median, the "±" spread), the cells of their tables, the
machine line, Node (is it there, run one of ``node/*.js`` for its JSON), the interleaving of
rounds, progress on stderr and the command-line options they all have. Not a benchmark: the
scripts import it as ``_harness`` (their own directory is on ``sys.path``).

Importing it also puts the repository root on ``sys.path``, so that a benchmark run from a
checkout without installing can import ``actors`` and ``protocol``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

ROOT = Path(__file__).resolve().parent.parent
# Run from a checkout without installing: make `actors` and `protocol` importable.
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

T = TypeVar("T")

# --------------------------------------------------------------------------------------------
# Statistics
# --------------------------------------------------------------------------------------------


def percentile(sorted_values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile of an already sorted, non-empty sequence."""
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return float(sorted_values[rank - 1])


def median(values: Sequence[float]) -> float | None:
    """The median, None for no values."""
    return float(statistics.median(values)) if values else None


def spread(values: Sequence[float], centre: float | None) -> float | None:
    """Half the min-max range of the values, relative to centre (their median, usually).

    None for no values or no (or a zero) centre.
    """
    if not values or not centre:
        return None
    return (max(values) - min(values)) / 2 / centre


def ratio(num: float | None, den: float | None) -> float | None:
    """num / den, None if either is missing (or den is zero)."""
    return num / den if num is not None and den else None


# --------------------------------------------------------------------------------------------
# Table cells and lines
# --------------------------------------------------------------------------------------------


def with_spread(value: float, spread: float | None, fmt: str) -> str:
    """A figure and its spread: ``12,345 ± 4%``."""
    return f"{value:{fmt}} ±{spread or 0:3.0%}"


def times(value: float | None) -> str:
    """A ratio as ``1.23x``, or ``n/a``."""
    return "n/a" if value is None else f"{value:.2f}x"


def node_version() -> str | None:
    node = shutil.which("node")
    if node is None:
        return None
    out = subprocess.run([node, "--version"], capture_output=True, text=True, check=False)
    return out.stdout.strip() or None


def machine() -> dict[str, Any]:
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "node": node_version(),
        "cpus": os.cpu_count(),
    }


def machine_line() -> str:
    """The machine, for the head of a table."""
    m = machine()
    node = m["node"] or "not found"
    return f"{m['platform']}, {m['cpus']} cpus, Python {m['python']}, node {node}"


def describe(exc: BaseException) -> str:
    """One line for an exception, with the leaves of an exception group spelled out."""
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(describe(sub) for sub in exc.exceptions)
    return f"{type(exc).__name__}: {exc}"


def progress(line: str) -> None:
    """A line of progress: on stderr, at once (the table, or the JSON, goes to stdout)."""
    print(line, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# Node
# --------------------------------------------------------------------------------------------


def node_json(script: Path, args: Sequence[str], timeout: float) -> Any:
    """Run ``node script args...`` and parse what it prints (JSON) on stdout.

    FileNotFoundError without node; RuntimeError, with the end of its stderr, if it fails.
    """
    node = shutil.which("node")
    if node is None:
        raise FileNotFoundError("node: not found")
    argv = [node, str(script), *args]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    if out.returncode != 0:
        tail = out.stderr.strip().splitlines()[-5:]
        raise RuntimeError(f"{script.name} exited with {out.returncode}: {' | '.join(tail)}")
    return json.loads(out.stdout)


# --------------------------------------------------------------------------------------------
# Implementations and their rounds (ipc.py, restart.py)
# --------------------------------------------------------------------------------------------


class Verdict(Exception):
    """What was measured contradicts what was sent or done: the figures would be meaningless."""


@dataclass
class Outcome:
    """How an implementation fared; subclasses add its rounds."""

    status: str = "ok"  # "ok", "not found", "unavailable" or "error"
    error: str | None = None

    @property
    def cell(self) -> str:
        """What a table shows for a figure of an implementation that is not "ok"."""
        return "node: not found" if self.status == "not found" else self.status

    @property
    def failed(self) -> bool:
        """Something went wrong (missing node, or our runtime not importing, does not count)."""
        return self.status not in ("ok", "not found", "unavailable")

    def problem(self, name: str) -> str | None:
        """The line under the table that says what went wrong, if anything did."""
        if self.error is not None and self.status != "not found":
            return f"{name}: {self.status}: {self.error}"
        return None


def check_available(
    results: Mapping[str, Outcome], ours: Sequence[str], import_error: str | None
) -> None:
    """Mark ours "unavailable" when the runtime does not import, "node" when node is missing."""
    for name, result in results.items():
        if name in ours and import_error is not None:
            result.status, result.error = "unavailable", import_error
        elif name == "node" and shutil.which("node") is None:
            result.status, result.error = "not found", "node: not found"


def interleave(
    results: Mapping[str, Outcome],
    rounds: int,
    run: Callable[[str, int], T | None],
    log: Callable[[str], None],
) -> Iterator[tuple[int, str, T, float]]:
    """Round 1 of every implementation still "ok", then round 2, ...

    ``run(name, round_index)`` runs one round; it returns None for a round to skip. Yields
    (round index, name, what run returned, seconds it took). An exception marks the
    implementation "error" (logged), and its later rounds are not run.
    """
    for i in range(rounds):
        for name, result in results.items():
            if result.status != "ok":
                continue
            t0 = time.perf_counter()
            try:
                data = run(name, i)
            except Exception as exc:
                result.status = "error"
                result.error = f"round {i + 1}: {describe(exc)}"
                log(f"round {i + 1}/{rounds} {name}: {result.error}")
                continue
            if data is not None:
                yield i, name, data, time.perf_counter() - t0


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def arguments(
    doc: str | None, quick: str, option: str, names: Sequence[str]
) -> argparse.ArgumentParser:
    """A parser with the options every benchmark has.

    ``--quick`` (its help: quick), ``--json``, and ``option`` (``--impl``, ``--servers``): a
    comma-separated subset of names, see ``chosen``.
    """
    p = argparse.ArgumentParser(description=doc.split("\n\n")[0] if doc else None)
    p.add_argument("--quick", action="store_true", help=quick)
    p.add_argument("--json", action="store_true", help="print JSON instead of the table")
    p.add_argument(option, default=",".join(names), help="comma-separated subset of %(default)s")
    return p


def chosen(p: argparse.ArgumentParser, option: str, value: str, names: Sequence[str]) -> list[str]:
    """The names in a comma-separated option value, in the order of names (exits on others)."""
    wanted = {s.strip() for s in value.split(",") if s.strip()}
    if wanted - set(names) or not wanted:
        p.error(f"{option}: choose from {', '.join(names)}")
    return [n for n in names if n in wanted]
