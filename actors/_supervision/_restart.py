"""The restart decision, as a pure function of (spec, history, exit, time).

Kept free of I/O and of the clock (``now`` is an argument), so that restart windows and
backoff are tested without processes or sleeping.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from .._base._events import ExitReason
from .._base._spec import ChildSpec, SupervisorSpec

__all__ = ["Decision", "RestartHistory", "decide", "should_restart"]


@dataclass
class RestartHistory:
    """A supervisor's memory: restart times in the window, consecutive failures per child."""

    restarts: deque[float] = field(default_factory=deque)
    failures: dict[str, int] = field(default_factory=dict)

    def count(self, now: float, within: float) -> int:
        """Restarts in the window ``[now - within, now]`` (OTP's edge: a restart exactly
        ``within`` seconds old still counts)."""
        while self.restarts and self.restarts[0] < now - within:
            self.restarts.popleft()
        return len(self.restarts)


@dataclass(frozen=True)
class Decision:
    """What a supervisor does about one exit.

    ``give_up``: stop every child and fail. Otherwise stop ``stop`` (they are running; last
    started first), wait ``delay`` seconds, then start ``restart`` in order.
    """

    give_up: bool = False
    stop: tuple[str, ...] = ()
    restart: tuple[str, ...] = ()
    delay: float = 0.0


def should_restart(spec: ChildSpec, reason: ExitReason) -> bool:
    """OTP's restart types: permanent always, transient after an abnormal exit, temporary never."""
    if spec.restart == "permanent":
        return True
    if spec.restart == "transient":
        return not reason.normal
    return False


def decide(
    spec: SupervisorSpec,
    history: RestartHistory,
    child: str,
    reason: ExitReason,
    *,
    now: float,
    uptime: float,
    running: Sequence[str],
    random: Callable[[], float],
) -> Decision:
    """Decide what ``spec``'s supervisor does now that ``child`` exited with ``reason``.

    ``uptime``: how long that instance ran (0 for a failed start). ``running``: the other
    children still running, in start order. Mutates ``history`` (this exit is recorded).
    """
    child_spec = spec.child(child)
    if not should_restart(child_spec, reason):
        history.failures.pop(child, None)
        return Decision()
    if reason.kind != "recycled":  # planned replacements (max_connections) are no failures
        history.count(now, spec.within)
        history.restarts.append(now)
        if len(history.restarts) > spec.max_restarts:
            return Decision(give_up=True)

    delay = 0.0
    intentional = reason.normal or reason.kind in ("suicide", "memory", "recycled")
    if spec.backoff is not None and not intentional:
        failures = history.failures.get(child, 0)
        if uptime >= spec.backoff.reset_after:
            failures = 0
        failures += 1
        history.failures[child] = failures
        delay = spec.backoff.delay(failures, random())
    elif spec.backoff is not None and uptime >= spec.backoff.reset_after:
        history.failures.pop(child, None)

    order = [c.name for c in spec.children]
    if spec.strategy == "one_for_one":
        affected = [child]
    elif spec.strategy == "one_for_all":
        affected = list(order)
    else:  # rest_for_one
        affected = order[order.index(child) :]
    stop = tuple(name for name in reversed(affected) if name != child and name in running)
    restart = tuple(
        name for name in affected
        if name == child or (name in running and spec.child(name).restart != "temporary")
    )
    return Decision(stop=stop, restart=restart, delay=delay)
