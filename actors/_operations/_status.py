"""What runs: one status row per actor, from the supervision tree and the names workers
registered, with the figures of each process (psutil) and each actor (a probe).
"""

from __future__ import annotations

import logging
from typing import Any

import trio

from protocol import Message

from .._base._control import Probe, Probed
from .._base._errors import ActorError
from .._base._events import ExitReason
from .._base._handoff import AcceptorStats, GetStats
from .._base._ref import ActorRef
from .._base._tree import Child, Lifecycle, walk
from .._messaging._router import Router
from ._protocol import ActorStatus, Kind

__all__ = [
    "PROCESSES",
    "collect_status",
    "cut",
]

log = logging.getLogger("actors")
output_log = logging.getLogger("actors.output")

_STATUS_TEXT = 4096  # characters of a status row's last exit (its first line, cut)


# -- what runs ----------------------------------------------------------------------------------


class _Processes:
    """psutil views of the workers, kept so that CPU% compares with the last look."""

    def __init__(self) -> None:
        self._seen: dict[int, object] = {}

    def figures(self, pid: int | None) -> tuple[int | None, float | None]:
        import psutil

        if pid is None:
            return None, None
        process = self._seen.get(pid)
        try:
            if process is None:
                process = self._seen[pid] = psutil.Process(pid)
                # The first look only starts the measure (psutil answers 0.0, which would
                # read as idle): no figure until there is an interval to measure over.
                process.cpu_percent(None)
                return process.memory_info().rss, None
            assert isinstance(process, psutil.Process)
            return process.memory_info().rss, round(process.cpu_percent(None), 1)
        except psutil.Error:
            self._seen.pop(pid, None)
            return None, None
        except OSError:
            return None, None  # out of fds to read /proc with: figures unknown this time


PROCESSES = _Processes()


def _described(reason: ExitReason | None) -> str | None:
    """An exit reason in a status row: one line, cut (an exception's message has no bound,
    a status must still fit in a frame)."""
    return None if reason is None else cut(reason.describe(), _STATUS_TEXT)


def cut(text: str, limit: int) -> str:
    """``text``, or its first ``limit`` characters and a marker saying how many were cut."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]} … [cut: {len(text) - limit} more characters]"


def _figures(probed: Probed | None) -> dict[str, Any]:
    """A probed actor's own figures, as ActorStatus fields (none if it did not answer)."""
    if probed is None:
        return {}
    return {"mailbox": probed.mailbox, "handled": probed.handled, "asks": probed.asks,
            "ask_seconds": probed.ask_seconds, "ask_buckets": probed.ask_buckets}


async def collect_status(
    router: Router,
    children: list[Child],
    last_exits: dict[str, ExitReason],
) -> list[ActorStatus]:
    """One row per actor: the supervision tree walked from ``children`` (a supervised child
    between two instances is a row in state ``restarting``), then the actors registered by
    worker processes (their own children)."""
    rows: list[ActorStatus] = []
    now = trio.current_time()
    pids: dict[str, int] = {}  # worker node -> pid

    async def probe(address: str | None) -> Probed | None:
        reply = await _ask(router, address, Probe(), within=1.0)
        return reply if isinstance(reply, Probed) else None

    # (the tree of one moment: the probes below await)
    for parent, child in list(walk(children)):
        kind: Kind = child.kind
        if kind == "worker" and parent is not None and parent.kind == "listener":
            kind = "acceptor"
        row: dict[str, Any] = {
            "path": child.path, "kind": kind, "pid": child.pid, "node": child.node or router.id,
            "state": child.state.value, "restarts": child.restarts,
            "uptime": None if child.state is Lifecycle.RESTARTING
            else round(now - child.started_at, 3),
            "last_exit": _described(last_exits.get(child.path)),
        }
        if child.kind in ("worker", "command"):
            row["rss"], row["cpu"] = PROCESSES.figures(child.pid)
            if child.pid is not None and child.node is not None:
                pids[child.node] = child.pid
        if child.kind in ("worker", "actor"):
            row.update(_figures(await probe(child.address)))
        if kind == "acceptor":
            stats = await _ask(router, child.address, GetStats(), within=2.0)
            if isinstance(stats, AcceptorStats):
                row.update(open=stats.open, total=stats.total)
        rows.append(ActorStatus(**row))
    known = {row.path for row in rows}
    for path, address in sorted(router.names.names.items()):
        if path in known or "@" in path:  # (the runtime's own actors)
            continue
        node = address.partition("/")[0]
        pid = next((p for n, p in pids.items() if node == n or node.startswith(n + ".")), None)
        probed = await probe(address)
        last = last_exits.get(path)
        rows.append(ActorStatus(
            path=path, kind="actor", node=node,
            pid=probed.pid if probed is not None else pid, **_figures(probed),
            last_exit=_described(last),
        ))
    return rows


async def _ask(router: Router, address: str | None, question: Message, *, within: float
               ) -> Message | None:
    """``question``'s answer from the actor at ``address``; None if there is none (no
    address, the actor is gone, or it did not answer ``within`` seconds)."""
    if address is None:
        return None
    with trio.move_on_after(within):
        try:
            return await ActorRef(router.outbox, address=address).ask(question)
        except ActorError as exc:
            log.debug("no answer to %s from %s: %r", type(question).__name__, address, exc)
    return None
