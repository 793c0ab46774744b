"""What the CLI prints: JSON lines, sizes and durations, the status table (rich).
"""


from __future__ import annotations

import json
from typing import Any

from .._base._children import ChildInfo
from .._operations._protocol import (
    Status,
)

__all__ = [
    "console",
    "duration",
    "print_json",
    "size",
    "status_table",
]



def print_json(value: Any) -> None:
    print(json.dumps(value, indent=None, sort_keys=True), flush=True)


def size(value: int | None) -> str:
    if value is None:
        return "-"
    return f"{value / 2**20:.0f}M" if value < 2**30 * 10 else f"{value / 2**30:.1f}G"


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def status_table(status: Status) -> Any:
    """The status as a table that fits 100 columns (``--json`` has every figure)."""
    from rich import box
    from rich.table import Table

    info = status.system
    table = Table(title=f"{info.name}  (master {info.pid}, up {duration(info.uptime)})",
                  title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    right = {"pid", "up", "restarts", "mbox", "rss", "cpu%"}
    for column in ("path", "kind", "pid", "state", "up", "restarts", "last exit", "mbox",
                   "rss", "cpu%", "conns"):
        table.add_column(column, no_wrap=True, justify="right" if column in right else "left")
    for row in status.actors:
        table.add_row(
            row.path, row.kind, "-" if row.pid is None else str(row.pid), row.state,
            duration(row.uptime), str(row.restarts),
            row.last_exit.split(" - ")[0] if row.last_exit else "-",
            "-" if row.mailbox is None else str(row.mailbox), size(row.rss),
            "-" if row.cpu is None else f"{row.cpu:.0f}",
            "-" if row.open is None else f"{row.open}/{row.total}",
        )
    return table


def children_table(rows: list[ChildInfo]) -> Any:
    """``trio-actors children``: a row per child of a supervisor."""
    from rich.table import Table

    table = Table(box=None)
    for column in ("name", "kind", "pid", "state", "restarts"):
        table.add_column(column)
    for row in rows:
        table.add_row(row.name, row.kind, "-" if row.pid is None else str(row.pid),
                      row.state, str(row.restarts))
    return table


def console() -> Any:
    from rich.console import Console

    console = Console()
    if not console.is_terminal:
        # Piped to a file or another program: no screen to fit (and COLUMNS, which some
        # parents export, describes theirs), so nothing is cut short; a table is as wide as
        # its widest row, not padded to this.
        console = Console(width=1000)
    return console


