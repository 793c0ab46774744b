"""Shared fixtures: every test checks that it leaves no fd, child process or zombie behind."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pytest


def open_fds() -> set[int]:
    """The fds open in this process (the one os.listdir opens to list them is not kept)."""
    fds = set()
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        try:
            os.fstat(fd)
        except OSError:
            continue  # the directory handle of the listing itself, closed by now
        fds.add(fd)
    return fds


def child_processes() -> dict[int, str]:
    """Direct children of this process (pid -> state letter), zombies included."""
    me = os.getpid()
    found: dict[int, str] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as handle:
                stat = handle.read()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == me:
            found[int(name)] = fields[0]
    return found


@pytest.fixture(autouse=True)
def no_leaks() -> Iterator[None]:
    """Fail a test that leaves an fd open or a child process (running or zombie) behind."""
    fds_before = open_fds()
    children_before = child_processes()
    yield
    # Reaping happens before open_system returns; a short grace covers the kernel's
    # bookkeeping of a process that just exited, not a process left running.
    deadline = time.monotonic() + 2.0
    while True:
        leaked_children = {
            pid: state for pid, state in child_processes().items() if pid not in children_before
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
