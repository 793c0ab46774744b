"""``DirectLinks``: links between two workers of the master, set up on first use.

Between two workers (nodes ``0.1`` and ``0.2``) every frame would otherwise cross the master
twice, and the master would carry all of that traffic. On the first send from one to the
other, the worker asks the master for a direct link (:class:`LinkRequest`); the master, which
has a link to both, makes a socketpair and hands one end to each (:class:`LinkOffer`), unless
either already has ``DIRECT_LINKS`` of them (:class:`LinkRefused`: the two go on talking
through the master, and the worker does not ask again).

Order across the switch: a side that installs its end first sends a marker through the master
to the other side (a TELL to the reserved actor ``SWITCHED``, so it travels behind everything
this side sent that way), and from then on sends what goes to the peer's subtree on the
direct link. It reads the direct link only once the peer's marker has come: by then
everything the peer sent through the master has been read, so messages from one sender to one
actor keep their order. If the peer dies before its marker comes, the end of the direct link
(EOF) is noticed all the same.

A direct link is a :class:`Link` with ``direct`` set: it carries requests and answers both
ways, credit for tells, and the two messages of an orderly stop; nothing else may come on it.
When it goes down (its peer died), the relay fails what was sent on it (``ActorGone``,
``in_doubt``), as for any link.

An orderly stop leaves nothing in doubt, as through the master: a worker whose actor is done
says so on each direct link (:class:`LinkClosing`); the peer sends nothing more on it (what
follows goes through the master, which knows the worker is stopping) and answers
:class:`LinkClosed`, behind everything it sent on the link. The worker reads its direct
links until every one of them answered (``wait_closed``, within its exit's time bound). Each
process keeps one :class:`DirectLinks`: in a worker the links it has, in the master the pairs
it granted (to keep the bound).
"""

from __future__ import annotations

import socket
from collections.abc import Awaitable
from typing import Protocol

import trio

from protocol import FrameKind, Message, SocketHandle, encode_message, open_channel

from ._lanes import Lane, Lanes
from ._link import Link

__all__ = [
    "DIRECT_LINKS",
    "SWITCHED",
    "DirectLinks",
    "LinkClosed",
    "LinkClosing",
    "LinkOffer",
    "LinkRefused",
    "LinkRequest",
    "Switched",
]

DIRECT_LINKS = 16
"""Direct links a worker may have at once; past this, it talks through the master."""

_ASKED_KEPT = 1024  # peers remembered as asked for (or refused)

SWITCHED = "~switched"
"""The reserved actor id of the marker a side sends through the master once it sends direct."""


class LinkRequest(Message, tag="actors.LinkRequest"):
    """A worker asks its parent for a direct link to node ``peer``."""

    peer: str


class LinkOffer(Message, tag="actors.LinkOffer"):
    """One end of a direct link to node ``peer`` (the master sends the other end to it)."""

    peer: str
    sock: SocketHandle


class LinkRefused(Message, tag="actors.LinkRefused"):
    """No direct link to node ``peer``: go on through the master."""

    peer: str


class LinkClosing(Message, tag="actors.LinkClosing"):
    """The sender's actor is done: send nothing more on this direct link."""


class LinkClosed(Message, tag="actors.LinkClosed"):
    """Nothing more comes on this direct link (the answer to :class:`LinkClosing`)."""


class Switched(Message, tag="actors.Switched"):
    """The marker (body of the TELL to ``SWITCHED``): the sender now sends direct."""


class LinkTable(Protocol):
    """What direct links need of the relay (its links, its reading of them)."""

    @property
    def parent(self) -> Link | None: ...

    @property
    def children(self) -> dict[str, Link]: ...

    def pump(self, link: Link) -> Awaitable[None]: ...

    def links_changed(self) -> None: ...


class DirectLinks:
    """The direct links of node ``node_id`` (a worker), or the ones the master granted.

    ``nursery`` runs each link's channel and reading.
    """

    def __init__(self, node_id: str, nursery: trio.Nursery, max_frame_size: int) -> None:
        self.id = node_id
        self.links: dict[str, Link] = {}  # by the peer's node id
        self._nursery = nursery
        self._max_frame_size = max_frame_size
        self._asked: set[str] = set()  # peers asked for (or refused): never asked twice
        self._switched: set[str] = set()  # peers whose marker came before their link
        self._granted: dict[str, set[str]] = {}  # master: node -> its peers
        self._closing: set[Link] = set()  # links asked to close, not answered yet
        self._settled = trio.Event()  # one of them answered or went down
        # A worker of the master (``0.N``) may have direct links; others never ask.
        self._eligible = node_id.count(".") == 1
        self._table: LinkTable

    def attach(self, table: LinkTable) -> None:
        self._table = table

    # -- a worker's side --------------------------------------------------------------------

    def towards(self, node_id: str) -> Link | None:
        """The direct link that leads to ``node_id`` (asking for one on first use), or None
        when frames for it go through the parent."""
        if not self._eligible or not node_id.startswith("0."):
            return None
        top = node_id if node_id.count(".") == 1 else ".".join(node_id.split(".", 2)[:2])
        link = self.links.get(top)
        if link is not None:
            return link if link.open_for_sending else None
        if top != self.id and top not in self._asked:
            self._ask(top)
        return None

    def _ask(self, peer: str) -> None:
        parent = self._table.parent
        if parent is None or len(self.links) >= DIRECT_LINKS:
            return  # asked again on a later first send, once a link went down
        if len(self._asked) >= _ASKED_KEPT:
            # Workers come and go (a restart is a new node): forget the old answers rather
            # than keep one per node for good. A peer asked again costs one request.
            self._asked = set(self.links)
        self._asked.add(peer)
        parent.notify(LinkRequest(peer=peer))

    def on_refused(self, link: Link, message: LinkRefused) -> None:
        """The master will not link us to ``message.peer`` (its control table handler)."""
        self._asked.add(message.peer)

    def on_offer(self, link: Link, message: LinkOffer) -> None:
        """Our end of a direct link (its control table handler): run it."""
        sock = message.sock.into_socket()
        if message.peer in self.links or not self._eligible or len(self.links) >= DIRECT_LINKS:
            sock.close()
            return
        self._asked.add(message.peer)
        self._nursery.start_soon(self._run, message.peer, sock)

    def on_switched(self, source: str, behind: list[tuple[Lane, int]]) -> None:
        """The marker of node ``source`` came: what it sent through the master is read,
        and passed on once the lanes in ``behind`` moved past it."""
        if behind:
            self._nursery.start_soon(self._switched_after, source, behind)
            return
        link = self.links.get(source)
        if link is None:
            self._switched.add(source)  # its link is being installed
        else:
            link.ready.set()

    async def _switched_after(self, source: str, behind: list[tuple[Lane, int]]) -> None:
        await Lanes.wait_passed(behind)
        self.on_switched(source, [])

    async def _run(self, peer: str, sock: socket.socket) -> None:
        async with open_channel(sock, max_frame_size=self._max_frame_size) as channel:
            link = Link(peer, channel, is_parent=False, direct=True)
            parent = self._table.parent
            if parent is None or not parent.open_for_sending:
                return
            # The marker first, then the link: nothing goes direct before it is sent.
            data, _ = encode_message(
                FrameKind.TELL, Switched(), route=f"{peer}/{SWITCHED}|{self.id}",
                max_frame_size=self._max_frame_size,
            )
            try:
                parent.channel.send_nowait(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return
            parent.send_credit -= len(data)
            self.links[peer] = link
            self._table.links_changed()
            if peer in self._switched:
                self._switched.discard(peer)
                link.ready.set()
            # If the peer is gone before its marker came, the pump reads the end at once
            # and takes the link down, failing what was sent on it.
            await _marker_or_end(link, sock)
            await self._table.pump(link)

    def dropped(self, link: Link) -> None:
        """A direct link went down: forget it (its peer's node is never used again)."""
        if self.links.get(link.peer) is link:
            del self.links[link.peer]
        self._settled.set()

    def close_all(self) -> None:
        """This worker's actor is done: ask every peer to send nothing more directly."""
        for link in self.links.values():
            if not link.closing and link.notify(LinkClosing()):
                link.closing = True
                link.stop_sending()
                self._closing.add(link)
        self._table.links_changed()

    async def wait_closed(self) -> None:
        """Wait until every peer asked by :meth:`close_all` answered or is gone (bound it:
        the caller's exit does)."""
        while any(not link.down for link in self._closing):
            self._settled = trio.Event()
            await self._settled.wait()

    def on_closing(self, link: Link, message: LinkClosing) -> None:
        """The peer's actor is done (its control table handler): nothing more goes on the
        link; what follows goes through the master."""
        if not link.closing:
            link.closing = True
            link.stop_sending()
            self._table.links_changed()
        link.notify(LinkClosed())

    def on_closed(self, link: Link, message: LinkClosed) -> None:
        """The peer sends nothing more on the link (its control table handler)."""
        self._closing.discard(link)
        self._settled.set()

    # -- the master's side ------------------------------------------------------------------

    def on_request(self, link: Link, message: LinkRequest) -> None:
        """A child asks for a direct link (the master's control table handler)."""
        asker, peer = link.peer, message.peer
        target = self._table.children.get(peer)
        if peer in self._granted.get(asker, ()):
            return  # both ends are on their way
        if (
            self.id != "0" or target is None or target is link
            or not target.open_for_sending or not link.open_for_sending
            or len(self._granted.get(asker, ())) >= DIRECT_LINKS
            or len(self._granted.get(peer, ())) >= DIRECT_LINKS
        ):
            link.notify(LinkRefused(peer=peer))
            return
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        with ours, theirs:
            # The kernel gives each worker its own copy: ours are closed when this returns.
            if not link.notify(LinkOffer(peer=peer, sock=SocketHandle.from_socket(ours))):
                return
            if not target.notify(LinkOffer(peer=asker, sock=SocketHandle.from_socket(theirs))):
                return  # the asker's end sees EOF: its link goes down at once
        self._granted.setdefault(asker, set()).add(peer)
        self._granted.setdefault(peer, set()).add(asker)

    def child_gone(self, node_id: str) -> None:
        """A child's link went down: its direct links no longer count against its peers."""
        for peer in self._granted.pop(node_id, ()):
            peers = self._granted.get(peer)
            if peers is not None:
                peers.discard(node_id)


async def _marker_or_end(link: Link, sock: socket.socket) -> None:
    """Wait for the peer's marker, or for the link to end first (peeked: nothing read)."""

    async def watch_end(cancel: trio.CancelScope) -> None:
        while True:
            await trio.lowlevel.wait_readable(sock)
            try:
                peeked = sock.recv(1, socket.MSG_PEEK)
            except BlockingIOError:
                continue
            except OSError:
                peeked = b""
            if not peeked:
                cancel.cancel()
            return  # else the peer is alive and sending: its marker is on the way

    async with trio.open_nursery() as nursery:
        nursery.start_soon(watch_end, nursery.cancel_scope)
        await link.ready.wait()
        nursery.cancel_scope.cancel()
