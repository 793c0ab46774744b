"""What the system's workers print, line by line: echoed, logged, and kept for ``logs``.
"""

from __future__ import annotations

import logging
import sys
import time
from collections import deque
from typing import Literal

import trio

from ._protocol import LogLine, Note

__all__ = [
    "LogFollower",
    "OutputLog",
]

log = logging.getLogger("actors")
output_log = logging.getLogger("actors.output")

_LOG_LINES = 2000  # lines of workers' output kept for `trio-actors logs`
_FOLLOW_BUFFER = 4096


# -- workers' output ----------------------------------------------------------------------------


class LogFollower:
    """One reader of ``logs --follow``: the lines queued for it (:attr:`receive`), and how
    many it missed since its queue was last full (:attr:`missed`). A reader too slow for
    the output misses lines, and is told so (a :class:`Note` where they were), rather than
    being let go: its stream never ends silently."""

    def __init__(self) -> None:
        self.send, self.receive = trio.open_memory_channel[LogLine | Note](_FOLLOW_BUFFER)
        self.missed = 0

    def offer(self, line: LogLine) -> bool:
        """Queue ``line``, after the note of what was missed before it; False once the
        reader is gone."""
        try:
            if self.missed:
                self.send.send_nowait(self.note())
                self.missed = 0  # (counted from here again, if the line misses its turn)
            self.send.send_nowait(line)
        except trio.WouldBlock:
            self.missed += 1
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return False
        return True

    def note(self) -> Note:
        """The note of the lines missed so far."""
        return Note(text=f"{self.missed} line(s) of output left out here: this reader fell "
                         f"{_FOLLOW_BUFFER} lines behind")

    def __enter__(self) -> LogFollower:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.receive.close()


class OutputLog:
    """What the system's workers print, line by line (a long line cut: see
    ``_processes.OutputLines``): echoed to the master's own stdout and stderr as printed (so a
    terminal still shows it), sent to the ``actors.output`` logger (DEBUG) with the
    worker's path and pid, and kept (the last lines) for ``logs``."""

    def __init__(self, keep: int = _LOG_LINES) -> None:
        self.lines: deque[LogLine] = deque(maxlen=keep)
        self._followers: list[LogFollower] = []

    def line(self, path: str, pid: int, stream: Literal["stdout", "stderr"], text: str) -> None:
        entry = LogLine(at=time.time(), path=path, pid=pid, stream=stream, text=text)
        self.lines.append(entry)
        target = sys.stdout if stream == "stdout" else sys.stderr
        try:
            target.write(text + "\n")
            target.flush()
        except (OSError, ValueError):
            pass  # our own stdout is gone (closed, a broken pipe): keep the rest working
        output_log.debug("[%s %d] %s", path, pid, text)
        for follower in list(self._followers):
            if not follower.offer(entry):
                self._followers.remove(follower)  # gone

    def follow(self) -> LogFollower:
        """A reader of the lines from now on (use it as a context manager: leaving it
        unsubscribes)."""
        follower = LogFollower()
        self._followers.append(follower)
        return follower


