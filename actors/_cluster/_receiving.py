"""``Receiving``: what other nodes send this one, delivered to its actors in order.

The node's inbox stream is read with a consumer group (the consumer: this incarnation).
Each entry goes to the lane of its target, and a lane delivers one at a time, in the order
read: a tell as a local tell (it waits while the actor's mailbox is full), an ask as a
local ask whose answer goes back to the asker's answers stream. Entries handed to a lane
are acknowledged and deleted, so the stream's length is what this node has not taken yet:
the bound senders respect. A lane that is full stops the reading, and the stream fills.

An entry addressed to an earlier incarnation of this node is not delivered: an ask gets
``ActorGone``. Entries an earlier incarnation read and never acknowledged (it died with
them) are claimed at start (XAUTOCLAIM): their asks get ``ActorGone``, in doubt.
"""

from __future__ import annotations

import contextlib
import logging
from collections import deque
from typing import Any

import trio

from protocol import DecodeError, Message

from .._base._control import Failure
from .._base._errors import (
    ActorError,
    ActorGone,
    ActorNotFound,
    BrokerUnavailable,
    RemoteError,
)
from .._base._ref import ActorRef, Sender
from ._broker import Broker, Cleanup
from ._monitors import Downed, Monitors, Unwatch, Watch
from ._sending import Sending
from ._wire import Entry, Keys, decode_body, unpack

__all__ = ["Receiving"]

log = logging.getLogger("actors.cluster")

GROUP = "node"

# KEYS: the inbox stream; ARGV: the group, then the ids taken.
_TAKEN = """
redis.call('XACK', KEYS[1], ARGV[1], unpack(ARGV, 2))
return redis.call('XDEL', KEYS[1], unpack(ARGV, 2))
"""


_LANE_IDLE = 1.0  # seconds a lane's task waits for more before it ends


class _Lane:
    __slots__ = ("entries", "more", "room")

    def __init__(self) -> None:
        self.entries: deque[Entry] = deque()
        self.room = trio.Event()
        self.more = trio.Event()


class Receiving:
    """The receiving side of node ``name`` (``incarnation``): ``run`` reads its inbox."""

    def __init__(self, broker: Broker, keys: Keys, name: str, incarnation: int,
                 outbox: Sender, sending: Sending, monitors: Monitors,
                 nursery: trio.Nursery, *, lane_limit: int = 256) -> None:
        self.broker = broker
        self.keys = keys
        self.node = (name, incarnation)
        self.stream = keys.inbox(name)
        self._outbox = outbox
        self._sending = sending
        self._monitors = monitors
        self._nursery = nursery
        self._lanes: dict[str, _Lane] = {}
        self._lane_limit = lane_limit
        self._taken: Any = broker.client.register_script(_TAKEN)
        self._done = Cleanup(broker, "an acknowledgement", lambda ids: self._taken(
            keys=[self.stream], args=[GROUP, *ids]))

    def decode(self, tag: str, body: bytes) -> Message:
        return decode_body(tag, body, self._outbox, self.node)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        client = self.broker.client
        await self._make_group()
        await self._claim_earlier()
        self._nursery.start_soon(self._done.run)
        task_status.started()
        me = str(self.node[1])
        while True:
            if not self.broker.up:
                await self.broker.back.wait()
            try:
                found = await self.broker.call("a read", client.xreadgroup(
                    GROUP, me, streams={self.stream: ">"}, count=256, block=1000), wait=1.0)
            except BrokerUnavailable as exc:
                if self.broker.up and "group" in str(exc).lower():
                    # Redis lost its data (restarted empty, flushed): the group too.
                    with contextlib.suppress(BrokerUnavailable):
                        await self._make_group()
                continue
            if not found:
                continue
            items = found.get(self.stream.encode(), ())
            for item in items:
                await self._take(item.field_values.get(b"e", b""))
            self._done.add([item.identifier for item in items])
            # The lanes first: what was just read is delivered before the next read
            # (its command costs this process more than the delivery takes).
            await trio.lowlevel.cancel_shielded_checkpoint()

    async def _make_group(self) -> None:
        """The inbox and its consumer group, unless an earlier incarnation made them."""
        try:
            with trio.fail_after(self.broker.timeout):
                await self.broker.client.xgroup_create(self.stream, GROUP, identifier="0",
                                                       mkstream=True)
        except Exception as exc:  # coredis's ResponseError, unless Redis failed
            if "BUSYGROUP" not in str(exc) and "already exists" not in str(exc):
                raise BrokerUnavailable(f"cannot read {self.stream}: {exc}") from exc

    async def _claim_earlier(self) -> None:
        """Answer what an earlier incarnation took and never finished: in doubt."""
        client = self.broker.client
        me = str(self.node[1])
        start = "0-0"
        while True:
            found = await self.broker.call("a start", client.xautoclaim(
                self.stream, GROUP, me, 0, start, count=256))
            start, items = found[0], found[1]
            ids = [item.identifier for item in items]
            for item in items:
                try:
                    entry = unpack(item.field_values.get(b"e", b""))
                except ValueError:
                    continue
                if entry.kind == "ask":
                    await self._fail(entry, ActorGone(
                        f"node {self.node[0]} restarted with the ask in hand: it may have "
                        "been handled"), in_doubt=True)
            if ids:
                await self.broker.call("a start", self._taken(
                    keys=[self.stream], args=[GROUP, *ids]))
            if _text(start) == "0-0":
                break
        for consumer in await self.broker.call("a start", client.xinfo_consumers(
                self.stream, GROUP)):
            name = _text(consumer.get(b"name", consumer.get("name", b"")))
            if name != me:
                await self.broker.call("a start", client.xgroup_delconsumer(
                    self.stream, GROUP, name))

    async def _take(self, data: bytes) -> None:
        try:
            entry = unpack(data)
        except ValueError as exc:
            log.error("a garbled entry in %s: %s", self.stream, exc)
            return
        if entry.to_incarnation != self.node[1]:
            if entry.kind == "ask":
                await self._fail(entry, ActorGone(
                    f"actor {entry.to} of an earlier incarnation of node {self.node[0]} "
                    "is gone"))
            return
        if entry.kind in ("monitor", "demonitor", "down"):
            try:
                message = self.decode(entry.tag, entry.body)
            except DecodeError as exc:
                log.error("a bad monitor request from node %s: %s", entry.sender, exc)
                return
            if isinstance(message, Watch):
                self._monitors.watch_local(entry.to, message)
            elif isinstance(message, Unwatch):
                self._monitors.unwatch_local(message)
            elif isinstance(message, Downed):
                self._monitors.downed(message)
            return
        if entry.kind not in ("tell", "ask"):
            return
        lane = self._lanes.get(entry.to)
        if lane is None:
            lane = self._lanes[entry.to] = _Lane()
            self._nursery.start_soon(self._serve, entry.to, lane)
        while len(lane.entries) >= self._lane_limit:
            lane.room = trio.Event()
            await lane.room.wait()
        lane.entries.append(entry)
        lane.more.set()

    async def _serve(self, to: str, lane: _Lane) -> None:
        ref = (ActorRef(self._outbox, path=to[1:]) if to.startswith("@")
               else ActorRef(self._outbox, address=to))
        while True:
            while lane.entries:
                entry = lane.entries.popleft()
                lane.room.set()
                await self._deliver(ref, entry)
            # A target that was sent one message is likely sent the next soon: the task
            # waits a while for it rather than ending and being started again.
            lane.more = trio.Event()
            with trio.move_on_after(_LANE_IDLE):
                await lane.more.wait()
            if not lane.entries:
                del self._lanes[to]  # no await since the look: nothing is left behind
                return

    async def _deliver(self, ref: ActorRef, entry: Entry) -> None:
        try:
            message = self.decode(entry.tag, entry.body)
        except DecodeError as exc:
            log.error("cannot read a message from node %s: %s", entry.sender, exc)
            if entry.kind == "ask":
                await self._sending.answer(entry.sender, entry.sender_incarnation, entry.corr,
                                           None, Failure.from_exception("protocol", exc))
            return
        if entry.kind == "tell":
            try:
                await ref.tell(message)
            except ActorError as exc:
                log.debug("dropping a message from node %s: %s", entry.sender, exc)
            return
        failure = None
        reply = None
        try:
            reply = await ref.ask(message)
        except RemoteError as exc:
            failure = Failure(kind="remote", type_name=exc.type_name, message=exc.message,
                              traceback=exc.traceback, actor=exc.actor)
        except ActorNotFound as exc:
            failure = Failure(kind="not_found", type_name="ActorNotFound", message=str(exc))
        except ActorGone as exc:
            failure = Failure(kind="gone", type_name="ActorGone", message=str(exc),
                              in_doubt=exc.in_doubt)
        except ActorError as exc:
            failure = Failure.from_exception("remote", exc)
        await self._sending.answer(entry.sender, entry.sender_incarnation, entry.corr,
                                   reply, failure)

    async def _fail(self, entry: Entry, error: ActorGone, *, in_doubt: bool = False) -> None:
        await self._sending.answer(
            entry.sender, entry.sender_incarnation, entry.corr, None,
            Failure(kind="gone", type_name="ActorGone", message=str(error), in_doubt=in_doubt))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
