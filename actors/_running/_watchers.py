"""Watching a running worker: is its event loop alive (heartbeats), and how big has it
grown (resident memory). Each watcher returns what it found; its handle decides what
follows (a kill, a replacement)."""

from __future__ import annotations

import logging
import select

import trio

from .._messaging._link import Link

__all__ = ["memory_over", "silence"]

log = logging.getLogger("actors")

_MEMORY_CHECK_EVERY = 1.0


async def silence(link: Link, limit: float, path: str) -> float | None:
    """Return how long the worker on ``link`` has sent nothing, once that is more than
    ``limit`` seconds; None once its link is down.

    Silence is judged only on what this process had the chance to read: a round in which
    our own loop was late (a stall of the master: a GC pause, a blocking call) is not
    judged, and a worker whose channel holds unread bytes is not silent."""
    period = limit / 4
    while not link.down:
        slept_at = trio.current_time()
        await trio.sleep(period)
        late = trio.current_time() - slept_at - period
        if late > period:
            log.warning("the event loop of this process was blocked for %.1f s: "
                        "not judging worker %s this round", late, path)
            continue
        silent = trio.current_time() - link.last_heard
        if silent > limit and not _unread(link):
            return silent
    return None


def _unread(link: Link) -> bool:
    """True when the worker's channel holds bytes this process has not read yet."""
    try:
        readable, _, _ = select.select([link.channel.fileno()], [], [], 0)
    except (OSError, ValueError):
        return False
    return bool(readable)


async def memory_over(pid: int, limit: int) -> int | None:
    """Return the resident memory of process ``pid`` once it stayed above ``limit`` bytes
    (two checks in a row, a second apart: a brief peak is not enough); None once the
    process is gone."""
    import psutil

    try:
        process = psutil.Process(pid)
    except psutil.Error:
        return None
    over = 0
    while True:
        await trio.sleep(_MEMORY_CHECK_EVERY)
        try:
            rss = process.memory_info().rss
        except psutil.Error:
            return None  # it exited
        except OSError:
            continue  # this process is out of fds to read /proc with: look again later
        over = over + 1 if rss > limit else 0
        if over >= 2:
            return rss
