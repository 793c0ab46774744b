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


# The layers of actors/, lowest first (the package docstring says what each is for). A
# module may import from its own layer or below, never above, by any import: at the top,
# under TYPE_CHECKING, or inside a function.
LAYERS: dict[str, int] = {
    **dict.fromkeys(
        ["_errors", "_events", "_control", "_handoff", "_actor", "_ref", "_spec",
         "_arguments", "_tree", "_shared"], 0),
    **dict.fromkeys(["_link", "_names", "_asks", "_router", "_processes", "_sockets"], 1),
    **dict.fromkeys(["_cell", "_worker", "_forkserver"], 2),
    **dict.fromkeys(["_restart", "_supervisor", "_start"], 3),
    **dict.fromkeys(
        ["_listener", "_acceptor", "_state", "_stores", "_operations", "_metrics"], 4),
    **dict.fromkeys(["_system", "_bootstrap", "_zygote", "_cli", "__main__", "__init__"], 5),
}


def _runtime_modules() -> dict[str, Path]:
    return {path.stem: path for path in (ROOT / "actors").glob("*.py")}


def _runtime_imports(path: Path) -> set[str]:
    """The actors modules ``path`` imports, wherever the import statement is."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1 and node.module:
                found.add(node.module.split(".")[0])
            elif node.level == 1:
                found.update(alias.name for alias in node.names)
            elif node.level == 0 and node.module and node.module.startswith("actors."):
                found.add(node.module.split(".")[1])
            elif node.level == 0 and node.module == "actors":
                found.add("__init__")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == "actors":
                    found.add("__init__")
                elif alias.name.startswith("actors."):
                    found.add(alias.name.split(".")[1])
    return found


def test_every_runtime_module_has_a_layer() -> None:
    assert set(_runtime_modules()) == set(LAYERS)


def test_no_import_points_up_a_layer() -> None:
    upward = []
    for name, path in _runtime_modules().items():
        for target in _runtime_imports(path):
            if LAYERS[target] > LAYERS[name]:
                upward.append(f"{name} (L{LAYERS[name]}) imports {target} (L{LAYERS[target]})")
    assert not upward


def test_no_import_cycle_in_the_runtime() -> None:
    graph = {name: _runtime_imports(path) - {name} for name, path in _runtime_modules().items()}
    visiting: list[str] = []
    done: set[str] = set()

    def visit(name: str) -> None:
        if name in done:
            return
        assert name not in visiting, " -> ".join([*visiting[visiting.index(name):], name])
        visiting.append(name)
        for target in sorted(graph[name]):
            visit(target)
        visiting.pop()
        done.add(name)

    for name in sorted(graph):
        visit(name)


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
