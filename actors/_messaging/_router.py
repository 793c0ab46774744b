"""``Router``: the message core of one process, put together from its parts.

Every process of a system (the master and each worker) has one router, made by
``open_system`` (the master) or a worker's bootstrap. It keeps no state of its own: it makes
the parts, each in its own module, and gives each the others it uses, once, so that a
message goes from part to part without a lookup or an indirection on its way:

- ``relay`` (``_relay``): the links to the parent and child processes, the next hop towards
  any node, the reading of every link, the forwarding of frames for other processes, and
  what fails when a link goes down;
- ``outbox`` (``_outbox``): the sending side (tell, ask, request, retries on a successor),
  the asks waiting for answers, and the answers owed to askers elsewhere; it is the
  :class:`Sender` of every ActorRef made in this process;
- ``inbox`` (``_inbox``): requests from other processes, decoded and delivered to the
  local ``mailboxes`` (``_mailboxes``), or handled inline;
- ``direct`` (``_direct``): direct links between two workers of the master, set up on
  first use (in the master: the ones it granted, within their bound);
- ``lanes`` (``_lanes``): messages that could not be passed on at once, and requests held
  for a path whose actor is restarting;
- ``names`` (``_names``: which actor holds which path; made by the caller, which sets how
  long a send waits for a restart) and ``publisher`` (``_publisher``: lifecycle events);
- ``controls`` (``_control_table``): each control message type and its handler, filled here.

The rest of the runtime uses the methods below, ``names``, ``mailboxes`` (cells add
themselves) and ``outbox`` (refs, a listener's requests).
"""

from __future__ import annotations

import trio

from protocol import DEFAULT_MAX_FRAME_SIZE

from .._base._control import (
    Credit,
    EventReport,
    Heartbeat,
    NameRegistered,
    NameUnregistered,
    PoolDeclared,
    PoolDropped,
    SystemStopping,
)
from .._base._events import Event, EventSink, ExitReason
from ._control_table import ControlTable
from ._direct import (
    DirectLinks,
    LinkClosed,
    LinkClosing,
    LinkOffer,
    LinkRefused,
    LinkRequest,
)
from ._inbox import Inbox
from ._lanes import Lanes
from ._link import Link
from ._mailboxes import Mailboxes
from ._names import NameRegistry
from ._outbox import Outbox
from ._publisher import Publisher
from ._relay import Relay

__all__ = ["Router"]


class Router:
    """The message core of node ``node_id``: its links, mailboxes, sends and names.

    ``nursery`` runs the router's own tasks (lanes, requests held for a restarting path).
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
        self.max_frame_size = max_frame_size
        self.mailboxes = Mailboxes(node_id)
        self.publisher = Publisher(events)
        self.outbox = Outbox(node_id, names, self.mailboxes, max_frame_size=max_frame_size)
        self.lanes = Lanes(nursery, names, self.outbox.refuse)
        self.inbox = Inbox(self.mailboxes, self.outbox, self.lanes)
        self.controls = ControlTable()
        self.direct = DirectLinks(node_id, nursery, max_frame_size)
        self.relay = Relay(
            node_id, names=names, mailboxes=self.mailboxes, outbox=self.outbox,
            inbox=self.inbox, lanes=self.lanes, controls=self.controls,
            publisher=self.publisher, direct=self.direct,
        )
        # The parts made before the relay send through its links.
        self.outbox.attach(self.relay)
        names.links = self.relay
        self.publisher.links = self.relay
        # The control messages the message core handles, each once; any other goes to the
        # link's owner (a worker handle in the parent, the bootstrap in a worker).
        controls = self.controls
        controls.register(Heartbeat, Link.on_heartbeat, from_parent=True, from_children=True)
        controls.register(Credit, Link.on_credit, from_parent=True, from_children=True,
                          from_peers=True)
        controls.register(SystemStopping, self.relay.on_system_stopping, from_parent=True)
        controls.register(NameRegistered, names.on_registered, from_children=True)
        controls.register(NameUnregistered, names.on_unregistered, from_children=True)
        controls.register(PoolDeclared, names.on_pool, from_children=True)
        controls.register(PoolDropped, names.on_pool, from_children=True)
        controls.register(EventReport, self.publisher.on_report, from_children=True)
        controls.register(LinkRequest, self.direct.on_request, from_children=True)
        controls.register(LinkOffer, self.direct.on_offer, from_parent=True)
        controls.register(LinkRefused, self.direct.on_refused, from_parent=True)
        controls.register(LinkClosing, self.direct.on_closing, from_peers=True)
        controls.register(LinkClosed, self.direct.on_closed, from_peers=True)

    @property
    def stopping(self) -> bool:
        """The system is shutting down."""
        return self.relay.stopping

    def next_actor_id(self) -> int:
        return self.mailboxes.next_id()

    def next_child_node(self) -> str:
        return self.relay.next_child_node()

    def attach_parent(self, link: Link) -> None:
        """``link`` leads to the parent process: unknown paths and events go up it."""
        self.relay.attach_parent(link)

    def add_child(self, link: Link) -> None:
        """``link`` leads to a worker process this one started."""
        self.relay.add_child(link)

    async def pump(self, link: Link) -> None:
        """Route every frame arriving on ``link`` until it ends; then take the link down."""
        await self.relay.pump(link)

    def close_link(self, link: Link) -> None:
        """The peer said it is stopping: send it nothing new, forget the names it held."""
        self.relay.close_link(link)

    def link_down(self, link: Link, reason: str, error: BaseException | None = None) -> None:
        """Forget ``link``: fail what waits on it, drop its names, and close it."""
        self.relay.link_down(link, reason, error)

    def publish(self, event: Event) -> None:
        """Report a lifecycle event: to ``events()`` in the master, up the tree elsewhere."""
        self.publisher.publish(event)

    def system_stopping(self) -> None:
        """The system is shutting down: say so here and in every process below."""
        self.relay.system_stopping()

    def departed(self, address: str, path: str, reason: ExitReason) -> None:
        """Remember that the actor at ``address`` is gone, so that sends to it say so."""
        self.mailboxes.departed(address, path, reason)
