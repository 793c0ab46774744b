"""Whether a command's program can run, decided in the master before anything starts."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from actors import SpawnError
from actors._running._command import find_program


def test_a_program_is_found_in_path_as_execvp_would(tmp_path: Path) -> None:
    program = tmp_path / "serve"
    program.write_text("#!/bin/sh\n")
    program.chmod(0o755)
    assert find_program("serve", path=f"/nowhere:{tmp_path}", cwd=None) == str(program)


def test_a_relative_path_is_taken_from_cwd(tmp_path: Path) -> None:
    program = tmp_path / "bin" / "serve"
    program.parent.mkdir()
    program.write_text("#!/bin/sh\n")
    program.chmod(0o755)
    assert find_program("bin/serve", path=None, cwd=str(tmp_path)) == str(program)


@pytest.mark.parametrize(("argv0", "why"), [
    ("absent", "not found in PATH"),
    ("plain", "not executable"),
    ("./absent", "no such file"),
    ("./plain", "not executable"),
    ("./folder", "not executable"),
])
def test_what_cannot_run_is_a_fatal_spawn_error(tmp_path: Path, argv0: str, why: str) -> None:
    (tmp_path / "plain").write_text("#!/bin/sh\n")
    (tmp_path / "plain").chmod(0o644)
    (tmp_path / "folder").mkdir()
    with pytest.raises(SpawnError, match=why) as caught:
        find_program(argv0, path=str(tmp_path), cwd=str(tmp_path))
    assert caught.value.fatal


def test_a_missing_directory_is_a_fatal_spawn_error(tmp_path: Path) -> None:
    with pytest.raises(SpawnError, match="does not exist") as caught:
        find_program("sh", path=os.defpath, cwd=str(tmp_path / "absent"))
    assert caught.value.fatal
