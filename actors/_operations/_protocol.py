"""What the control socket carries: a request, then its answer (or, for ``events`` and
``logs``, a stream of lines until the client goes), as the runtime's own typed messages.
"""

from __future__ import annotations

import logging
from typing import Literal

from protocol import (
    Channel,
    FrameKind,
    Message,
    decode_message,
    encode_message,
)

from .._base._children import ChildInfo

__all__ = [
    "ActorStatus",
    "Answer",
    "Children",
    "End",
    "EventLine",
    "Kind",
    "LogLine",
    "Note",
    "Request",
    "Status",
    "SystemInfo",
    "receive_request",
    "send_control",
]

log = logging.getLogger("actors")
output_log = logging.getLogger("actors.output")

# -- what the control socket carries -----------------------------------------------------------


class SystemInfo(Message, tag="actors.ops.SystemInfo"):
    """A running system: its name, its master's pid, since when it runs."""

    name: str
    pid: int
    started: float  # time.time() when it started
    uptime: float
    socket: str


Kind = Literal["supervisor", "listener", "acceptor", "worker", "actor", "command"]
"""What a status row is: a child's kind, a worker under a listener being an acceptor."""


class ActorStatus(Message, tag="actors.ops.ActorStatus"):
    """One row of ``trio-actors status``."""

    path: str
    kind: Kind
    pid: int | None = None
    node: str = "0"
    # (the value of the child's Lifecycle; "restarting": between two instances)
    state: Literal[
        "starting", "running", "retiring", "stopping", "exited", "restarting"
    ] = "running"
    uptime: float | None = None
    restarts: int = 0
    last_exit: str | None = None
    mailbox: int | None = None
    rss: int | None = None
    cpu: float | None = None
    open: int | None = None
    total: int | None = None
    handled: int | None = None
    asks: int | None = None
    ask_seconds: float | None = None  # the time its handlers took on asks, in all
    ask_buckets: list[int] | None = None  # how many took at most each of ASK_BUCKETS


class Status(Message, tag="actors.ops.Status"):
    system: SystemInfo
    actors: list[ActorStatus]


class Request(Message, tag="actors.ops.Request"):
    """What a client wants (``verb``), with its arguments."""

    verb: Literal["info", "status", "reload", "restart", "scale", "stop", "events", "logs",
                  "children", "terminate", "delete"]
    path: str | None = None
    count: int | None = None
    follow: bool = False


class Answer(Message, tag="actors.ops.Answer"):
    """The outcome of a request that does not stream: ``error`` set if it failed."""

    ok: bool
    error: str | None = None
    detail: list[str] = []


class Children(Message, tag="actors.ops.Children"):
    """The answer to ``children``: a row per child of the supervisor asked about."""

    rows: list[ChildInfo]


class EventLine(Message, tag="actors.ops.EventLine"):
    tag: str
    body: str


class LogLine(Message, tag="actors.ops.LogLine"):
    """One line of a worker's output."""

    at: float
    path: str
    pid: int
    stream: Literal["stdout", "stderr"]
    text: str


class End(Message, tag="actors.ops.End"):
    """The end of a stream (``logs`` without ``--follow``)."""


class Note(Message, tag="actors.ops.Note"):
    """Said in a stream where something could not be: lines a slow reader missed, an item
    too large to carry. The stream goes on after it."""

    text: str


async def send_control(channel: Channel, message: Message) -> None:
    """Send one message on a control connection (either side)."""
    data, fds = encode_message(FrameKind.SYSTEM, message, max_frame_size=channel.max_frame_size)
    await channel.send(data, fds)


async def receive_request(channel: Channel) -> Message | str:
    """A client's request, or why it is refused. A request is one frame and carries no fds:
    fds that come with it, or with any frame after it, are closed at once."""
    first, *rest = await channel.receive_some()
    for frame in rest:
        frame.close_fds()
    if first.nfds or first.fds:
        first.close_fds()
        return "a control request carries no file descriptors: refused"
    return decode_message(first)


