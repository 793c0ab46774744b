"""Shared fixtures: every test checks that it leaves no fd, child process or zombie behind."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pytest

from tests.leaks import descendants, open_fds
from tests.redis_server import SERVERS


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
            if pid not in children_before and pid not in SERVERS
        }
        leaked_fds = open_fds() - fds_before
        if (not leaked_children and not leaked_fds) or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    details = {fd: _describe(fd) for fd in leaked_fds}
    assert not leaked_children, f"child processes left behind: {leaked_children}"
    assert not leaked_fds, f"file descriptors leaked: {details}"


def _describe(fd: int) -> str:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return "?"
