"""The package rules from DESIGN.md, checked by reading the source."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import actors
import protocol

ROOT = Path(__file__).parents[1]


def _imports(package: str) -> set[str]:
    found: set[str] = set()
    for path in (ROOT / package).rglob("*.py"):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                found.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
    return found


def test_protocol_never_imports_actors() -> None:
    assert "actors" not in _imports("protocol")


@pytest.mark.parametrize("package", ["actors", "protocol"])
def test_no_pickle_or_eval(package: str) -> None:
    assert not {"pickle", "cloudpickle", "marshal", "shelve"} & _imports(package)
    for path in (ROOT / package).rglob("*.py"):
        tree = ast.parse(path.read_text(), str(path))
        calls = {
            node.func.id
            for node in ast.walk(tree)
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
        }
        assert "eval" not in calls, path


@pytest.mark.parametrize("module", [actors, protocol])
def test_exports_are_exact_and_sorted(module: object) -> None:
    exported = module.__all__  # type: ignore[attr-defined]
    # isort style, as ruff's RUF022 keeps it: CONSTANTS, then Classes, then functions.
    assert exported == sorted(
        exported, key=lambda name: (0 if name.isupper() else 1 if name[0].isupper() else 2, name)
    )
    public = {
        name for name in vars(module) if not name.startswith("_") and name not in {"Final"}
    }
    assert set(exported) == public
    for name in exported:
        assert getattr(module, name) is not None
