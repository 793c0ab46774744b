"""Shared fixtures: every test checks that it leaves no fd, child process or zombie behind.
And the order the tests run in, as README.md's "Tests" section states it."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.layers import TEST_FOLDERS
from tests.leaks import descendants, open_fds

TESTS = Path(__file__).parent


def pytest_configure(config: pytest.Config) -> None:
    """The systems a test run opens put their control sockets in a directory of their own
    (``$XDG_RUNTIME_DIR/trio-actors``): two runs at once, or a system the user is running,
    never meet on a name; the CLI's subprocesses inherit it. Searchable by all (0711), as
    a user's runtime directory's parents are, so that the other-user test reaches it."""
    runtime = tempfile.mkdtemp(prefix="trio-actors-tests-")
    os.chmod(runtime, 0o711)
    os.environ["XDG_RUNTIME_DIR"] = runtime
    config.add_cleanup(lambda: shutil.rmtree(runtime, ignore_errors=True))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """tests/actors/ and tests/integration/ each run layer by layer, lowest first (base,
    messaging, running, ...; collected alphabetically, they would not be), so that a
    failure shows first where it starts. Everything else keeps the order it was collected
    in: the folders and files of tests/ alphabetically, the tests of a file as written."""
    tops: dict[str, int] = {}

    def place(item: pytest.Item) -> tuple[int, int]:
        try:
            parts = item.path.relative_to(TESTS).parts
        except ValueError:
            return len(tops), 0  # a test outside tests/ (none today): last
        top = tops.setdefault(parts[0], len(tops))
        if parts[0] in ("actors", "integration") and len(parts) > 2:
            return top, TEST_FOLDERS.index(parts[1]) if parts[1] in TEST_FOLDERS else 0
        return top, 0

    items.sort(key=place)


@pytest.fixture(autouse=True)
def no_leaks() -> Iterator[None]:
    """Fail a test that leaves an fd open or a process (running or zombie) behind."""
    fds_before = open_fds()
    children_before = descendants()
    yield
    # Reaping happens before open_system returns; a short grace covers the kernel's
    # bookkeeping of a process that just exited, not a process left running.
    deadline = time.monotonic() + 2.0
    while True:
        leaked_children = {
            pid: state for pid, state in descendants().items()
            if pid not in children_before
        }
        leaked_fds = {fd: what for fd, what in open_fds().items() if fd not in fds_before}
        if (not leaked_children and not leaked_fds) or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    assert not leaked_children, f"child processes left behind: {leaked_children}"
    assert not leaked_fds, f"file descriptors leaked: {leaked_fds}"
