"""Waiting on processes the test did not start (workers, orphans) without polling."""

from __future__ import annotations

import os

import trio


async def wait_exited(pid: int) -> None:
    """Return once process ``pid`` has exited (or if it no longer exists)."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        await trio.lowlevel.wait_readable(pidfd)  # a pidfd turns readable when it exits
    finally:
        os.close(pidfd)


def is_running(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
