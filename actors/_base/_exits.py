"""Why an actor instance ended (:class:`ExitReason`), apart from the events that carry it,
so that the error tree can name it without importing the events."""

from __future__ import annotations

from typing import Literal

from protocol import Message

__all__ = ["ExitKind", "ExitReason", "first_line"]

ExitKind = Literal[
    "normal", "shutdown", "crashed", "killed", "suicide", "timeout", "unresponsive", "memory",
    "recycled",
]


class ExitReason(Message, tag="actors.ExitReason"):
    """Why an actor instance ended.

    ``normal``: it stopped by itself. ``shutdown``: it stopped because it was asked.
    ``crashed``: an exception ended it (``error_type``, ``detail``, ``traceback``), or its
    process exited with a non-zero status. ``killed``: a signal ended its process. ``suicide``:
    it reported an unexpected exception and asked to be replaced. ``timeout``: it did not
    become ready within its start timeout. ``unresponsive``: its process stopped answering
    heartbeats and was killed. ``memory``: its process stayed above ``max_memory`` and was
    replaced. ``recycled``: an acceptor served ``max_connections_per_worker`` connections
    and was replaced.
    """

    kind: ExitKind
    detail: str = ""
    error_type: str = ""
    traceback: str = ""
    exit_code: int | None = None
    signal: int | None = None

    @property
    def normal(self) -> bool:
        """True for the exits OTP calls normal: the actor ended by itself or as asked."""
        return self.kind in ("normal", "shutdown")

    def why(self) -> str:
        """The reason in words, for messages: ``"it crashed (KeyError: 'x')"``."""
        detail = first_line(self.detail)
        detail = f"{self.error_type}: {detail}" if self.error_type else detail
        words = {
            "normal": "it stopped by itself",
            "shutdown": "it was stopped",
            "crashed": "it crashed",
            "killed": "it was killed",
            "suicide": "it crashed and asked to be replaced",
            "timeout": "it did not become ready in time",
            "unresponsive": "it stopped answering heartbeats and was killed",
            "memory": "it used more memory than it may and was replaced",
            "recycled": "it served its share of connections and was replaced",
        }[self.kind]
        if self.signal is not None:
            detail = f"{detail}, signal {self.signal}" if detail else f"signal {self.signal}"
        return f"{words} ({detail})" if detail else words

    def describe(self) -> str:
        """One line: the kind, the error or detail (its first line), the status."""
        parts: list[str] = [self.kind]
        detail = first_line(self.detail)
        if self.error_type:
            parts.append(f"{self.error_type}: {detail}")
        elif detail:
            parts.append(detail)
        if self.signal is not None:
            parts.append(f"signal {self.signal}")
        elif self.exit_code is not None:
            parts.append(f"exit status {self.exit_code}")
        return " - ".join(parts)


def first_line(text: str, limit: int = 200) -> str:
    line = text.strip().split("\n", 1)[0]
    return line if len(line) <= limit else line[: limit - 3] + "..."
