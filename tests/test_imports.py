"""What importing the package brings in: the optional parts (metrics, the SQLite and Redis
stores, the CLI's tables, process statistics) only when a program uses them."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.repository import ROOT
from tests.waiting import TIMEOUT

OPTIONAL = [
    "actors._operations._metrics",
    "actors._state._redis",
    "actors._state._sqlite",
    "actors._system._tables",
    "coredis",
    "prometheus_client",
    "psutil",
    "rich",
    "sqlite3",
]

OPEN_A_SYSTEM = """
import trio
from actors import open_system

async def main():
    async with open_system(name="imports-test"):
        pass

trio.run(main)
"""


def loaded_after(code: str) -> set[str]:
    """The modules a fresh interpreter holds after running ``code``."""
    probe = code + "\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))\n"
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True,
        timeout=TIMEOUT, check=True,
    )
    return set(json.loads(done.stdout.splitlines()[-1]))


@pytest.mark.parametrize("code", ["import actors", OPEN_A_SYSTEM])
def test_optional_parts_are_imported_only_when_used(code: str) -> None:
    assert sorted(set(OPTIONAL) & loaded_after(code)) == []


def test_a_metrics_server_imports_what_it_needs() -> None:
    code = OPEN_A_SYSTEM.replace(
        'name="imports-test"', 'name="imports-test", metrics=("127.0.0.1", 0)'
    )
    assert {"prometheus_client", "actors._operations._metrics"} <= loaded_after(code)


def test_importing_the_package_brings_only_what_defining_actors_needs() -> None:
    # The system, listeners, the shared state, events and status types are imported when a
    # name of theirs is first used, so that `import actors` costs little beyond trio and
    # pydantic (issue 17: <= 1.3x).
    runtime = {name for name in loaded_after("import actors") if name.startswith("actors")}
    assert runtime == {
        "actors", "actors._base", "actors._base._actor", "actors._base._errors",
        "actors._base._ref",
    }
    used = loaded_after("from actors import ActorExited, open_system")
    assert {"actors._system._open", "actors._base._events"} <= used
