"""The end of a worker process: our side of its channel, killing its process group, and
waiting for its exit status."""

from __future__ import annotations

import logging
import os
import signal

import trio

from .._base._events import ExitReason
from .._messaging._link import Link
from .._messaging._router import Router
from ._processes import SpawnedProcess

__all__ = ["GRACE_AFTER_EOF", "end_channel", "kill", "reap"]

log = logging.getLogger("actors")

GRACE_AFTER_EOF = 1.0
"""Seconds a worker whose channel closed takes to exit (it exits on the channel's end)."""

# A SIGKILLed worker is gone within milliseconds; its exit status comes from the fork server.
# If that report never comes (the server is stopped or stuck), the shutdown, which waits
# shielded, must still end.
_EXIT_AFTER_KILL = 5.0


async def end_channel(router: Router, link: Link) -> None:
    """The worker's actor stopped: send it nothing new, then end our side of its channel.

    The worker reads until our end of the channel, answering (refusing) whatever it was
    sent before, so no request to it is left in doubt by an orderly stop."""
    router.close_link(link)
    with trio.move_on_after(GRACE_AFTER_EOF):
        try:
            await link.channel.flush()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return
    link.channel.send_eof()


def kill(process: SpawnedProcess | None) -> None:
    """SIGKILL the worker's process group (it leads one), unless it exited already."""
    if process is None or process.returncode is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        process.kill()  # not (yet) the leader of its own group


async def reap(
    process: SpawnedProcess, grace: float, *, path: str, said_a_word: bool
) -> ExitReason | None:
    """Wait up to ``grace`` seconds for ``process`` to exit, then kill it and wait for
    that. Why its end was odd, if it was: no exit status even after the kill, or none known
    for a worker that exited without a word (``said_a_word``: it said it was stopping)."""
    with trio.move_on_after(grace):
        await process.wait()
    if not _ended(process):
        kill(process)
        with trio.move_on_after(_EXIT_AFTER_KILL):
            await process.wait()
        if not _ended(process):
            log.error("worker %s (pid %s): no exit status %s s after SIGKILL; going on "
                      "without it", path, process.pid, _EXIT_AFTER_KILL)
            return ExitReason(kind="killed", detail="SIGKILLed; its exit status never came")
    elif process.returncode is None and not said_a_word:
        # Its fork server died before it: nobody could wait for its status.
        return ExitReason(
            kind="crashed", detail="it exited without a word; its exit status is unknown "
            "(the fork server that started it was gone)",
        )
    return None


def _ended(process: SpawnedProcess) -> bool:
    # (a process forked by the fork server whose status can no longer come says so)
    return process.returncode is not None or getattr(process, "status_unknown", False)
