"""Where the repository's parts are, for the tests that read its files or run its scripts
(one place, whatever folder a test is in)."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).parents[1]
"""The repository's root: README.md, actors/, protocol/, examples/, tests/."""

EXAMPLES = ROOT / "examples"
