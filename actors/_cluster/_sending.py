"""``Sending``: what a node sends to the others, and the asks it waits on.

Each destination node has one queue and one writer task, so what one node sends another
leaves in the order it was sent (FIFO per sender and receiver), in batches: one Lua script
appends a batch to the receiver's inbox stream while the stream holds fewer entries than
the bound the receiver set (its ``inbox_bound``), and only while the receiver's membership
key holds the incarnation the sender addressed. A receiver that falls behind fills its
stream; the writer then waits and tries again, its queue fills (``queue_limit``), and
``tell`` waits: backpressure, never loss.

An ask waits as a :class:`Pending` until its answer comes back on this node's answers
stream (``take_answers``), its node leaves (``NodeDown``) or the broker is lost
(``BrokerUnavailable``).
"""

from __future__ import annotations

import itertools
import logging
from collections import deque
from typing import Any

import trio

from protocol import DecodeError, Message

from .._base._control import Failure
from .._base._errors import ActorError, ActorGone, BrokerUnavailable, NodeDown
from .._messaging._asks import Pending, to_exception
from ._broker import Broker, Cleanup
from ._wire import Entry, Keys, Kind, encode_body, pack, unpack

__all__ = ["Sending"]

log = logging.getLogger("actors.cluster")

# KEYS: the inbox stream, the receiver's membership key, its bound; ARGV: the bound if it
# set none, incarnation, entries. How many entries were appended (from the first), or -1
# if the receiver is not that incarnation any more.
_APPEND = """
if redis.call('GET', KEYS[2]) ~= ARGV[2] then return -1 end
local bound = tonumber(redis.call('GET', KEYS[3]) or ARGV[1])
local room = bound - redis.call('XLEN', KEYS[1])
local n = 0
for i = 3, #ARGV do
  if n >= room then break end
  redis.call('XADD', KEYS[1], '*', 'e', ARGV[i])
  n = n + 1
end
return n
"""

_BATCH = 256
_FULL_WAIT = (0.001, 0.05)  # first and longest wait for room in a full stream


class _Queue:
    """What waits to be written to one node's inbox, and the task writing it."""

    def __init__(self, node: str, incarnation: int, keys: Keys) -> None:
        self.node = node
        self.incarnation = incarnation
        self.keys = [keys.inbox(node), keys.node(node), keys.bound(node)]
        self.writing = False  # a batch is on its way
        self.entries: deque[tuple[bytes, int]] = deque()  # packed, corr of an ask (or 0)
        self.work = trio.Event()
        self.room = trio.Event()
        self.closed: ActorError | None = None


def _closed(queue: _Queue) -> bool:
    return queue.closed is not None  # (a function: the writer awaited since its last look)


class Sending:
    """The sending side of node ``name`` (``incarnation``)."""

    def __init__(self, broker: Broker, keys: Keys, name: str, incarnation: int,
                 nursery: trio.Nursery, *, bound: int, queue_limit: int = 1024) -> None:
        self.broker = broker
        self.keys = keys
        self.node = (name, incarnation)
        self.bound = bound
        self.queue_limit = queue_limit
        self.pending: dict[int, tuple[Pending, str]] = {}  # corr -> (ask, node asked)
        self._corr = itertools.count(1)
        self._queues: dict[str, _Queue] = {}
        self._nursery = nursery
        self._append: Any = broker.client.register_script(_APPEND)

    async def send(self, kind: Kind, node: str, incarnation: int, to: str,
                   message: Message) -> tuple[int, Pending | None]:
        """Queue ``message`` for ``to`` on ``node``: an ask's correlation id and Pending
        (0 and None for a tell). Waits while that node's queue is full."""
        queue = self._queues.get(node)
        if queue is None or queue.incarnation != incarnation or queue.closed is not None:
            queue = self._open(node, incarnation)
        while len(queue.entries) >= self.queue_limit and queue.closed is None:
            if queue.room.is_set():
                queue.room = trio.Event()
            await queue.room.wait()
        if queue.closed is not None:
            raise queue.closed
        body = encode_body(message, self.node)
        corr = next(self._corr) if kind == "ask" else 0
        entry = Entry(kind, to, incarnation, self.node[0], self.node[1], corr,
                      message.message_tag, body)
        pending = None
        if corr:
            pending = Pending(None)
            self.pending[corr] = (pending, node)
        queue.entries.append((pack(entry), corr))
        if corr and len(queue.entries) == 1 and not queue.writing:
            # An asker waits anyway: it writes its own ask, saving the writer's wake-up.
            # (A tell never does: a burst of tells leaves in batches, from the writer.)
            # Shielded (the broker's timeout bounds it): a write cancelled after Redis
            # took it would leave the entries queued, and the writer would send them again.
            with trio.CancelScope(shield=True):
                await self._write_some(queue)
        else:
            queue.work.set()
        return corr, pending

    def forget(self, corr: int) -> None:
        self.pending.pop(corr, None)

    def _open(self, node: str, incarnation: int) -> _Queue:
        old = self._queues.get(node)
        if old is not None and old.closed is None:
            self._close(old, NodeDown(f"node {node} (incarnation {old.incarnation}) left "
                                      "the cluster"))
        queue = self._queues[node] = _Queue(node, incarnation, self.keys)
        self._nursery.start_soon(self._write, queue)
        return queue

    def node_left(self, node: str, incarnation: int) -> None:
        """Fail what was sent to ``node``'s ``incarnation`` and waits for an answer."""
        error = NodeDown(f"node {node} (incarnation {incarnation}) left the cluster")
        queue = self._queues.get(node)
        if queue is not None and queue.incarnation == incarnation:
            self._close(queue, error)
            del self._queues[node]
        for corr, (pending, asked) in list(self.pending.items()):
            if asked == node:
                self._fail(corr, pending, error)

    def broker_lost(self) -> None:
        """Fail everything in flight: no answer can come while Redis is away."""
        for node, queue in list(self._queues.items()):
            self._close(queue, BrokerUnavailable(
                f"the cluster's Redis {self.broker.name} is unreachable"))
            del self._queues[node]
        for corr, (pending, _) in list(self.pending.items()):
            self._fail(corr, pending, BrokerUnavailable(
                f"the cluster's Redis {self.broker.name} became unreachable with the "
                "ask in flight"))

    def _fail(self, corr: int, pending: Pending, error: ActorError) -> None:
        self.pending.pop(corr, None)
        pending.fail(error)

    def _close(self, queue: _Queue, error: ActorError) -> None:
        queue.closed = error
        for _, corr in queue.entries:
            found = self.pending.get(corr)
            if found is not None:
                unsent = type(error)(str(error))
                if isinstance(unsent, ActorGone):
                    unsent.in_doubt = False  # never written: certainly not handled
                self._fail(corr, found[0], unsent)
        queue.entries.clear()
        queue.work.set()
        queue.room.set()

    async def _write(self, queue: _Queue) -> None:
        wait = _FULL_WAIT[0]
        while queue.closed is None:
            if not queue.entries or queue.writing:
                queue.work = trio.Event()
                await queue.work.wait()
                continue
            if await self._write_some(queue):
                wait = _FULL_WAIT[0]
            else:
                await trio.sleep(wait)  # the receiver's stream is full: it is behind
                wait = min(wait * 2, _FULL_WAIT[1])

    async def _write_some(self, queue: _Queue) -> bool:
        """Append a batch from the head of ``queue``: False if the stream had no room
        for all of it. One write at a time per queue, so that the order holds."""
        batch = [queue.entries[i][0] for i in range(min(_BATCH, len(queue.entries)))]
        queue.writing = True
        try:
            written = await self.broker.call("a send", self._append(
                keys=queue.keys, args=[self.bound, queue.incarnation, *batch]))
        except BrokerUnavailable:
            # The node's broker watch fails what is in flight; until it does, the writer
            # waits before it tries again (a broker that fails at once, without a
            # checkpoint, would otherwise spin here and starve that watch).
            return False
        finally:
            queue.writing = False
            queue.work.set()
        if _closed(queue):
            return True
        written = int(written)
        if written < 0:
            self.node_left(queue.node, queue.incarnation)
            return True
        for _ in range(written):
            queue.entries.popleft()
        queue.room.set()
        return written == len(batch)

    async def answer(self, node: str, incarnation: int, corr: int,
                     value: Message | None, failure: Failure | None) -> None:
        """Send the answer to ask ``corr`` of ``node`` (dropped if Redis is away: the
        asker hears of it from its own broker)."""
        if failure is not None:
            entry = Entry("error", "", incarnation, self.node[0], self.node[1], corr,
                          failure.message_tag, encode_body(failure, self.node))
        elif value is None:
            entry = Entry("reply", "", incarnation, self.node[0], self.node[1], corr, "", b"")
        else:
            entry = Entry("reply", "", incarnation, self.node[0], self.node[1], corr,
                          value.message_tag, encode_body(value, self.node))
        try:
            await self.broker.call("an answer", self.broker.client.xadd(
                self.keys.answers(node), {"e": pack(entry)}))
        except BrokerUnavailable:
            log.debug("an answer to %s was lost: Redis is away", node)

    async def take_answers(self, decode: Any, *,
                           task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                           ) -> None:
        """Read this node's answers stream for as long as the node runs."""
        stream = self.keys.answers(self.node[0])
        client = self.broker.client
        await self.broker.call("a start", client.delete([stream]))
        done = Cleanup(self.broker, "a trim", lambda ids: client.xdel(stream, ids))
        self._nursery.start_soon(done.run)
        task_status.started()
        last = "0-0"
        while True:
            if not self.broker.up:
                await self.broker.back.wait()
            try:
                found = await self.broker.call(
                    "a read", client.xread({stream: last}, count=512, block=1000), wait=1.0)
            except BrokerUnavailable:
                continue
            if not found:
                continue
            entries = found.get(stream.encode(), ())
            for entry in entries:
                last = entry.identifier
                self._take(entry.field_values.get(b"e", b""), decode)
            done.add([entry.identifier for entry in entries])
            # The askers first: each goes on (its next ask sent, say) before the next read,
            # whose command costs this process more than an asker's wake-up.
            await trio.lowlevel.cancel_shielded_checkpoint()

    def _take(self, data: bytes, decode: Any) -> None:
        try:
            entry = unpack(data)
        except ValueError as exc:
            log.error("a garbled answer on the cluster: %s", exc)
            return
        if entry.to_incarnation != self.node[1]:
            return  # for an earlier incarnation of this node
        found = self.pending.pop(entry.corr, None)
        if found is None:
            return  # the asker gave up
        pending = found[0]
        if entry.kind == "reply" and not entry.tag:
            pending.resolve(None)
            return
        try:
            message = decode(entry.tag, entry.body)
        except (DecodeError, ValueError) as exc:
            pending.fail(exc)
            return
        if entry.kind == "error":
            if isinstance(message, Failure):
                pending.fail(to_exception(message))
            else:
                pending.fail(ActorError(f"an error answer carries {entry.tag!r}"))
        else:
            pending.resolve(message)
