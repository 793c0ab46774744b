"""The examples run as a user would run them (actors defined in ``__main__``)."""

from __future__ import annotations

import sys
from pathlib import Path

import trio

EXAMPLES = Path(__file__).parents[2] / "examples"


async def test_ping_pong_runs_actors_defined_in_main() -> None:
    with trio.fail_after(60):
        result = await trio.run_process(
            [sys.executable, str(EXAMPLES / "ping_pong.py"), "--rounds", "200"],
            capture_stdout=True, capture_stderr=True, check=False,
        )
    assert result.returncode == 0, result.stderr.decode()
    assert b"asks/s" in result.stdout


async def test_supervision_tree_example_survives_its_flaky_worker() -> None:
    with trio.fail_after(120):
        result = await trio.run_process(
            [sys.executable, str(EXAMPLES / "supervision_tree.py"), "--rounds", "20",
             "--failure-rate", "0.2"],
            capture_stdout=True, capture_stderr=True, check=False,
        )
    assert result.returncode == 0, result.stderr.decode()
    out = result.stdout.decode()
    assert "ready      root/flaky" in out
    assert "counter saw" in out or "the tree gave up" in out
