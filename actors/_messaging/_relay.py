"""``Relay``: the links of one process, and the frames that pass through it.

Processes form a tree: the master is node ``"0"``; a worker it starts is ``"0.1"``, a worker
that one starts is ``"0.1.1"``. A :class:`Link` is the channel to a parent or child process.
A frame's route is ``"<destination>|<source node>"``, the destination an address
(``node/id``), a path resolved by the master (``0/@path``), or for replies a node id.

The relay reads every link (``pump``) and never waits for anything but the channel: it hands
what is this process's own to the part that takes it (a control message to its handler in
the control table, a request to the inbox, an answer to the outbox), and forwards the rest
one hop along the tree; a frame that cannot go on at once waits in a forwarding lane. A
request by path for an actor that is restarting is held until it is back (see ``_lanes``).
Replies and control messages are never held behind data.

Between two workers of the master, frames go on a direct link once one is set up (see
``_direct``); the tree carries them until then.

Every ask gets an answer: each hop that forwards an ask remembers it (``Link.relayed``) until
the reply passes back (the way the ask came), and answers it with :class:`ActorGone` itself
if the link it went out on goes down. A link going down (``link_down``) also fails this
process's own asks sent on it, drops the names held behind it, and reports the actors that
went with it.
"""

from __future__ import annotations

import itertools
import logging

import trio

from protocol import HEADER_SIZE, Frame, FrameKind, FrameTooLarge, ProtocolError

from .._base._control import Failure, SystemStopping
from .._base._errors import ActorGone
from .._base._events import ActorExited, ExitReason
from ._control_table import ControlTable
from ._direct import SWITCHED, DirectLinks
from ._inbox import Inbox
from ._lanes import Lanes
from ._link import Link
from ._mailboxes import Mailboxes
from ._names import NameRegistry
from ._outbox import Outbox
from ._publisher import Publisher

__all__ = ["Relay"]

log = logging.getLogger("actors")

_HOPS_KEPT = 4096


class Relay:
    """The links of node ``node_id`` (its parent's and its children's), the next hop
    towards any node, and the frames it reads from them; it is the :class:`Links` that the
    other parts send through."""

    def __init__(
        self,
        node_id: str,
        *,
        names: NameRegistry,
        mailboxes: Mailboxes,
        outbox: Outbox,
        inbox: Inbox,
        lanes: Lanes,
        controls: ControlTable,
        publisher: Publisher,
        direct: DirectLinks,
    ) -> None:
        self.id = node_id
        self.parent: Link | None = None
        self.children: dict[str, Link] = {}
        self.stopping = False  # the system is shutting down
        self.names = names
        self._mailboxes = mailboxes
        self._outbox = outbox
        self._lanes = lanes
        self._publisher = publisher
        self.direct = direct
        self._towards_direct = direct.towards
        self._child_ids = itertools.count(1)
        self._hops: dict[str, Link | None] = {}  # link_towards, remembered until links change
        # Bound once: each runs for every frame of its kind.
        self._on_request = inbox.on_request
        self._on_answer = outbox.on_answer
        self._refuse = outbox.refuse
        self._decode = inbox.decode
        self._control = controls.dispatch
        self._forwarding = lanes.forwarding
        direct.attach(self)

    # -- the link table ---------------------------------------------------------------------

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

    def links_changed(self) -> None:
        """A direct link came or went: routes are worked out again."""
        self._hops.clear()

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
                hop = self._towards_direct(node_id) or self.parent
        if len(self._hops) >= _HOPS_KEPT:
            self._hops.clear()
        self._hops[node_id] = hop
        return hop

    # -- reading a link ---------------------------------------------------------------------

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
                    self.on_frame(link, frame)
        except trio.EndOfChannel:
            reason = "closed"
        except ProtocolError as exc:
            reason, error = f"protocol error: {type(exc).__name__}: {exc}", exc
            log.error("closing the channel to node %s: %s", link.peer, reason)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            reason, error = f"channel failed: {exc}", exc
        finally:
            self.link_down(link, reason, error)

    def on_frame(self, link: Link, frame: Frame) -> None:
        """Route one frame that arrived on ``link`` (a ProtocolError ends the link)."""
        kind = frame.kind
        if kind is FrameKind.SYSTEM:
            self._control(link, self._decode(frame))
            return
        destination, sep, source = frame.route.partition("|")
        if not sep or not source:
            frame.close_fds()
            raise ProtocolError(f"frame without a source in its route {frame.route!r}")
        if not link.is_parent and not link.owns(source):
            frame.close_fds()
            raise ProtocolError(f"node {link.peer} sent a frame claiming to be from {source}")
        if kind is not FrameKind.TELL and kind is not FrameKind.ASK:
            relayed = link.relayed.pop((destination, frame.corr), None)
            if destination == self.id:
                self._on_answer(frame, source)
            else:
                self._pass_answer(frame, destination, None if relayed is None else relayed[1])
            return
        node_id, _, actor = destination.partition("/")
        if node_id == self.id and actor.startswith("@"):
            path = actor[1:]  # a send by path, which this node (the master) resolves
            address = self.names.get(path)
            if address is None and self.names.supervised(path):
                self._lanes.park(path, link, frame, source, self.on_frame)
                return
            if address is None:
                self._refuse(link, frame, source, "not_found",
                             f"no actor is registered under the path {path!r}")
                return
            frame.route = f"{address}|{source}"
            node_id, _, actor = address.partition("/")
        if node_id == self.id:
            if actor == SWITCHED:
                # The peer sends direct from now on: its link is read once what it sent
                # this way is passed on (some may wait in lanes behind full mailboxes).
                link.passed(frame)
                self.direct.on_switched(source, self._lanes.waiting_from(link))
                return
            self._on_request(link, frame, actor, source)
        else:
            self.forward(link, frame, node_id, source)

    # -- passing frames on ------------------------------------------------------------------

    def forward(self, came_from: Link, frame: Frame, node_id: str, source: str) -> None:
        """Send a request for node ``node_id`` on, now or behind its lane."""
        out = self.link_towards(node_id)
        if out is None or out is came_from or not out.open_for_sending:
            self._refuse(came_from, frame, source, "gone", f"no process is running node {node_id}")
            return
        if (not self._forwarding or (came_from, out) not in self._forwarding) and (
            frame.kind is FrameKind.ASK or out.send_credit > 0
        ):
            self.send_on(came_from, out, frame, source)
        else:
            self._lanes.forward_later(came_from, out, frame, source, self.send_on)

    def send_on(self, came_from: Link, out: Link, frame: Frame, source: str) -> None:
        """Forward one frame on ``out`` now (routing never makes a frame invalid)."""
        data = frame.encode()
        if len(data) - HEADER_SIZE > out.channel.max_frame_size:
            # Its route grew on the way (a path resolved to an address): refuse this one.
            too_large = FrameTooLarge(len(data) - HEADER_SIZE, out.channel.max_frame_size)
            self._refuse(came_from, frame, source, "protocol", str(too_large), too_large)
            return
        if frame.kind is FrameKind.ASK:
            out.relayed[(source, frame.corr)] = (frame.route.partition("|")[0], came_from)
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
        came_from.passed(frame)

    def _pass_answer(self, frame: Frame, destination: str, back: Link | None) -> None:
        """Send an answer on towards the asker's node, the way its ask came (``back``) when
        that is known (dropped if there is no way)."""
        out = back if back is not None else self.link_towards(destination)
        if out is None or out.down:
            frame.close_fds()
            return
        try:
            out.channel.send_nowait(frame.encode(), frame.fds)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            frame.close_fds()

    # -- links going away -------------------------------------------------------------------

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

        self._outbox.asks.fail_link(link, gone)
        for (asker, corr), (destination, back) in link.relayed.items():
            self._outbox.send_failure(
                asker, corr, Failure(kind="gone", type_name="ActorGone",
                                     message=f"actor {destination}: {text}", in_doubt=True),
                via=back,
            )
        link.relayed.clear()
        if link.direct:
            self.direct.dropped(link)
            self._hops.clear()
        elif not link.is_parent:
            if self.children.get(link.peer) is link:
                del self.children[link.peer]
                self._hops.clear()
                self.direct.child_gone(link.peer)
            lost: list[tuple[str, str | None, int | None]] = [
                (path, address, None) for path, address in self.names.drop(link)]
            named = {path for path, _, _ in lost}
            lost += [(path, None, pid) for path, pid in self._publisher.unnamed(link)
                     if path not in named]  # (one still starting may have its name)
            if not orderly:
                self._report_lost(link, lost, reason)

    def _report_lost(self, link: Link, lost: list[tuple[str, str | None, int | None]],
                     reason: str) -> None:
        """Instances that went down with a process, without a word of their own (named
        ones with their address, and unnamed ones, a supervisor of theirs, with their pid,
        which is what tells instances apart further up): their exit."""
        for path, address, pid in lost:
            if path == link.subtree:
                continue  # the worker's own actor: its handle reports it
            lost_reason = ExitReason(
                kind="killed", detail=f"its process (node {link.peer}) went away: {reason}",
            )
            if address is not None:
                self._mailboxes.departed(address, path, lost_reason)
            if "@" in path:
                continue  # the runtime's own actors (a worker's services) have no events
            self._publisher.publish(ActorExited(path=path, address=address, pid=pid,
                                                reason=lost_reason))
