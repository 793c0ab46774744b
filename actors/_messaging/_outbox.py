"""``Outbox``: the sending side of one process, the :class:`Sender` behind its ActorRefs.

Every tell, ask and request of a process starts here. A send to an actor of this process goes
straight into its mailbox; one to another process is encoded once and written on the link
towards it (the relay keeps the links), tells within the credit the receiver gives back
(see ``_link``). An ask that leaves the process waits as a :class:`Pending` in ``asks`` until
its answer comes back (``on_answer``) or its link goes down.

A send that certainly reached no actor (:class:`_Undelivered`) is retried once, on the next
owner of the path, when the ref is by path and a supervisor keeps that path alive: a
restart between the lookup and the delivery is not a failure for the sender.

A ref with a ``node`` names an actor of another master: its sends go to ``remote``, the
cluster's sender when the master is in one (``actors/_cluster``), and nothing else here
knows of nodes.

The answers this process owes to askers elsewhere (replies, failures, refusals of requests
that reached no actor) are encoded and sent from here too.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import NoReturn, Protocol

import trio

from protocol import (
    DEFAULT_MAX_FRAME_SIZE,
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

from .._base._control import Failure, FailureKind
from .._base._errors import ActorError, ActorGone, ActorNotFound, CallingSelf
from .._base._ref import SENDER_CONTEXT_KEY, ActorRef, Sender
from ._asks import Answered, Pending, PendingAsks, Reply, to_exception
from ._link import Link, Links
from ._mailboxes import Mailboxes, current_actor
from ._names import NameRegistry

__all__ = ["MASTER_NODE", "MESSAGE_ERRORS", "Outbox", "RemoteSender"]

log = logging.getLogger("actors")

MASTER_NODE = "0"
"""The master's node id; a worker's is its parent's and a number (``0.1``, ``0.1.2``)."""

MESSAGE_ERRORS = (DecodeError, HandleError)
"""A frame that cannot be decoded is a failure of that one message: the stream is in step."""

_TELL_BUDGET = 64


class RemoteSender(Sender, Protocol):
    """What sends to actors of other masters (refs with a node), and watches them."""

    async def monitor(self, target: ActorRef, watcher: ActorRef) -> str:
        """Have ``watcher`` told ``ActorDown`` when ``target`` ends; the monitor's id."""
        ...

    async def demonitor(self, id: str) -> None: ...


class Outbox:
    """Sends for the actors of node ``node_id``; answers and refusals back to askers.

    ``links`` (the relay) is set once by the process's :class:`Router`, before anything is
    sent: ``attach`` takes it.
    """

    def __init__(
        self,
        node_id: str,
        names: NameRegistry,
        mailboxes: Mailboxes,
        *,
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
    ) -> None:
        self.id = node_id
        self.names = names
        self.max_frame_size = max_frame_size
        self.asks = PendingAsks()
        # The pydantic context of decoding in this process: a ref in a message sends from here.
        self.context = {SENDER_CONTEXT_KEY: self}
        self._mailboxes = mailboxes
        self._local = mailboxes.local
        self._departures = mailboxes.departures
        self._tell_budget = _TELL_BUDGET
        self.links: Links
        self._link_towards: Callable[[str], Link | None]
        self.remote: RemoteSender = _NoCluster()  # refs with a node: the cluster's, if any

    def attach(self, links: Links) -> None:
        """Send through ``links`` (once, when the process's parts are put together)."""
        self.links = links
        self._link_towards = links.link_towards  # bound once: it runs for every send

    # -- the Sender of every ActorRef made in this process ----------------------------------

    async def tell(self, ref: ActorRef, message: Message) -> None:
        # A tell is a cancellation point every time, but lets other tasks run only every
        # _TELL_BUDGET calls (or when it has to wait): a burst of tells to a worker then
        # leaves in a few large writes instead of one write and one scheduling round each.
        await trio.lowlevel.checkpoint_if_cancelled()
        if not isinstance(message, Message):
            _not_a_message(message)
        if ref.node is not None:
            await self.remote.tell(ref, message)
            return
        try:
            await self._tell(ref, message)
        except _Undelivered as exc:
            if not self._follows(ref):
                raise exc.error from None
            try:
                await self._tell(ref, message)  # the owner went: wait for its successor
            except _Undelivered as again:
                raise again.error from None

    async def ask(self, ref: ActorRef, message: Message) -> Message | None:
        await trio.lowlevel.checkpoint_if_cancelled()
        if not isinstance(message, Message):
            _not_a_message(message)
        if ref.node is not None:
            return await self.remote.ask(ref, message)
        try:
            return await self._ask(ref, message)
        except _Undelivered as exc:
            if not self._follows(ref):
                raise exc.error from None
            try:
                return await self._ask(ref, message)  # the owner went: wait for its successor
            except _Undelivered as again:
                raise again.error from None

    def request(self, ref: ActorRef, message: Message, answered: Answered) -> None:
        """Ask without waiting: ``answered(reply, error)`` runs when the answer comes.

        For runtime internals that keep many requests in flight (a listener's hand-offs)
        without a task each. ``ref`` must be an address in another process.
        """
        address = ref.address
        assert address is not None
        node_id = address.partition("/")[0]
        link = self._link_towards(node_id)
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

    def _follows(self, ref: ActorRef) -> bool:
        """A ref by path to a supervised actor retries a send its old owner never got."""
        return ref.path is not None and self.names.supervised(ref.path)

    async def _resolve(self, path: str) -> str:
        """The address to send to for ``path``: its holder's if this node knows it (waiting
        for a restarting one), else the master's, which resolves it on the way."""
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
        if self.links.parent is None:
            raise ActorNotFound(f"no actor is registered under the path {path!r}")
        return f"{MASTER_NODE}/@{path}"

    def _route_out(self, address: str) -> Link:
        node_id = address.partition("/")[0]
        if address in self._departures:
            raise _Undelivered(self._mailboxes.gone(address, ""))
        link = self._link_towards(node_id)
        if link is None or not link.open_for_sending:
            raise _Undelivered(self._mailboxes.gone(
                address, f"actor {address} is gone: its process went away"
            ))
        return link

    async def _tell(self, ref: ActorRef, message: Message) -> None:
        # A ref by address (most sends) needs no resolving: no coroutine for it.
        address = ref.address
        if address is None:
            assert ref.path is not None
            address = await self._resolve(ref.path)
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
        address = ref.address
        if address is None:
            assert ref.path is not None
            address = await self._resolve(ref.path)
            if self.names.counts(ref.path):  # a least-busy pool: it counts asks in flight
                self.names.begin(address)
                try:
                    return await self._ask_at(address, ref, message)
                finally:
                    self.names.end(address)
        return await self._ask_at(address, ref, message)

    async def _ask_at(self, address: str, ref: ActorRef, message: Message) -> Message | None:
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
            await pending.wait()
            return _answer(pending)
        link = self._route_out(address)
        corr, pending = self.asks.open(link)
        try:
            data, fds = encode_message(
                FrameKind.ASK, message, corr=corr, route=f"{address}|{self.id}",
                max_frame_size=self.max_frame_size,
            )
            # The only ask out is written at once (its asker waits for the answer anyway);
            # beside others, it leaves with theirs in one write by the channel's writer.
            await self._send(link, address, data, fds, defer=len(self.asks) > 1)
            await pending.wait()
        finally:
            self.asks.close(corr)
        return _answer(pending)

    async def _send(
        self, link: Link, address: str, data: bytes, fds: list[int], *, defer: bool
    ) -> bool:
        """Send a frame towards ``address``; True if it had to wait for room (backpressure).

        A failure before the frame left is :class:`_Undelivered` (safe to retry elsewhere).
        """
        try:
            queued = link.channel.send_nowait(data, fds, defer=defer)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            # The peer is gone before the relay's pump noticed: say so now, so that its
            # names go and a ref by path can wait for the successor.
            self.links.link_down(link, f"channel failed: {exc}", exc)
            raise _Undelivered(ActorGone(f"no route to actor {address}: {exc}")) from exc
        if queued <= link.channel.high_water:
            return False
        try:
            await link.channel.wait_writable()
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            gone = ActorGone(f"no route to actor {address}: {exc}")
            gone.in_doubt = True
            raise gone from exc
        return True

    # -- answers ----------------------------------------------------------------------------

    def on_answer(self, frame: Frame, source: str) -> None:
        """A REPLY or ERROR frame for one of this process's asks (from node ``source``)."""
        pending = self.asks.get(frame.corr)
        if pending is None:  # the asker gave up (cancelled) before the answer came
            frame.close_fds()
            return
        try:
            message = decode_message(frame, self.context)
        except MESSAGE_ERRORS as exc:
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

    def send_reply(
        self, target: str, corr: int, value: Message | None, via: Link | None = None,
        *, defer: bool = False,
    ) -> None:
        """Answer ask ``corr`` of node ``target`` (the :class:`ReplyTransport` of Reply), on
        ``via`` (the link the ask came on) when given; ``defer`` leaves it to the channel's
        writer."""
        if value is None:
            value = _NONE_REPLY
        try:
            data, fds = encode_message(
                FrameKind.REPLY, value, corr=corr, route=f"{target}|{self.id}",
                max_frame_size=self.max_frame_size,
            )
        except ProtocolError as exc:
            self.send_failure(target, corr, Failure.from_exception("protocol", exc), via)
            return
        self._send_answer(target, data, fds, via, defer)

    def send_failure(
        self, target: str, corr: int, failure: Failure, via: Link | None = None
    ) -> None:
        """Fail ask ``corr`` of node ``target`` (on ``via``, as ``send_reply``)."""
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
        self._send_answer(target, data, fds, via)

    def refuse(self, link: Link, frame: Frame, source: str, kind: FailureKind, text: str,
               exc: BaseException | None = None) -> None:
        """A request from ``link`` certainly reached no actor: say so to an asker, drop a
        tell (either way the link's peer gets its credit back)."""
        frame.close_fds()
        link.passed(frame)
        if frame.kind is FrameKind.ASK:
            failure = (Failure.from_exception(kind, exc) if exc is not None
                       else Failure(kind=kind, type_name="ActorError", message=text))
            self.send_failure(source, frame.corr, failure, link)
        else:
            log.debug("dropping a message from node %s: %s", source, text)

    def _send_answer(
        self, target: str, data: bytes, fds: list[int], via: Link | None, defer: bool = False
    ) -> None:
        # The way the ask came: a hop that forwarded it waits for its answer (Link.relayed),
        # and an ask that came on a direct link is answered there.
        link = via if via is not None else self._link_towards(target)
        if link is None or link.down:
            log.debug("dropping a reply to %s: no route", target)
            return
        try:
            link.channel.send_nowait(data, fds, defer=defer)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            log.debug("dropping a reply to %s: link down", target)


def _answer(pending: Pending) -> Message | None:
    error = pending.error
    if isinstance(error, ActorGone) and not error.in_doubt:
        raise _Undelivered(error)  # certainly not handled: a ref by path may retry
    return pending.result()


def _not_a_message(message: object) -> NoReturn:
    raise TypeError(
        f"only Message instances can be sent, not {type(message).__qualname__} "
        f"({message!r:.60})"
    )


class _NoCluster:
    """The ``remote`` of a process that cannot reach other masters."""

    async def tell(self, ref: ActorRef, message: Message) -> None:
        raise _no_cluster(ref)

    async def ask(self, ref: ActorRef, message: Message) -> Message | None:
        raise _no_cluster(ref)

    async def monitor(self, target: ActorRef, watcher: ActorRef) -> str:
        raise _no_cluster(target)

    async def demonitor(self, id: str) -> None:
        return None  # no monitor across nodes was ever made here


def _no_cluster(ref: ActorRef) -> ActorError:
    return ActorNotFound(
        f"{ref!r} lives on node {ref.node!r}, another master: only the actors of a master "
        "opened with open_system(cluster=..., node=...) reach other nodes"
    )


class _Undelivered(Exception):
    """A send that certainly did not reach its target (safe to retry on a successor)."""

    def __init__(self, error: ActorGone) -> None:
        super().__init__(str(error))
        self.error = error


class _NoneReply(Message, tag="actors.NoneReply"):
    """The reply of a handler that returned None."""


_NONE_REPLY = _NoneReply()
