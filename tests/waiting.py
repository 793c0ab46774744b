"""How long a test may wait, and waiting for a condition that no event announces (another
process's state), bounded."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import trio

TIMEOUT = 90
"""The bound on one test's waiting (``trio.fail_after(TIMEOUT)``): generous, since the
machine may be small and busy (CI runs on 2 cores beside other work), and a test that needs
longer says why with a multiple of it. Nothing here is a wall-clock threshold a test
asserts: on a virtual clock (MockClock) it costs no time at all."""


def wait_until(condition: Callable[[], bool], *, timeout: float = TIMEOUT, what: str = ""
               ) -> None:
    """Return once ``condition()`` holds; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"still waiting after {timeout} s: {what or condition}")
        time.sleep(0.05)


async def eventually(condition: Callable[[], Awaitable[bool]], *, what: str = "") -> None:
    """Return once ``await condition()`` holds (bound it with ``trio.fail_after``).

    For a condition in another process that announces nothing: it is looked at again
    every 50 ms."""
    while True:
        if await condition():
            return
        await trio.sleep(0.05)
