"""The layers of actors/, lowest first: the table tests/test_layering.py checks every import
against, and the order tests/conftest.py runs each layer's tests in."""

from __future__ import annotations

# Each layer is one or more folders (subpackages), and ARCHITECTURE.md says what each owns. A
# module may import from its own layer or below, never above, by any import: at the top, under
# TYPE_CHECKING, or inside a function.
LAYERS: dict[str, int] = {
    "_base": 0,
    "_messaging": 1,
    "_running": 2,
    "_supervision": 3,
    "_listening": 4,
    "_state": 4,
    "_operations": 4,
    "_cluster": 4,
    "_system": 5,
    "": 6,  # the package itself: actors/__init__.py (the façade) and actors/__main__.py
}

TEST_FOLDERS: list[str] = [folder.removeprefix("_") for folder in LAYERS if folder]
"""The folders of tests/actors/ and tests/integration/, one per layer folder of actors/
(``_base``: ``base``), lowest layer first."""
