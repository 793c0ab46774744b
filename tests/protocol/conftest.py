"""Shared fixtures of the protocol tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.leaks import open_fds


@pytest.fixture
def no_fd_leak() -> Iterator[None]:
    """Fail the test if it leaves a descriptor open that was not open before it.

    Runs its check at teardown, so a test closes its own descriptors (in ``with`` blocks,
    ``finally`` clauses) before the listings are compared.
    """
    before = open_fds()
    yield
    after = open_fds()
    leaked = {fd: target for fd, target in after.items() if before.get(fd) != target}
    assert not leaked, f"descriptors leaked by the test: {leaked}"


@pytest.fixture
def fd_count() -> Callable[[], int]:
    """How many descriptors this process has open now (call it before and after a step)."""
    return lambda: len(open_fds())
