"""``Router``: how messages move within one process and between processes.

Every process of a system (the master and each worker) has one router. Processes form a
tree: the master is node ``"0"``; a worker it starts is ``"0.1"``, a worker that one starts is
``"0.1.1"``. A :class:`Link` is the channel to a parent or child process. A frame's route is
``"<destination>|<source node>"``, the destination an address (``node/id``), a path resolved by
the master (``0/@path``), or for replies a node id; every router forwards what is not its own
one hop along the tree, and delivers what is its own to a local :class:`Mailbox`.

The router never stops reading a link to wait for a full mailbox or a slow link onward: a
message that cannot be passed on at once waits in a *lane* (one per incoming link and
destination, so order is kept and one slow actor holds up nothing else), and the sender's
credit for tells comes back only as its lane moves (see ``_link``). Replies and control
messages are never held behind data.

Every ask gets an answer: each hop that forwards an ask remembers it until the reply passes
back, and answers it with :class:`ActorGone` itself if the link it went out on goes down.

Control messages go to their handlers through one table (see ``_control_table``), filled
when the router is made: names to the name registry, events to the publisher, credit and
heartbeats to the link, the shutdown to the router itself.
"""

from __future__ import annotations

import contextvars
import itertools
import logging
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Protocol

import trio

from protocol import (
    DEFAULT_MAX_FRAME_SIZE,
    HEADER_SIZE,
    DecodeError,
    Frame,
    FrameKind,
    FrameTooLarge,
    HandleError,
    Message,
    ProtocolError,
    decode_message,
    encode_message,
)

from .._base._control import (
    Credit,
    EventReport,
    Failure,
    FailureKind,
    Heartbeat,
    NameRegistered,
    NameUnregistered,
    SystemStopping,
)
from .._base._errors import ActorGone, ActorNotFound, CallingSelf
from .._base._events import ActorExited, Event, EventSink, ExitReason
from .._base._ref import SENDER_CONTEXT_KEY, ActorRef
from ._asks import Answered, Pending, PendingAsks, Reply, to_exception
from ._control_table import ControlTable
from ._link import Link
from ._names import NameRegistry
from ._publisher import Publisher

__all__ = ["MASTER_NODE", "Mailbox", "Router", "current_actor"]

log = logging.getLogger("actors")

MASTER_NODE = "0"
_TELL_BUDGET = 64
_HOPS_KEPT = 4096
_DEPARTED_KEPT = 4096

current_actor: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "actors.current_actor", default=None
)
"""The address of the actor whose handler is running in this task (None elsewhere)."""

# A frame that cannot be decoded is a failure of that one message: the stream is in step.
_MESSAGE_ERRORS = (DecodeError, HandleError)


class Mailbox(Protocol):
    """An actor of this process, as the router delivers to it (a cell)."""

    path: str
    address: str
    accepting: bool

    async def deliver(self, message: Message, reply: Reply | None) -> None:
        """Queue a message, waiting while the mailbox is full; ActorGone if it stopped."""
        ...

    def deliver_nowait(self, message: Message, reply: Reply | None) -> None:
        """Queue a message now; trio.WouldBlock if the mailbox is full, ActorGone if it
        stopped."""
        ...

    def inline_handler(self, message: Message) -> Callable[[Message], Message | None] | None:
        """The runtime's synchronous handler for ``message``, if the actor has one."""
        ...

    def fail(self, exc: BaseException) -> None:
        """Crash the actor (an inline handler raised)."""
        ...


class _Lane:
    """Messages from one link to one destination that could not be passed on at once."""

    __slots__ = ("items", "link")

    def __init__(self, link: Link) -> None:
        self.link = link
        self.items: deque[tuple[Frame, str, Message | None]] = deque()


class Router:
    """The router of one process: its links, its local mailboxes, its pending asks.

    Created by ``open_system`` (the master) or a worker's bootstrap; ``nursery`` runs the
    router's own tasks (lanes, frames held for a restarting path).
    """

    def __init__(
        self,
        node_id: str,
        nursery: trio.Nursery,
        *,
        names: NameRegistry,
        events: EventSink | None = None,
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
    ) -> None:
        self.id = node_id
        self.nursery = nursery
        self.names = names
        self.publisher = Publisher(events)
        self.max_frame_size = max_frame_size
        self.asks = PendingAsks()
        self.parent: Link | None = None
        self.children: dict[str, Link] = {}
        self.mailboxes: dict[int, Mailbox] = {}
        self.stopping = False  # the system is shutting down
        self._actor_ids = itertools.count(1)
        self._child_ids = itertools.count(1)
        self._context = {SENDER_CONTEXT_KEY: self}
        self._tell_budget = _TELL_BUDGET
        self._held: dict[str, list[tuple[Link, Frame, str]]] = {}
        self._lanes: dict[tuple[Link, str], _Lane] = {}
        self._hops: dict[str, Link | None] = {}  # link_towards, remembered until links change
        # Actors known to be gone, by address: who they were and why they went (bounded).
        self._departed: OrderedDict[str, str] = OrderedDict()
        # Names and events are reported up through this router's links.
        names.links = self
        self.publisher.links = self
        # The control messages the router's parts handle, each once; any other goes to the
        # link's owner (a worker handle in the parent, the bootstrap in a worker).
        controls = self.controls = ControlTable()
        controls.register(Heartbeat, Link.on_heartbeat, from_parent=True, from_children=True)
        controls.register(Credit, Link.on_credit, from_parent=True, from_children=True)
        controls.register(SystemStopping, self.on_system_stopping, from_parent=True)
        controls.register(NameRegistered, names.on_registered, from_children=True)
        controls.register(NameUnregistered, names.on_unregistered, from_children=True)
        controls.register(EventReport, self.publisher.on_report, from_children=True)

    @property
    def is_master(self) -> bool:
        return self.parent is None

    # -- identities and links ---------------------------------------------------------------

    def next_actor_id(self) -> int:
        return next(self._actor_ids)

    def next_child_node(self) -> str:
        return f"{self.id}.{next(self._child_ids)}"

    def attach_parent(self, link: Link) -> None:
        """``link`` leads to the parent process: unknown paths and events go up it."""
        self.parent = link
        self._hops.clear()

    def add_child(self, link: Link) -> None:
        self.children[link.peer] = link
        self._hops.clear()
        if self.stopping:
            link.notify(SystemStopping())

    def publish(self, event: Event) -> None:
        """Report a lifecycle event: to ``events()`` in the master, up the tree elsewhere."""
        self.publisher.publish(event)

    def system_stopping(self) -> None:
        """The system is shutting down: say so here and in every process below."""
        if self.stopping:
            return
        self.stopping = True
        for link in list(self.children.values()):
            link.notify(SystemStopping())

    def on_system_stopping(self, link: Link, message: SystemStopping) -> None:
        """The parent says the system is shutting down (its control table handler)."""
        self.system_stopping()

    def departed(self, address: str, path: str, reason: ExitReason) -> None:
        """Remember that the actor at ``address`` is gone, so that sends to it say so."""
        self._departed[address] = f"actor {path} ({address}) is gone: {reason.why()}"
        self._departed.move_to_end(address)
        while len(self._departed) > _DEPARTED_KEPT:
            self._departed.popitem(last=False)

    def _gone(self, address: str, fallback: str) -> ActorGone:
        return ActorGone(self._departed.get(address, fallback))

    def link_towards(self, node_id: str) -> Link | None:
        """The next hop towards ``node_id`` (None for this node or when there is none)."""
        try:
            return self._hops[node_id]
        except KeyError:
            pass
        if node_id == self.id:
            hop = None
        else:
            prefix = self.id + "."
            if node_id.startswith(prefix):
                child = node_id[: len(prefix)] + node_id[len(prefix) :].split(".", 1)[0]
                hop = self.children.get(child)
            else:
                hop = self.parent
        if len(self._hops) >= _HOPS_KEPT:
            self._hops.clear()
        self._hops[node_id] = hop
        return hop

    def decode(self, frame: Frame) -> Message:
        """Decode a frame's message in this process (refs in it send through this router)."""
        return decode_message(frame, self._context)

    # -- sending (the Sender behind every ActorRef of this process) -------------------------

    async def tell(self, ref: ActorRef, message: Message) -> None:
        # A tell is a cancellation point every time, but lets other tasks run only every
        # _TELL_BUDGET calls (or when it has to wait): a burst of tells to a worker then
        # leaves in a few large writes instead of one write and one scheduling round each.
        await trio.lowlevel.checkpoint_if_cancelled()
        _check_message(message)
        try:
            await self._tell(ref, message)
        except _Undelivered as exc:
            if not self._follows(ref):
                raise exc.error from None
            try:
                await self._tell(ref, message)  # the holder went: wait for its successor
            except _Undelivered as again:
                raise again.error from None

    async def ask(self, ref: ActorRef, message: Message) -> Message | None:
        await trio.lowlevel.checkpoint_if_cancelled()
        _check_message(message)
        try:
            return await self._ask(ref, message)
        except _Undelivered as exc:
            if not self._follows(ref):
                raise exc.error from None
            try:
                return await self._ask(ref, message)  # the holder went: wait for its successor
            except _Undelivered as again:
                raise again.error from None

    def _follows(self, ref: ActorRef) -> bool:
        """A ref by path to a supervised actor retries a send its old holder never got."""
        return ref.path is not None and self.names.supervised(ref.path)

    async def _resolve(self, ref: ActorRef) -> str:
        """The address to send to: an address, or a path this node can resolve or route."""
        if ref.address is not None:
            return ref.address
        path = ref.path
        assert path is not None
        address = self.names.get(path)
        if address is None and self.names.supervised(path):
            address = await self.names.wait_for(path)
            if address is None and not self.names.supervised(path):
                raise ActorNotFound(f"{path!r} was not restarted: its supervisor let it go")
            if address is None:
                raise ActorGone(f"{path!r} is restarting and was not back within "
                                f"{self.names.restart_wait} s")
        if address is not None:
            return address
        if self.is_master:
            raise ActorNotFound(f"no actor is registered under the path {path!r}")
        return f"{MASTER_NODE}/@{path}"

    def _local(self, actor: str) -> Mailbox:
        try:
            mailbox = self.mailboxes.get(int(actor))
        except ValueError:
            mailbox = None
        if mailbox is None:
            address = f"{self.id}/{actor}"
            raise self._gone(address, f"actor {address} is not running")
        if not mailbox.accepting:
            raise self._gone(mailbox.address,
                             f"actor {mailbox.path} ({mailbox.address}) is stopping")
        return mailbox

    def _route_out(self, address: str) -> Link:
        node_id = address.partition("/")[0]
        if address in self._departed:
            raise _Undelivered(self._gone(address, ""))
        link = self.link_towards(node_id)
        if link is None or not link.open_for_sending:
            raise _Undelivered(self._gone(
                address, f"actor {address} is gone: its process went away"
            ))
        return link

    async def _tell(self, ref: ActorRef, message: Message) -> None:
        address = await self._resolve(ref)
        node_id, _, actor = address.partition("/")
        if node_id == self.id:
            try:
                await self._local(actor).deliver(message, None)
            except ActorGone as exc:
                raise _Undelivered(exc) from None
        else:
            link = self._route_out(address)
            waited = False
            if link.send_credit <= 0:
                await link.wait_credit()  # the receiver has not passed our tells on yet
                link = self._route_out(address)
                waited = True
            data, fds = encode_message(
                FrameKind.TELL, message, route=f"{address}|{self.id}",
                max_frame_size=self.max_frame_size,
            )
            link.send_credit -= len(data)
            if await self._send(link, address, data, fds, defer=True) or waited:
                self._tell_budget = _TELL_BUDGET  # waiting was a scheduling point
                return
        self._tell_budget -= 1
        if self._tell_budget <= 0:
            self._tell_budget = _TELL_BUDGET
            await trio.lowlevel.cancel_shielded_checkpoint()

    async def _ask(self, ref: ActorRef, message: Message) -> Message | None:
        address = await self._resolve(ref)
        if address == current_actor.get():
            raise CallingSelf(
                f"actor {ref.path or address} asked itself from its own handler: it would "
                "wait for itself forever (use a tell, or do the work in place)"
            )
        node_id, _, actor = address.partition("/")
        if node_id == self.id:
            pending = Pending(None)
            try:
                await self._local(actor).deliver(message, Reply(self, pending=pending))
            except ActorGone as exc:
                raise _Undelivered(exc) from None
            await pending.event.wait()
            return self._answer(pending)
        link = self._route_out(address)
        corr, pending = self.asks.open(link)
        try:
            data, fds = encode_message(
                FrameKind.ASK, message, corr=corr, route=f"{address}|{self.id}",
                max_frame_size=self.max_frame_size,
            )
            # Written at once (no deferral): the asker waits for the answer anyway.
            await self._send(link, address, data, fds, defer=False)
            await pending.event.wait()
        finally:
            self.asks.close(corr)
        return self._answer(pending)

    @staticmethod
    def _answer(pending: Pending) -> Message | None:
        error = pending.error
        if isinstance(error, ActorGone) and not error.in_doubt:
            raise _Undelivered(error)  # certainly not handled: a ref by path may retry
        return pending.result()

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
            gone = ActorGone(f"no route to actor {address}: {exc}")
            gone.in_doubt = True
            raise gone from exc
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
        if link is None or not link.open_for_sending:
            answered(None, ActorGone(f"no route to actor {address}: its process is gone"))
            return
        corr, pending = self.asks.open(link)

        def done(value: Message | None, error: BaseException | None) -> None:
            self.asks.close(corr)
            answered(value, error)

        pending.answered = done
        try:
            data, fds = encode_message(
                FrameKind.ASK, message, corr=corr, route=f"{address}|{self.id}",
                max_frame_size=self.max_frame_size,
            )
            link.channel.send_nowait(data, fds, defer=True)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            pending.fail(ActorGone(f"no route to actor {address}: {exc}"))

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
        self._send_answer(target, data, fds)

    def send_failure(self, target: str, corr: int, failure: Failure) -> None:
        try:
            data, fds = encode_message(
                FrameKind.ERROR, failure, corr=corr, route=f"{target}|{self.id}",
                max_frame_size=self.max_frame_size,
            )
        except FrameTooLarge:  # a traceback too long to carry: the gist still goes
            data, fds = encode_message(
                FrameKind.ERROR,
                failure.model_copy(update={"traceback": "", "message": failure.message[:4096]}),
                corr=corr, route=f"{target}|{self.id}",
            )
        self._send_answer(target, data, fds)

    def _send_answer(self, target: str, data: bytes, fds: list[int]) -> None:
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
        """Route every frame arriving on ``link`` until it ends; then take the link down.

        It never waits for anything but the channel: what cannot be passed on at once goes
        into a lane.
        """
        reason = "closed"
        error: BaseException | None = None
        try:
            while True:
                frames = await link.channel.receive_some()
                link.last_heard = trio.current_time()
                for frame in frames:
                    self._on_frame(link, frame)
        except trio.EndOfChannel:
            reason = "closed"
        except ProtocolError as exc:
            reason, error = f"protocol error: {type(exc).__name__}: {exc}", exc
            log.error("closing the channel to node %s: %s", link.peer, reason)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            reason, error = f"channel failed: {exc}", exc
        finally:
            self.link_down(link, reason, error)

    def close_link(self, link: Link) -> None:
        """The peer said it is stopping: send it nothing new, forget the names it held.

        Its answers to what it was already sent still come (its owner ends our side of the
        channel once it is flushed, and the peer reads until then)."""
        if link.closing or link.down:
            return
        link.closing = True
        link.stop_sending()
        if not link.is_parent:
            self.names.drop(link)

    def link_down(self, link: Link, reason: str, error: BaseException | None = None) -> None:
        """Forget ``link``: fail what waits on it, drop its names, and close it."""
        if link.down:
            return
        orderly = link.closing
        link.down = True
        link.down_reason = reason
        link.error = error
        link.channel.close()
        link.control.close()
        link.stop_sending()
        text = f"the process of node {link.peer} is gone ({reason})"

        def gone() -> ActorGone:
            exc = ActorGone(text)
            exc.in_doubt = True  # it went out on the link: it may have been handled
            exc.__cause__ = error
            return exc

        self.asks.fail_link(link, gone)
        for (asker, corr), destination in link.relayed.items():
            self.send_failure(
                asker, corr, Failure(kind="gone", type_name="ActorGone",
                                     message=f"actor {destination}: {text}", in_doubt=True)
            )
        link.relayed.clear()
        if not link.is_parent:
            if self.children.get(link.peer) is link:
                del self.children[link.peer]
                self._hops.clear()
            lost = self.names.drop(link)
            if not orderly:
                self._report_lost(link, lost, reason)

    def _report_lost(self, link: Link, lost: list[tuple[str, str]], reason: str) -> None:
        """Actors that went down with a process, without a word of their own: their exit."""
        for path, address in lost:
            if path == link.subtree:
                continue  # the worker's own actor: its handle reports it
            lost_reason = ExitReason(
                kind="killed", detail=f"its process (node {link.peer}) went away: {reason}",
            )
            self.departed(address, path, lost_reason)
            self.publish(ActorExited(path=path, address=address, reason=lost_reason))

    def _on_frame(self, link: Link, frame: Frame) -> None:
        kind = frame.kind
        if kind is FrameKind.SYSTEM:
            self.controls.dispatch(link, self.decode(frame))
            return
        destination, sep, source = frame.route.partition("|")
        if not sep or not source:
            frame.close_fds()
            raise ProtocolError(f"frame without a source in its route {frame.route!r}")
        if not link.is_parent and not link.owns(source):
            frame.close_fds()
            raise ProtocolError(f"node {link.peer} sent a frame claiming to be from {source}")
        if kind is FrameKind.TELL or kind is FrameKind.ASK:
            self._on_request(link, frame, destination, source)
        else:
            self._on_answer(link, frame, destination, source)

    def _passed_on(self, link: Link, frame: Frame) -> None:
        if frame.kind is FrameKind.TELL:
            link.passed_on(frame.size)

    def _on_request(self, link: Link, frame: Frame, destination: str, source: str) -> None:
        node_id, _, actor = destination.partition("/")
        if node_id == self.id and actor.startswith("@"):
            path = actor[1:]
            address = self.names.get(path)
            if address is None and self.names.supervised(path):
                self._hold(path, link, frame, source)
                return
            if address is None:
                self._refuse(link, frame, source, "not_found",
                             f"no actor is registered under the path {path!r}")
                return
            frame.route = f"{address}|{source}"
            node_id, _, actor = address.partition("/")
        if node_id != self.id:
            self._forward(link, frame, node_id, source)
            return
        key = (link, actor)
        lane = self._lanes.get(key) if self._lanes else None
        if lane is not None:  # earlier messages from this link wait: keep the order
            lane.items.append((frame, source, None))
            return
        try:
            mailbox = self._local(actor)
        except ActorGone as exc:
            self._refuse(link, frame, source, "gone", str(exc))
            return
        message = self._decode_request(link, frame, source)
        if message is None:
            return
        reply = self._reply_for(frame, source)
        if self._took_inline(mailbox, message, reply):
            self._passed_on(link, frame)
            return
        try:
            mailbox.deliver_nowait(message, reply)
        except trio.WouldBlock:
            lane = self._lanes[key] = _Lane(link)
            lane.items.append((frame, source, message))
            self.nursery.start_soon(self._deliver_lane, key, lane)
            return
        except ActorGone as exc:
            if reply is not None:
                reply.fail(Failure.from_exception("gone", exc))
        self._passed_on(link, frame)

    def _decode_request(self, link: Link, frame: Frame, source: str) -> Message | None:
        """The message of a request frame, or None once its failure is handled."""
        try:
            return self.decode(frame)
        except _MESSAGE_ERRORS as exc:
            # An error for this one message (the stream is in step): the asker hears why.
            if frame.kind is FrameKind.ASK:
                self.send_failure(source, frame.corr, Failure.from_exception("protocol", exc))
            log.error("cannot take a message from node %s: %s", source, exc)
            self._passed_on(link, frame)
            return None

    async def _deliver_lane(self, key: tuple[Link, str], lane: _Lane) -> None:
        """Deliver one lane's messages in order, each as soon as its mailbox has room."""
        link, actor = key
        try:
            while lane.items:
                frame, source, message = lane.items[0]
                if message is None:
                    message = self._decode_request(link, frame, source)
                if message is not None:
                    reply = self._reply_for(frame, source)
                    try:
                        mailbox = self._local(actor)
                        if not self._took_inline(mailbox, message, reply):
                            await mailbox.deliver(message, reply)
                    except ActorGone as exc:
                        if reply is not None:
                            reply.fail(Failure.from_exception("gone", exc))
                        else:
                            log.debug("dropping a message from node %s: %s", source, exc)
                    self._passed_on(link, frame)
                lane.items.popleft()
        finally:
            del self._lanes[key]
            for frame, source, _ in lane.items:  # cancelled: the system is going away
                self._refuse(link, frame, source, "gone", "the system is shutting down")

    def _reply_for(self, frame: Frame, source: str) -> Reply | None:
        """Where the answer to a request frame goes (None for a tell)."""
        if frame.kind is FrameKind.ASK:
            return Reply(self, target=source, corr=frame.corr)
        return None

    def _took_inline(self, mailbox: Mailbox, message: Message, reply: Reply | None) -> bool:
        """Handle ``message`` with the actor's inline handler here and now, if it has one."""
        inline = mailbox.inline_handler(message)
        if inline is None:
            return False
        self._handle_inline(mailbox, inline, message, reply)
        return True

    def _handle_inline(
        self,
        mailbox: Mailbox,
        inline: Callable[[Message], Message | None],
        message: Message,
        reply: Reply | None,
    ) -> None:
        try:
            result = inline(message)
        except Exception as exc:
            if reply is not None:
                reply.fail(Failure.from_exception("remote", exc, actor=mailbox.path))
            mailbox.fail(exc)
            return
        if reply is not None:
            reply.send(result)

    def _hold(self, path: str, link: Link, frame: Frame, source: str) -> None:
        """Keep a frame for a path whose actor is restarting until it is back (or not)."""
        held = self._held.get(path)
        if held is None:
            held = self._held[path] = []
            self.nursery.start_soon(self._release_held, path)
        held.append((link, frame, source))

    async def _release_held(self, path: str) -> None:
        address = await self.names.wait_for(path)
        held = self._held.pop(path, [])
        if address is None and self.names.supervised(path):
            log.warning("%s was not back within %s s: failing what waited for it",
                        path, self.names.restart_wait)
            for link, frame, source in held:
                self._refuse(link, frame, source, "gone",
                             f"{path!r} is restarting and was not back within "
                             f"{self.names.restart_wait} s")
            return
        for link, frame, source in held:
            destination = frame.route.partition("|")[0]
            try:
                self._on_request(link, frame, destination, source)
            except ProtocolError as exc:
                log.error("dropping a held message from node %s: %s", source, exc)

    def _refuse(self, link: Link, frame: Frame, source: str, kind: FailureKind, text: str,
                exc: BaseException | None = None) -> None:
        """The request certainly reached no actor: say so to an asker, drop a tell."""
        frame.close_fds()
        self._passed_on(link, frame)
        if frame.kind is FrameKind.ASK:
            failure = (Failure.from_exception(kind, exc) if exc is not None
                       else Failure(kind=kind, type_name="ActorError", message=text))
            self.send_failure(source, frame.corr, failure)
        else:
            log.debug("dropping a message from node %s: %s", source, text)

    def _forward(self, came_from: Link, frame: Frame, node_id: str, source: str) -> None:
        out = self.link_towards(node_id)
        if out is None or out is came_from or not out.open_for_sending:
            self._refuse(came_from, frame, source, "gone", f"no process is running node {node_id}")
            return
        key = (came_from, "->" + out.peer)  # actor ids are digits: no clash with local lanes
        lane = self._lanes.get(key)
        if lane is None and (frame.kind is FrameKind.ASK or out.send_credit > 0):
            self._send_on(came_from, out, frame, source)
            return
        if lane is None:
            lane = self._lanes[key] = _Lane(came_from)
            self.nursery.start_soon(self._forward_lane, key, lane, out)
        lane.items.append((frame, source, None))

    async def _forward_lane(self, key: tuple[Link, str], lane: _Lane, out: Link) -> None:
        """Send one lane's frames on in order, tells as credit comes back from ``out``."""
        came_from = lane.link
        try:
            while lane.items:
                frame, source, _ = lane.items[0]
                if frame.kind is FrameKind.TELL and out.send_credit <= 0:
                    await out.wait_credit()
                if not out.open_for_sending:
                    break
                lane.items.popleft()
                self._send_on(came_from, out, frame, source)
        finally:
            del self._lanes[key]
            for frame, source, _ in lane.items:
                self._refuse(came_from, frame, source, "gone",
                             f"the process of node {out.peer} is gone")

    def _send_on(self, came_from: Link, out: Link, frame: Frame, source: str) -> None:
        """Forward one frame on ``out`` now (routing never makes a frame invalid)."""
        data = frame.encode()
        if len(data) - HEADER_SIZE > out.channel.max_frame_size:
            # Its route grew on the way (a path resolved to an address): refuse this one.
            too_large = FrameTooLarge(len(data) - HEADER_SIZE, out.channel.max_frame_size)
            self._refuse(came_from, frame, source, "protocol", str(too_large), too_large)
            return
        if frame.kind is FrameKind.ASK:
            out.relayed[(source, frame.corr)] = frame.route.partition("|")[0]
        else:
            out.send_credit -= len(data)
        try:
            out.channel.send_nowait(data, frame.fds, defer=frame.kind is FrameKind.TELL)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            if frame.kind is FrameKind.ASK:
                out.relayed.pop((source, frame.corr), None)
            self._refuse(came_from, frame, source, "gone",
                         f"the process of node {out.peer} is gone")
            return
        finally:
            frame.close_fds()
        self._passed_on(came_from, frame)

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
        pending = self.asks.get(frame.corr)
        if pending is None:  # the asker gave up (cancelled) before the answer came
            frame.close_fds()
            return
        try:
            message = self.decode(frame)
        except _MESSAGE_ERRORS as exc:
            pending.fail(exc)  # this answer cannot be read here: the asker hears why
            log.error("cannot read an answer from node %s: %s", source, exc)
            return
        if frame.kind is FrameKind.ERROR:
            if not isinstance(message, Failure):
                pending.fail(ProtocolError(f"error frame carries {frame.tag!r}"))
            else:
                pending.fail(to_exception(message))
        else:
            pending.resolve(None if isinstance(message, _NoneReply) else message)


def _check_message(message: object) -> None:
    if not isinstance(message, Message):
        raise TypeError(
            f"only Message instances can be sent, not {type(message).__qualname__} "
            f"({message!r:.60})"
        )


class _Undelivered(Exception):
    """A send that certainly did not reach its target (safe to retry on a successor)."""

    def __init__(self, error: ActorGone) -> None:
        super().__init__(str(error))
        self.error = error


class _NoneReply(Message, tag="actors.NoneReply"):
    """The reply of a handler that returned None."""


_NONE_REPLY = _NoneReply()
