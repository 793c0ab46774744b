"""``Inbox``: requests from other processes, delivered to the actors of this one.

The relay hands the inbox every TELL or ASK frame addressed to an actor of this process.
The inbox decodes it (refs in it send from this process's outbox), gives an ask a
:class:`Reply` that answers over the wire, and passes it on without waiting: to the actor's
*inline handler* when it has one for that message (the runtime's own synchronous handlers:
a hand-off, a probe, a state push), else into its mailbox. A full mailbox opens a delivery
lane (see ``_lanes``) rather than stopping the relay from reading the link; so does any
message behind one, so that order holds. Only the lane's task waits for room.

A frame that cannot be decoded fails that one request (the stream is in step); a request for
an actor that is gone or stopping is refused. Either way the link's peer gets its credit back.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import trio

from protocol import Frame, FrameKind, Message, decode_message

from .._base._control import Failure
from .._base._errors import ActorGone
from ._asks import Reply
from ._lanes import Lanes
from ._link import Link
from ._mailboxes import Mailbox, Mailboxes
from ._outbox import MESSAGE_ERRORS, Outbox

__all__ = ["Inbox"]

log = logging.getLogger("actors")


class Inbox:
    """Delivers the requests that reach this process to its ``mailboxes``; answers go
    back through ``outbox``, messages that must wait into ``lanes``."""

    def __init__(self, mailboxes: Mailboxes, outbox: Outbox, lanes: Lanes) -> None:
        self._local = mailboxes.local
        self._outbox = outbox
        self._context = outbox.context
        self._lanes = lanes
        self._waiting = lanes.delivery  # looked up for every request while not empty

    def decode(self, frame: Frame) -> Message:
        """Decode a frame's message in this process (refs in it send through the outbox)."""
        return decode_message(frame, self._context)

    def on_request(self, link: Link, frame: Frame, actor: str, source: str) -> None:
        """A request from node ``source``, arrived on ``link``, for local actor ``actor``."""
        if self._waiting:
            lane = self._waiting.get((link, actor))
            if lane is not None:  # earlier messages from this link wait: keep the order
                lane.items.append((frame, source, None))
                return
        try:
            mailbox = self._local(actor)
        except ActorGone as exc:
            self._outbox.refuse(link, frame, source, "gone", str(exc))
            return
        message = self._decode_request(link, frame, source)
        if message is None:
            return
        reply = (Reply(self._outbox, target=source, corr=frame.corr, via=link)
                 if frame.kind is FrameKind.ASK else None)
        inline = mailbox.inline_handler(message)
        if inline is not None:
            self._handle_inline(mailbox, inline, message, reply)
            link.passed(frame)
            return
        try:
            mailbox.deliver_nowait(message, reply)
        except trio.WouldBlock:
            self._lanes.deliver_later(link, actor, frame, source, message,
                                      self.deliver_in_turn, self.deliver_now)
            return
        except ActorGone as exc:
            if reply is not None:
                reply.fail(Failure.from_exception("gone", exc))
        link.passed(frame)

    async def deliver_in_turn(self, link: Link, actor: str, frame: Frame, source: str,
                              message: Message | None) -> None:
        """Deliver one message of a delivery lane, waiting for room in the mailbox."""
        if message is None:
            message = self._decode_request(link, frame, source)
            if message is None:
                return
        reply = (Reply(self._outbox, target=source, corr=frame.corr, via=link)
                 if frame.kind is FrameKind.ASK else None)
        try:
            mailbox = self._local(actor)
            inline = mailbox.inline_handler(message)
            if inline is None:
                await mailbox.deliver(message, reply)
            else:
                self._handle_inline(mailbox, inline, message, reply)
        except ActorGone as exc:
            if reply is not None:
                reply.fail(Failure.from_exception("gone", exc))
            else:
                log.debug("dropping a message from node %s: %s", source, exc)
        link.passed(frame)

    def deliver_now(self, link: Link, actor: str, frame: Frame, source: str,
                    message: Message | None) -> Message | None:
        """Deliver one message of a delivery lane if its mailbox has room: None once it is
        passed on (or failed), else the decoded message, to wait for room with."""
        if message is None:
            message = self._decode_request(link, frame, source)
            if message is None:
                return None
        reply = (Reply(self._outbox, target=source, corr=frame.corr, via=link)
                 if frame.kind is FrameKind.ASK else None)
        try:
            mailbox = self._local(actor)
            inline = mailbox.inline_handler(message)
            if inline is None:
                mailbox.deliver_nowait(message, reply)
            else:
                self._handle_inline(mailbox, inline, message, reply)
        except trio.WouldBlock:
            return message
        except ActorGone as exc:
            if reply is not None:
                reply.fail(Failure.from_exception("gone", exc))
            else:
                log.debug("dropping a message from node %s: %s", source, exc)
        link.passed(frame)
        return None

    def _decode_request(self, link: Link, frame: Frame, source: str) -> Message | None:
        """The message of a request frame, or None once its failure is handled."""
        try:
            return decode_message(frame, self._context)
        except MESSAGE_ERRORS as exc:
            # An error for this one message (the stream is in step): the asker hears why.
            if frame.kind is FrameKind.ASK:
                self._outbox.send_failure(
                    source, frame.corr, Failure.from_exception("protocol", exc), link
                )
            log.error("cannot take a message from node %s: %s", source, exc)
            link.passed(frame)
            return None

    @staticmethod
    def _handle_inline(
        mailbox: Mailbox,
        inline: Callable[[Message], Message | None],
        message: Message,
        reply: Reply | None,
    ) -> None:
        """Run the actor's inline handler here and now: its result is the reply, and an
        exception crashes the actor (as one escaping a handler does)."""
        try:
            result = inline(message)
        except Exception as exc:
            if reply is not None:
                reply.fail(Failure.from_exception("remote", exc, actor=mailbox.path))
            mailbox.fail(exc)
            return
        if reply is not None:
            reply.send(result)
