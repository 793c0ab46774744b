"""``Link``: the channel between this process and a neighbouring one in the process tree."""

from __future__ import annotations

import math

import trio

from protocol import Channel, FrameKind, Message, encode_message

__all__ = ["Link"]


class Link:
    """The channel to the parent process, or to one worker process this one started.

    The router reads its frames (``Router.pump``) and answers what concerns routing itself
    (names, events, heartbeats); every other control message goes to ``control``, which
    the link's owner reads (a worker handle in the parent, the bootstrap in a worker).
    ``subtree`` is the path of the worker's actor (child links only): the worker may name
    and report actors at that path or below it, nothing else.
    """

    def __init__(
        self, peer: str, channel: Channel, *, is_parent: bool, subtree: str = ""
    ) -> None:
        self.peer = peer
        self.channel = channel
        self.is_parent = is_parent
        self.subtree = subtree
        self.down = False
        self.down_reason = ""
        self.error: BaseException | None = None  # what ended the link, if it failed
        self.last_heard = trio.current_time()
        # Asks forwarded out through this link, keyed by (asker node, corr): the destination.
        self.relayed: dict[tuple[str, int], str] = {}
        self.control, self.control_received = trio.open_memory_channel[Message](math.inf)

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

    def owns(self, node_id: str) -> bool:
        """True when ``node_id`` is the peer or below it (only meaningful for child links)."""
        return node_id == self.peer or node_id.startswith(self.peer + ".")

    def covers(self, path: str) -> bool:
        """True when ``path`` is the worker's own path or below it (child links only)."""
        return path == self.subtree or path.startswith(self.subtree + "/")
