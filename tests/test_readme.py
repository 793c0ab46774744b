"""The README's code blocks run as written (a README that rots is worse than none)."""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.redis_server import redis_server, unique_prefix
from tests.repository import ROOT
from tests.waiting import TIMEOUT

README = (ROOT / "README.md").read_text()
BLOCKS = re.findall(r"```(\w+)\n(.*?)```", README, flags=re.DOTALL)
PYTHON = [code for language, code in BLOCKS if language == "python"]
SHELL = [code for language, code in BLOCKS if language == "sh"]


def test_the_readme_has_its_blocks() -> None:
    assert len(PYTHON) >= 4
    assert len(SHELL) >= 3


@pytest.mark.parametrize("index", range(len(PYTHON)))
def test_each_python_block_runs_as_written(index: int, tmp_path: Path) -> None:
    script = tmp_path / f"readme_block_{index}.py"
    script.write_text(PYTHON[index])
    with contextlib.ExitStack() as stack:
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        if 'os.environ.get("CLUSTER"' in PYTHON[index]:  # a cluster's block: its own Redis
            server = stack.enter_context(redis_server())
            env["CLUSTER"] = f"{server.url}?prefix={unique_prefix()}"
        result = subprocess.run(
            [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True,
            timeout=TIMEOUT, check=False, env=env,
        )
    assert result.returncode == 0, result.stderr  # (a crash it shows is logged, once)
    assert result.stdout.strip(), "every block shows what it does"


def test_the_shell_commands_name_what_exists() -> None:
    from actors._system._cli import parser

    verbs = set(parser()._subparsers._group_actions[0].choices)  # type: ignore[union-attr]
    for block in SHELL:
        for line in block.splitlines():
            for command in line.split("#")[0].split("&&"):
                words = shlex.split(command)
                if not words:
                    continue
                if words[0] == "python" and words[1].startswith("examples/"):
                    assert (ROOT / words[1]).exists(), words[1]
                    help_text = subprocess.run(
                        [sys.executable, str(ROOT / words[1]), "--help"], capture_output=True,
                        text=True, timeout=TIMEOUT, check=True,
                    ).stdout
                    for flag in (w for w in words[2:] if w.startswith("--")):
                        assert flag in help_text, f"{words[1]} has no {flag}"
                elif words[0] == "trio-actors":
                    assert words[1] in verbs, words[1]


def test_ci_runs_the_readmes_test_command() -> None:
    command = next(block.strip() for block in SHELL if "pytest" in block)
    assert command in (ROOT / ".ci" / "run").read_text()
