"""The per-process runtime: local actors, links to other processes, routing, pending asks.

Every process of a system (the master and each worker) runs one :class:`Node`. Processes form
a tree: the master is node ``"0"``; a worker it starts is ``"0.1"``, a worker that one starts
is ``"0.1.1"``. A :class:`Link` is the channel to a parent or child process. A frame's route is
``"<destination>|<source node>"``, the destination an address (``node/id``), a path resolved by
the master (``0/@path``), or for replies a node id; every node forwards what is not its own
one hop along the tree.

Every ask gets an answer: each hop that forwards an ask remembers it until the reply passes
back, and answers it with :class:`ActorGone` itself if the link it went out on goes down.
"""

from __future__ import annotations

import itertools
import logging
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING

import trio

from protocol import (
    DEFAULT_MAX_FRAME_SIZE,
    Channel,
    Frame,
    FrameKind,
    InvalidMessage,
    Message,
    ProtocolError,
    UnknownMessageType,
    decode_message,
    encode_message,
)

from ._control import EventReport, Failure, FailureKind, NameRegistered, NameUnregistered
from ._errors import ActorError, ActorGone, ActorNotFound, RemoteError
from ._events import Event, EventBus
from ._ref import NODE_CONTEXT_KEY, ActorRef

if TYPE_CHECKING:
    from ._cell import Cell
    from ._listener import Listener
    from ._process import Spawner

__all__ = ["Link", "Node", "Reply"]

log = logging.getLogger("actors")

MASTER_NODE = "0"
_TELL_BUDGET = 64


Answered = Callable[[Message | None, BaseException | None], None]


class _Pending:
    """An ask waiting for its reply (a task waiting on ``event``, or a callback)."""

    __slots__ = ("answered", "error", "event", "link", "value")

    def __init__(self, link: Link | None, answered: Answered | None = None) -> None:
        self.event = trio.Event()
        self.link = link
        self.value: Message | None = None
        self.error: BaseException | None = None
        self.answered = answered

    def resolve(self, value: Message | None) -> None:
        if not self.event.is_set():
            self.value = value
            self.event.set()
            if self.answered is not None:
                self.answered(value, None)

    def fail(self, error: BaseException) -> None:
        if not self.event.is_set():
            self.error = error
            self.event.set()
            if self.answered is not None:
                self.answered(None, error)


class Reply:
    """Where the answer to one ask goes: a local waiter, or a frame back to another node."""

    __slots__ = ("_corr", "_node", "_pending", "_target")

    def __init__(
        self, node: Node, *, pending: _Pending | None = None, target: str = "", corr: int = 0
    ) -> None:
        self._node = node
        self._pending = pending
        self._target = target
        self._corr = corr

    def send(self, value: Message | None) -> None:
        if self._pending is not None:
            self._pending.resolve(value)
        else:
            self._node.send_reply(self._target, self._corr, value)

    def fail(self, failure: Failure) -> None:
        if self._pending is not None:
            self._pending.fail(failure_to_exception(failure))
        else:
            self._node.send_failure(self._target, self._corr, failure)


def failure_to_exception(failure: Failure) -> ActorError:
    if failure.kind == "remote":
        return RemoteError(failure.type_name, failure.message, failure.traceback, failure.actor)
    if failure.kind == "not_found":
        return ActorNotFound(failure.message)
    return ActorGone(failure.message)


class Link:
    """The channel to a neighbouring process in the tree."""

    def __init__(self, peer: str, channel: Channel, *, is_parent: bool) -> None:
        self.peer = peer
        self.channel = channel
        self.is_parent = is_parent
        self.down = False
        self.down_reason = ""
        self.error: BaseException | None = None  # what ended the link, if it failed
        self.last_heard = trio.current_time()
        self.delivering = False  # the pump waits for a full mailbox: silence is ours
        # Asks forwarded out through this link, keyed by (asker node, corr): the destination.
        self.relayed: dict[tuple[str, int], str] = {}
        self.on_control: Callable[[Message], None] | None = None

    def send_control(self, message: Message) -> None:
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


class Node:
    """The runtime of one process. Created by ``open_system`` or a worker's bootstrap."""

    def __init__(
        self,
        node_id: str,
        nursery: trio.Nursery,
        *,
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
    ) -> None:
        self.id = node_id
        self.nursery = nursery
        self.max_frame_size = max_frame_size
        self.parent: Link | None = None
        self.children: dict[str, Link] = {}
        self.cells: dict[int, Cell] = {}
        self.names: dict[str, str] = {}
        self._actor_ids = itertools.count(1)
        self._child_ids = itertools.count(1)
        self._corrs = itertools.count(1)
        self._pending: dict[int, _Pending] = {}
        self._context = {NODE_CONTEXT_KEY: self}
        self._tell_budget = _TELL_BUDGET
        self.events: EventBus | None = None
        self.spawner: Spawner | None = None  # how worker processes start (None: cold)
        self.listeners: dict[str, Listener] = {}
        self.listen_sockets: dict[str, socket.socket] = {}  # by listener path, system-owned
        self.restart_wait = 5.0
        # Paths a supervisor keeps alive; senders by path wait (bounded) while nobody holds one.
        self._supervised: set[str] = set()
        self._awaiting: dict[str, trio.Event] = {}
        self._held: dict[str, list[tuple[Link, Frame, str]]] = {}

    @property
    def is_master(self) -> bool:
        return self.parent is None

    # -- identities -------------------------------------------------------------------------

    def next_actor_id(self) -> int:
        return next(self._actor_ids)

    def next_child_node(self) -> str:
        return f"{self.id}.{next(self._child_ids)}"

    def register_name(self, path: str, address: str) -> None:
        if path in self.names and self.names[path] != address:
            raise ActorError(f"the name {path!r} is already taken by {self.names[path]}")
        self.names[path] = address
        if path in self._awaiting or path in self._held:
            self._wake(path)
        if self.parent is not None:
            self.parent.notify(NameRegistered(path=path, address=address))

    def unregister_name(self, path: str, address: str) -> None:
        if self.names.get(path) == address:
            del self.names[path]
            if self.parent is not None:
                self.parent.notify(NameUnregistered(path=path, address=address))

    def name_taken(self, path: str) -> bool:
        return path in self.names

    def hold_name(self, path: str) -> None:
        """A supervisor keeps ``path`` alive: while nobody holds it, senders by path wait
        (up to ``restart_wait``) for the next incarnation instead of failing at once."""
        self._supervised.add(path)

    def release_name(self, path: str) -> None:
        """``path`` will not come back: wake whoever waits for it (they fail)."""
        if path not in self.names:
            self._supervised.discard(path)
        self._wake(path)

    def _wake(self, path: str) -> None:
        event = self._awaiting.pop(path, None)
        if event is not None:
            event.set()
        held = self._held.pop(path, None)
        if held:
            self.nursery.start_soon(self._redeliver, held)

    def _awaited(self, path: str) -> trio.Event | None:
        """The event to wait on for ``path`` to be registered, if it is worth waiting for."""
        if path not in self._supervised:
            return None
        event = self._awaiting.get(path)
        if event is None:
            event = self._awaiting[path] = trio.Event()
        return event

    async def _redeliver(self, held: list[tuple[Link, Frame, str]]) -> None:
        for link, frame, source in held:
            destination = frame.route.partition("|")[0]
            try:
                await self._on_request(link, frame, destination, source)
            except ProtocolError as exc:
                log.error("dropping a held message from node %s: %s", source, exc)

    async def _hold_frame(self, path: str, link: Link, frame: Frame, source: str) -> None:
        held = self._held.get(path)
        if held is None:
            held = self._held[path] = []
            self.nursery.start_soon(self._expire_hold, path)
        held.append((link, frame, source))

    async def _expire_hold(self, path: str) -> None:
        event = self._awaited(path)
        if event is None:
            self._wake(path)
            return
        with trio.move_on_after(self.restart_wait):
            await event.wait()
        if not event.is_set():
            log.warning("%s was not back within %s s: failing what waited for it",
                        path, self.restart_wait)
            for _, frame, source in self._held.pop(path, []):
                self._refuse(frame, source, "gone",
                             f"{path!r} is restarting and was not back within "
                             f"{self.restart_wait} s")

    def publish(self, event: Event) -> None:
        """Report a lifecycle event: to ``events()`` in the master, up the tree elsewhere."""
        if self.events is not None:
            self.events.publish(event)
        elif self.parent is not None:
            self.parent.notify(EventReport(tag=event.message_tag, body=event.model_dump_json()))

    # -- sending ----------------------------------------------------------------------------

    async def _resolve(self, ref: ActorRef) -> str:
        """The address to send to: an address, or a path this node can resolve or route."""
        if ref.address is not None:
            return ref.address
        path = ref.path
        assert path is not None
        address = self.names.get(path)
        event = self._awaited(path) if address is None else None
        if event is not None:
            with trio.move_on_after(self.restart_wait):
                await event.wait()
            address = self.names.get(path)
            if address is None and path not in self._supervised:
                raise ActorNotFound(f"{path!r} was not restarted: its supervisor let it go")
            if address is None:
                raise ActorGone(f"{path!r} is restarting and was not back within "
                                f"{self.restart_wait} s")
        if address is not None:
            return address
        if self.is_master:
            raise ActorNotFound(f"no actor is registered under the path {path!r}")
        return f"{MASTER_NODE}/@{path}"

    def link_towards(self, node_id: str) -> Link | None:
        """The next hop towards ``node_id`` (None for this node or when there is none)."""
        if node_id == self.id:
            return None
        prefix = self.id + "."
        if node_id.startswith(prefix):
            child = node_id[: len(prefix)] + node_id[len(prefix) :].split(".", 1)[0]
            return self.children.get(child)
        return self.parent

    def _local_cell(self, actor: str) -> Cell:
        try:
            cell = self.cells.get(int(actor))
        except ValueError:
            cell = None
        if cell is None or not cell.accepting:
            raise ActorGone(f"actor {self.id}/{actor} is not running")
        return cell

    async def tell(self, ref: ActorRef, message: Message) -> None:
        # A tell is a cancellation point every time, but lets other tasks run only every
        # _TELL_BUDGET calls (or when it has to wait): a burst of tells to a worker then
        # leaves in a few large writes instead of one write and one scheduling round each.
        await trio.lowlevel.checkpoint_if_cancelled()
        try:
            await self._tell(ref, message)
        except _Undelivered as exc:
            if not self._follows(ref):
                raise exc.error from None
            await self._tell(ref, message)  # the holder died: wait for its successor

    async def ask(self, ref: ActorRef, message: Message) -> Message | None:
        await trio.lowlevel.checkpoint_if_cancelled()
        try:
            return await self._ask(ref, message)
        except _Undelivered as exc:
            if not self._follows(ref):
                raise exc.error from None
            return await self._ask(ref, message)  # the holder died: wait for its successor

    def _follows(self, ref: ActorRef) -> bool:
        """A ref by path to a supervised actor retries a send its dead holder never got."""
        return ref.path is not None and ref.path in self._supervised

    async def _tell(self, ref: ActorRef, message: Message) -> None:
        address = await self._resolve(ref)
        node_id, _, actor = address.partition("/")
        if node_id == self.id:
            try:
                await self._local_cell(actor).deliver(message, None)
            except ActorGone as exc:
                raise _Undelivered(exc) from None
        else:
            link = self.link_towards(node_id)
            if link is None or link.down:
                raise _Undelivered(ActorGone(f"no route to actor {address}: its process is gone"))
            data, fds = encode_message(
                FrameKind.TELL, message, route=f"{address}|{self.id}",
                max_frame_size=self.max_frame_size,
            )
            if await self._send(link, address, data, fds, defer=True):
                self._tell_budget = _TELL_BUDGET  # waiting for room was a scheduling point
                return
        self._tell_budget -= 1
        if self._tell_budget <= 0:
            self._tell_budget = _TELL_BUDGET
            await trio.lowlevel.cancel_shielded_checkpoint()

    async def _ask(self, ref: ActorRef, message: Message) -> Message | None:
        address = await self._resolve(ref)
        node_id, _, actor = address.partition("/")
        if node_id == self.id:
            pending = _Pending(None)
            try:
                await self._local_cell(actor).deliver(message, Reply(self, pending=pending))
            except ActorGone as exc:
                raise _Undelivered(exc) from None
            await pending.event.wait()
        else:
            link = self.link_towards(node_id)
            if link is None or link.down:
                raise _Undelivered(ActorGone(f"no route to actor {address}: its process is gone"))
            corr = next(self._corrs)
            data, fds = encode_message(
                FrameKind.ASK, message, corr=corr, route=f"{address}|{self.id}",
                max_frame_size=self.max_frame_size,
            )
            pending = _Pending(link)
            self._pending[corr] = pending
            try:
                # Written at once (no deferral): the asker waits for the answer anyway.
                await self._send(link, address, data, fds, defer=False)
                await pending.event.wait()
            finally:
                del self._pending[corr]
        if pending.error is not None:
            raise pending.error
        return pending.value

    async def _send(
        self, link: Link, address: str, data: bytes, fds: list[int], *, defer: bool
    ) -> bool:
        """Send a frame towards ``address``; True if it had to wait for room (backpressure).

        A failure before the frame left is :class:`_Undelivered` (safe to retry elsewhere).
        """
        try:
            queued = link.channel.send_nowait(data, fds, defer=defer)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise self._undelivered(link, address, exc) from exc
        if queued <= link.channel.high_water:
            return False
        try:
            await link.channel.wait_writable()
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise ActorGone(f"no route to actor {address}: {exc}") from exc
        return True

    def request(self, ref: ActorRef, message: Message, answered: Answered) -> None:
        """Ask without waiting: ``answered(reply, error)`` runs when the answer comes.

        For runtime internals that keep many requests in flight (a listener's hand-offs)
        without a task each. ``ref`` must be an address in another process.
        """
        address = ref.address
        assert address is not None
        node_id = address.partition("/")[0]
        link = self.link_towards(node_id)
        if link is None or link.down:
            answered(None, ActorGone(f"no route to actor {address}: its process is gone"))
            return
        corr = next(self._corrs)
        data, fds = encode_message(
            FrameKind.ASK, message, corr=corr, route=f"{address}|{self.id}",
            max_frame_size=self.max_frame_size,
        )

        def done(value: Message | None, error: BaseException | None) -> None:
            self._pending.pop(corr, None)
            answered(value, error)

        self._pending[corr] = _Pending(link, done)
        try:
            link.channel.send_nowait(data, fds, defer=True)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            self._pending[corr].fail(ActorGone(f"no route to actor {address}: {exc}"))

    def _undelivered(self, link: Link, address: str, exc: BaseException) -> _Undelivered:
        # The peer is gone before the pump noticed: say so now, so that its names go and a
        # ref by path can wait for the successor.
        self.link_down(link, f"channel failed: {exc}", exc)
        return _Undelivered(ActorGone(f"no route to actor {address}: {exc}"))

    def send_reply(self, target: str, corr: int, value: Message | None) -> None:
        if value is None:
            value = _NONE_REPLY
        try:
            data, fds = encode_message(
                FrameKind.REPLY, value, corr=corr, route=f"{target}|{self.id}",
                max_frame_size=self.max_frame_size,
            )
        except ProtocolError as exc:
            self.send_failure(target, corr, Failure.from_exception("protocol", exc))
            return
        self._send_nowait(target, data, fds)

    def send_failure(self, target: str, corr: int, failure: Failure) -> None:
        data, fds = encode_message(
            FrameKind.ERROR, failure, corr=corr, route=f"{target}|{self.id}",
            max_frame_size=self.max_frame_size,
        )
        self._send_nowait(target, data, fds)

    def _send_nowait(self, target: str, data: bytes, fds: list[int]) -> None:
        link = self.link_towards(target)
        if link is None or link.down:
            log.debug("dropping a reply to %s: no route", target)
            return
        try:
            link.channel.send_nowait(data, fds)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            log.debug("dropping a reply to %s: link down", target)

    # -- receiving --------------------------------------------------------------------------

    async def pump(self, link: Link) -> None:
        """Route every frame arriving on ``link`` until it ends; then take the link down."""
        reason = "closed"
        error: BaseException | None = None
        try:
            while True:
                frames = await link.channel.receive_some()
                link.last_heard = trio.current_time()
                link.delivering = True
                for frame in frames:
                    await self._on_frame(link, frame)
                link.delivering = False
                link.last_heard = trio.current_time()
        except trio.EndOfChannel:
            reason = "closed"
        except ProtocolError as exc:
            reason, error = f"protocol error: {type(exc).__name__}: {exc}", exc
            log.error("closing the channel to node %s: %s", link.peer, reason)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            reason, error = f"channel failed: {exc}", exc
        finally:
            self.link_down(link, reason, error)

    def link_down(self, link: Link, reason: str, error: BaseException | None = None) -> None:
        """Forget ``link``: fail what waits on it and close it."""
        if link.down:
            return
        link.down = True
        link.down_reason = reason
        link.error = error
        link.channel.close()
        text = f"the process of node {link.peer} is gone ({reason})"
        for pending in list(self._pending.values()):
            if pending.link is link:
                gone = ActorGone(text)
                gone.__cause__ = error
                pending.fail(gone)
        for (asker, corr), destination in link.relayed.items():
            self.send_failure(
                asker, corr, Failure(kind="gone", type_name="ActorGone",
                                     message=f"actor {destination}: {text}")
            )
        link.relayed.clear()
        if not link.is_parent:
            if self.children.get(link.peer) is link:
                del self.children[link.peer]
            for path, address in list(self.names.items()):
                if link.owns(address.partition("/")[0]):
                    self.unregister_name(path, address)  # and up the tree

    async def _on_frame(self, link: Link, frame: Frame) -> None:
        kind = frame.kind
        if kind is FrameKind.SYSTEM:
            message = decode_message(frame, self._context)
            if link.on_control is None:
                raise ProtocolError(f"unexpected control message {frame.tag!r}")
            link.on_control(message)
            return
        destination, sep, source = frame.route.partition("|")
        if not sep or not source:
            frame.close_fds()
            raise ProtocolError(f"frame without a source in its route {frame.route!r}")
        if not link.is_parent and not link.owns(source):
            frame.close_fds()
            raise ProtocolError(f"node {link.peer} sent a frame claiming to be from {source}")
        if kind is FrameKind.TELL or kind is FrameKind.ASK:
            await self._on_request(link, frame, destination, source)
        else:
            self._on_answer(link, frame, destination, source)

    async def _on_request(self, link: Link, frame: Frame, destination: str, source: str) -> None:
        node_id, _, actor = destination.partition("/")
        if node_id == self.id and actor.startswith("@"):
            path = actor[1:]
            address = self.names.get(path)
            if address is None and path in self._supervised:
                await self._hold_frame(path, link, frame, source)
                return
            if address is None:
                self._refuse(frame, source, "not_found",
                             f"no actor is registered under the path {path!r}")
                return
            frame.route = f"{address}|{source}"
            node_id, _, actor = address.partition("/")
        if node_id != self.id:
            await self._forward(link, frame, node_id, source)
            return
        try:
            cell = self._local_cell(actor)
        except ActorGone as exc:
            self._refuse(frame, source, "gone", str(exc))
            return
        try:
            message = decode_message(frame, self._context)
        except (UnknownMessageType, InvalidMessage) as exc:
            if frame.kind is FrameKind.ASK:
                self.send_failure(source, frame.corr, Failure.from_exception("protocol", exc))
            if source == link.peer:
                raise  # the peer that wrote it is the offender: its channel is closed
            log.error("dropping a message from node %s to %s: %s", source, destination, exc)
            return
        reply = Reply(self, target=source, corr=frame.corr) if frame.kind is FrameKind.ASK else None
        inline = cell.inline_handler(message)
        if inline is not None:
            self._handle_inline(cell, inline, message, reply)
            return
        try:
            await cell.deliver(message, reply)
        except ActorGone as exc:
            if reply is not None:
                reply.fail(Failure.from_exception("gone", exc))

    def _handle_inline(
        self,
        cell: Cell,
        inline: Callable[[Message], Message | None],
        message: Message,
        reply: Reply | None,
    ) -> None:
        try:
            result = inline(message)
        except Exception as exc:
            if reply is not None:
                reply.fail(Failure.from_exception("remote", exc, actor=cell.path))
            cell.fail(exc)
            return
        if reply is not None:
            reply.send(result)

    def _refuse(self, frame: Frame, source: str, kind: FailureKind, text: str) -> None:
        frame.close_fds()
        if frame.kind is FrameKind.ASK:
            self.send_failure(
                source, frame.corr, Failure(kind=kind, type_name="ActorError", message=text)
            )
        else:
            log.debug("dropping a message from node %s: %s", source, text)

    async def _forward(self, came_from: Link, frame: Frame, node_id: str, source: str) -> None:
        out = self.link_towards(node_id)
        if out is None or out is came_from or out.down:
            self._refuse(frame, source, "gone", f"no process is running node {node_id}")
            return
        if frame.kind is FrameKind.ASK:
            out.relayed[(source, frame.corr)] = frame.route.partition("|")[0]
        try:
            queued = out.channel.send_nowait(
                frame.encode(), frame.fds, defer=frame.kind is FrameKind.TELL
            )
            if queued > out.channel.high_water:
                await out.channel.wait_writable()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            if frame.kind is FrameKind.ASK:
                out.relayed.pop((source, frame.corr), None)
            self._refuse(frame, source, "gone", f"the process of node {node_id} is gone")
        finally:
            frame.close_fds()

    def _on_answer(self, link: Link, frame: Frame, destination: str, source: str) -> None:
        link.relayed.pop((destination, frame.corr), None)
        if destination != self.id:
            out = self.link_towards(destination)
            if out is None or out.down:
                frame.close_fds()
                return
            try:
                out.channel.send_nowait(frame.encode(), frame.fds)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass
            finally:
                frame.close_fds()
            return
        pending = self._pending.get(frame.corr)
        if pending is None:  # the asker gave up (cancelled) before the answer came
            frame.close_fds()
            return
        try:
            message = decode_message(frame, self._context)
        except (UnknownMessageType, InvalidMessage) as exc:
            pending.fail(exc)
            if source == link.peer:
                raise
            return
        if frame.kind is FrameKind.ERROR:
            if not isinstance(message, Failure):
                pending.fail(ProtocolError(f"error frame carries {frame.tag!r}"))
            else:
                pending.fail(failure_to_exception(message))
        else:
            pending.resolve(None if isinstance(message, _NoneReply) else message)


class _Undelivered(Exception):
    """A send that certainly did not reach its target (safe to retry on a successor)."""

    def __init__(self, error: ActorGone) -> None:
        super().__init__(str(error))
        self.error = error


class _NoneReply(Message, tag="actors.NoneReply"):
    """The reply of a handler that returned None."""


_NONE_REPLY = _NoneReply()

