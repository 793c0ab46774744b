"""``Link``: the channel between this process and a neighbouring one in the process tree.

Tells over a link are flow-controlled by credit, so that a receiver never has to stop
reading its channel to apply backpressure (which would leave replies and control messages
stuck behind data for one full mailbox): a sender may have at most ``TELL_WINDOW`` bytes of
tells that the receiver has not yet passed on (into a mailbox, or onward to another
process); the receiver gives credit back (:class:`Credit`) as it passes them on. Asks,
replies and control messages take no credit: each ask has a task (or a bounded request)
waiting for it, so they cannot pile up without bound.

:class:`Links` is the table of a process's links (kept by the relay) as the parts that send
through it see it.
"""

from __future__ import annotations

import math
from typing import Protocol

import trio

from protocol import Channel, Frame, FrameKind, Message, encode_message

from .._base._control import Credit, Heartbeat

__all__ = ["CREDIT_GRANT", "TELL_WINDOW", "Link", "Links"]

TELL_WINDOW = 1024 * 1024
"""Bytes of tells a sender may have in flight on one link before it waits for credit."""
CREDIT_GRANT = TELL_WINDOW // 8
"""The receiver gives credit back once it has passed on this many bytes."""


class Link:
    """The channel to the parent process, to one worker process this one started, or to
    a sibling worker (a direct link).

    The relay reads its frames (``Relay.pump``); each control message goes to the part of
    the process that handles its type (see ``_control_table``), and every other one to
    ``control``, which the link's owner reads (a worker handle in the parent, the bootstrap
    in a worker).
    ``subtree`` is the path of the worker's actor (child links only): the worker may name
    and report actors at that path or below it, nothing else.

    ``direct``: a link to a sibling worker, set up on first use (see ``_direct``), not
    part of the tree: it carries requests, answers and credit, nothing else.

    ``closing``: the peer said it is stopping; nothing new is sent to it, and what it still
    answers is read until it closes. ``retiring``: the peer's actor asked to be replaced;
    names its successor registers take precedence over its own.
    """

    def __init__(
        self, peer: str, channel: Channel, *, is_parent: bool, subtree: str = "",
        direct: bool = False,
    ) -> None:
        self.peer = peer
        self.channel = channel
        self.is_parent = is_parent
        self.direct = direct
        # A direct link is read once the peer's marker came through the master (_direct).
        self.ready = trio.Event()
        self.subtree = subtree
        self._below = peer + "."  # (owns and covers run for every frame from a child)
        self._subtree_below = subtree + "/"
        self.down = False
        self.down_reason = ""
        self.error: BaseException | None = None  # what ended the link, if it failed
        self.closing = False
        self.retiring = False
        self.last_heard = trio.current_time()
        # Asks forwarded out through this link, keyed by (asker node, corr): the destination
        # and the link the ask came on (its answer goes back the same way).
        self.relayed: dict[tuple[str, int], tuple[str, Link]] = {}
        self.control, self.control_received = trio.open_memory_channel[Message](math.inf)
        self.send_credit = TELL_WINDOW  # bytes of tells we may still send
        self._passed_on = 0  # bytes of tells received and passed on, not yet credited back
        self._credit_back = trio.Event()

    @property
    def open_for_sending(self) -> bool:
        return not (self.down or self.closing)

    def send_control(self, message: Message) -> None:
        """Send a control message now; raises if the channel is closed or broken."""
        data, fds = encode_message(
            FrameKind.SYSTEM, message, max_frame_size=self.channel.max_frame_size
        )
        self.channel.send_nowait(data, fds)

    def notify(self, message: Message) -> bool:
        """Send a control message unless the peer is gone; False if it could not go.

        For the messages whose loss does not matter once the peer is gone (it is told
        nothing more, and the link going down is handled where it is noticed).
        """
        if self.down:
            return False
        try:
            self.send_control(message)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return False
        return True

    def to_owner(self, message: Message) -> None:
        """Leave a control message for the link's owner (see ``control``)."""
        try:
            self.control.send_nowait(message)
        except trio.ClosedResourceError:
            pass  # nobody listens any more: the link is going down

    def owns(self, node_id: str) -> bool:
        """True when ``node_id`` is the peer or below it (only meaningful for child links)."""
        return node_id == self.peer or node_id.startswith(self._below)

    def covers(self, path: str) -> bool:
        """True when ``path`` is the worker's own path or below it (child links only)."""
        return path == self.subtree or path.startswith(self._subtree_below)

    # -- credit -----------------------------------------------------------------------------

    async def wait_credit(self) -> None:
        """Wait until a tell may be sent (or the link can take none at all any more)."""
        while self.send_credit <= 0 and self.open_for_sending:
            self._credit_back = trio.Event()
            await self._credit_back.wait()

    def on_heartbeat(self, message: Heartbeat) -> None:
        """The peer's event loop is alive: nothing to do, ``last_heard`` was set when the
        frame was read (any frame shows it)."""

    def on_credit(self, message: Credit) -> None:
        """The peer passed ``message.bytes`` bytes of our tells on (its Credit handler)."""
        self.send_credit += message.bytes
        self._credit_back.set()

    def passed(self, frame: Frame) -> None:
        """A frame from the peer was delivered, forwarded or dropped: a tell's bytes go
        towards the peer's credit (asks, replies and control messages take none)."""
        if frame.kind is FrameKind.TELL:
            self._passed_on += frame.size
            if self._passed_on >= CREDIT_GRANT:
                amount, self._passed_on = self._passed_on, 0
                self.notify(Credit(bytes=amount))

    def stop_sending(self) -> None:
        """Wake whoever waits for credit (the link is closing or down)."""
        self._credit_back.set()


class Links(Protocol):
    """The links of this process (the relay keeps them), as the parts that send through
    them use them: the sending side, the name registry, the event publisher."""

    @property
    def parent(self) -> Link | None:
        """The link to the parent process (None in the master)."""
        ...

    def link_towards(self, node_id: str) -> Link | None:
        """The next hop towards ``node_id`` (None for this node or when there is none)."""
        ...

    def link_down(self, link: Link, reason: str, error: BaseException | None = None) -> None:
        """Forget ``link``: fail what waits on it, drop its names, and close it."""
        ...
