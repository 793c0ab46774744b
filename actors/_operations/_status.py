"""What runs: one status row per actor, from the supervision tree and the names workers
registered, with the figures of each process (psutil) and each actor (a probe).
"""

from __future__ import annotations

import logging
import os
from typing import Any

import trio

from .._base._control import Probe, Probed
from .._base._errors import ActorError
from .._base._events import ExitReason
from .._base._tree import Child
from .._listening._listener import Listener
from .._messaging._router import Router
from .._running._cell import Cell
from .._running._worker import WorkerHandle
from .._supervision._supervisor import Supervisor
from ._protocol import ActorStatus

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
    """One row per actor: the supervision tree walked from ``children``, then the actors
    registered by worker processes (their own children)."""
    rows: list[ActorStatus] = []
    now = trio.current_time()
    pids: dict[str, int] = {}  # worker node -> pid

    async def probe(address: str | None) -> Probed | None:
        if address is None:
            return None
        from .._base._ref import ActorRef

        with trio.move_on_after(1):
            try:
                reply = await ActorRef(router, address=address).ask(Probe())
            except ActorError:
                return None
            return reply if isinstance(reply, Probed) else None
        return None

    async def walk(child: Child, restarts: int, acceptor: bool) -> None:
        last = last_exits.get(child.path)
        common = {"path": child.path, "uptime": round(now - child.started_at, 3),
                  "restarts": restarts, "last_exit": _described(last)}
        if isinstance(child, Listener):
            rows.append(ActorStatus(kind="listener", pid=os.getpid(), **common))
            sup = child._supervisor
            if sup is not None:
                stats = {s.path: s for s in await child.stats()}
                for name, instance in sorted(sup.instances().items()):
                    await walk(instance, sup.restart_counts.get(name, 0), True)
                    if rows[-1].path in stats:
                        figures = stats[rows[-1].path]
                        rows[-1] = rows[-1].model_copy(
                            update={"open": figures.open, "total": figures.total})
        elif isinstance(child, Supervisor):
            rows.append(ActorStatus(kind="supervisor", pid=os.getpid(), **common))
            for name, instance in sorted(child.instances().items(),
                                         key=lambda item: child.child_names().index(item[0])):
                await walk(instance, child.restart_counts.get(name, 0), False)
        elif isinstance(child, WorkerHandle):
            rss, cpu = PROCESSES.figures(child.pid)
            probed = await probe(child.address)
            if child.pid is not None:
                pids[child.node_id] = child.pid
            rows.append(ActorStatus(
                kind="acceptor" if acceptor else "worker", pid=child.pid, node=child.node_id,
                state=child.state.value, rss=rss, cpu=cpu, **_figures(probed), **common,
            ))
        elif isinstance(child, Cell):
            rows.append(ActorStatus(
                kind="actor", pid=os.getpid(), node=router.id,
                state=child.state.value,
                mailbox=child.mailbox_depth, handled=child.handled, asks=child.asks,
                ask_seconds=round(child.ask_seconds, 6), ask_buckets=list(child.ask_buckets),
                **common,
            ))
            for grandchild in list(child.children):
                await walk(grandchild, 0, False)

    for child in list(children):
        await walk(child, 0, False)
    known = {row.path for row in rows}
    for path, address in sorted(router.names.names.items()):
        if path in known:
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


