"""The package rules of ARCHITECTURE.md (layers, one way imports, no pickle), checked by reading
the source."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import actors
import protocol
from tests.layers import LAYERS, TEST_FOLDERS
from tests.repository import ROOT


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


def _runtime_modules() -> dict[str, Path]:
    """Every module of the runtime, by its path in the package (``_base/_errors``)."""
    found = {}
    for path in (ROOT / "actors").rglob("*.py"):
        relative = path.relative_to(ROOT / "actors").with_suffix("")
        found["/".join(relative.parts)] = path
    return found


def _layer(module: str) -> int:
    folder = module.rpartition("/")[0]
    return LAYERS[folder]


def _runtime_imports(module: str, path: Path) -> set[str]:
    """The actors modules ``module`` imports (``folder/name``), wherever the import is."""
    folder = module.rpartition("/")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom):
            if node.level == 0:
                parts = (node.module or "").split(".")
                if parts[0] == "actors":
                    found.add("/".join(parts[1:]) or "__init__")
                continue
            base = folder.split("/") if folder else []
            base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
            names = (node.module or "").split(".") if node.module else []
            if names:
                found.add("/".join([*base, *names]))
            else:
                found.update("/".join([*base, alias.name]) for alias in node.names)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "actors":
                    found.add("/".join(parts[1:]) or "__init__")
    modules = _runtime_modules()
    # A folder imported as a package means its __init__.
    return {f"{name}/__init__" if f"{name}/__init__" in modules else name for name in found}


def test_every_runtime_module_is_in_a_layer_folder() -> None:
    for module in _runtime_modules():
        folder = module.rpartition("/")[0]
        assert folder in LAYERS, f"{module} is in no layer folder (see LAYERS)"
        assert "/" not in folder, f"{module}: one level of folders, as the layers are"
    folders = {p.name for p in (ROOT / "actors").iterdir()
               if p.is_dir() and p.name != "__pycache__"}
    assert folders == {f for f in LAYERS if f}


@pytest.mark.parametrize("kind", ["actors", "integration"])
def test_the_tests_mirror_the_layers(kind: str) -> None:
    # tests/actors/ (in-process) and tests/integration/ (processes, sockets, servers) hold
    # one folder per layer folder of actors/, named after it, and no test outside them.
    tests = ROOT / "tests" / kind
    folders = {p.name for p in tests.iterdir() if p.is_dir() and p.name != "__pycache__"}
    assert folders <= set(TEST_FOLDERS), folders - set(TEST_FOLDERS)
    assert not list(tests.glob("test_*.py")), "a test belongs in the folder of its layer"


def test_no_import_points_up_a_layer() -> None:
    upward = []
    modules = _runtime_modules()
    for name, path in modules.items():
        for target in _runtime_imports(name, path):
            assert target in modules, f"{name} imports {target}, which is not a module"
            if _layer(target) > _layer(name):
                upward.append(f"{name} (L{_layer(name)}) imports {target} (L{_layer(target)})")
    assert not upward


def test_no_import_cycle_in_the_runtime() -> None:
    graph = {name: _runtime_imports(name, path) - {name}
             for name, path in _runtime_modules().items()}
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
    lazy = set(getattr(module, "_LAZY", {}))  # imported when first used
    assert set(exported) == public | lazy
    for name in exported:
        assert getattr(module, name) is not None


def test_architecture_lists_the_folders_and_their_modules() -> None:
    """ARCHITECTURE.md's table of layers names every folder with its layer, and every
    module of each folder: the document and the package move together."""
    text = (ROOT / "ARCHITECTURE.md").read_text()
    table = text.split("## The layers", 1)[1].split("\n\n", 2)[1]
    rows = {}
    for line in table.splitlines()[2:]:
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        rows[cells[0].strip("`")] = (int(cells[1].removeprefix("L")), cells[2])
    assert {folder: layer for folder, (layer, _) in rows.items()} == {
        folder: layer for folder, layer in LAYERS.items() if folder
    }
    for module in _runtime_modules():
        folder, _, name = module.rpartition("/")
        if folder and name != "__init__":
            assert f"`{name}`" in rows[folder][1], f"ARCHITECTURE.md does not mention {module}"
