"""``Lanes``: where messages wait, so that the relay never stops reading a link.

A message that cannot be passed on at once waits in a *lane*: one per incoming link and
destination, so that order is kept and one slow destination holds up nothing else. A
*delivery lane* leads to a mailbox of this process that is full; a *forwarding lane* to
another process whose link has no credit left for tells. Once a lane exists, everything
from its link to its destination queues behind it (the inbox and the relay look a lane up
before passing a frame on), and its task passes the messages on one at a time, in order;
the sender's credit comes back only as its lane moves (see ``_link``).

A request by path for an actor that is restarting is *held* (in the master, which resolves
paths) until the path has an owner again, then routed as if it had just arrived; after
``restart_wait`` seconds without one, it fails.

Each lane or held path has a task in the process's nursery; what is left when it ends (the
system is shutting down, or the link onward went down) is refused: an asker hears why.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Awaitable, Callable

import trio

from protocol import Frame, FrameKind, Message, ProtocolError

from .._base._control import FailureKind
from ._link import Link
from ._names import NameRegistry

__all__ = ["Deliver", "DeliverNow", "Lane", "Lanes", "Refuse", "Route", "SendOn"]

log = logging.getLogger("actors")

_DELIVER_BUDGET = 1024  # lane messages delivered back to back before the lane's task waits

Deliver = Callable[[Link, str, Frame, str, Message | None], Awaitable[None]]
"""Deliver one message of a lane from a link to a local actor (the inbox's)."""
DeliverNow = Callable[[Link, str, Frame, str, Message | None], Message | None]
"""Deliver one message of a lane if its mailbox has room now: None once it is passed on
(or its failure handled), else its decoded message, for :data:`Deliver` to wait with."""
SendOn = Callable[[Link, Link, Frame, str], None]
"""Send one frame on from one link to another, now (the relay's)."""
Route = Callable[[Link, Frame], None]
"""Route a frame as if it had just arrived on a link (the relay's)."""
Refuse = Callable[[Link, Frame, str, FailureKind, str], None]
"""Tell the asker of a request that reached no actor why (the outbox's)."""


class Lane:
    """Frames from one link to one destination, in order: the first is being passed on.

    Each item is a frame, the node it came from, and its message if already decoded.
    ``moved`` counts the items passed on; ``progress`` wakes whoever waits for that."""

    __slots__ = ("items", "link", "moved", "progress")

    def __init__(self, link: Link) -> None:
        self.link = link
        self.items: deque[tuple[Frame, str, Message | None]] = deque()
        self.moved = 0
        self.progress = trio.lowlevel.ParkingLot()

    def passed_on(self) -> None:
        self.items.popleft()
        self.moved += 1
        if self.progress:
            self.progress.unpark_all()


class Lanes:
    """The lanes and held requests of one process; their tasks run in ``nursery``."""

    def __init__(self, nursery: trio.Nursery, names: NameRegistry, refuse: Refuse) -> None:
        self.nursery = nursery
        self.names = names
        self.refuse = refuse
        # Looked up for every frame while not empty (by the inbox and the relay): a lane
        # that exists takes every later frame of its link and destination.
        self.delivery: dict[tuple[Link, str], Lane] = {}  # by (link, local actor id)
        self.forwarding: dict[tuple[Link, Link], Lane] = {}  # by (link in, link out)
        self._held: dict[str, list[tuple[Link, Frame, str]]] = {}

    # -- delivery lanes ---------------------------------------------------------------------

    def deliver_later(self, link: Link, actor: str, frame: Frame, source: str,
                      message: Message, deliver: Deliver,
                      deliver_now: DeliverNow | None = None) -> None:
        """Open the lane from ``link`` to local actor ``actor`` (its mailbox is full), with
        ``message`` first; ``deliver`` passes each message on, waiting for room, and
        ``deliver_now``, if given, passes on those that find room without waiting."""
        key = (link, actor)
        lane = self.delivery[key] = Lane(link)
        lane.items.append((frame, source, message))
        self.nursery.start_soon(self._deliver, key, lane, deliver, deliver_now)

    async def _deliver(self, key: tuple[Link, str], lane: Lane, deliver: Deliver,
                       deliver_now: DeliverNow | None) -> None:
        """Deliver one lane's messages in order, each as soon as its mailbox has room."""
        link, actor = key
        budget = _DELIVER_BUDGET
        try:
            while lane.items:
                frame, source, message = lane.items[0]
                if deliver_now is not None and budget > 0:
                    # In a flood the lane is long and the mailbox takes dozens at once when
                    # its actor has run: those go in this loop, with no coroutine each; only
                    # the first that finds it full waits. The budget bounds the run between
                    # two waits when nothing fills up (messages taken by inline handlers).
                    budget -= 1
                    message = deliver_now(link, actor, frame, source, message)
                    if message is None:
                        lane.passed_on()
                        continue
                    lane.items[0] = (frame, source, message)
                budget = _DELIVER_BUDGET
                await deliver(link, actor, frame, source, message)
                lane.passed_on()
        finally:
            del self.delivery[key]
            lane.progress.unpark_all()
            for frame, source, _ in lane.items:  # cancelled: the system is going away
                self.refuse(link, frame, source, "gone", "the system is shutting down")

    # -- forwarding lanes -------------------------------------------------------------------

    def forward_later(self, came_from: Link, out: Link, frame: Frame, source: str,
                      send_on: SendOn) -> None:
        """Queue a frame from ``came_from`` for ``out`` behind the others of its lane (the
        lane opens if it is the first); ``send_on`` sends each on, tells as credit comes."""
        key = (came_from, out)
        lane = self.forwarding.get(key)
        if lane is None:
            lane = self.forwarding[key] = Lane(came_from)
            self.nursery.start_soon(self._forward, key, lane, send_on)
        lane.items.append((frame, source, None))

    async def _forward(self, key: tuple[Link, Link], lane: Lane, send_on: SendOn) -> None:
        """Send one lane's frames on in order, tells as credit comes back from ``out``."""
        came_from, out = key
        try:
            while lane.items:
                frame, source, _ = lane.items[0]
                if frame.kind is FrameKind.TELL and out.send_credit <= 0:
                    await out.wait_credit()
                if not out.open_for_sending:
                    break
                lane.passed_on()
                send_on(came_from, out, frame, source)
        finally:
            del self.forwarding[key]
            lane.progress.unpark_all()
            for frame, source, _ in lane.items:
                self.refuse(came_from, frame, source, "gone",
                            f"the process of node {out.peer} is gone")

    # -- a point in a link's stream -------------------------------------------------------

    def waiting_from(self, link: Link) -> list[tuple[Lane, int]]:
        """The lanes holding frames from ``link`` now, each with the count of moved items
        it reaches once they are all passed on (see :meth:`wait_passed`)."""
        lanes = [lane for key, lane in self.delivery.items() if key[0] is link]
        lanes += [lane for key, lane in self.forwarding.items() if key[0] is link]
        return [(lane, lane.moved + len(lane.items)) for lane in lanes]

    @staticmethod
    async def wait_passed(marks: list[tuple[Lane, int]]) -> None:
        """Wait until the frames that :meth:`waiting_from` saw are passed on (or dropped:
        a lane's task ended)."""
        for lane, mark in marks:
            while lane.moved < mark and lane.items:
                await lane.progress.park()

    # -- requests held for a restarting path ------------------------------------------------

    def park(self, path: str, link: Link, frame: Frame, source: str, route: Route) -> None:
        """Keep a request for ``path`` (whose actor is restarting) until it is back, then
        ``route`` it; fail it if the path is not back within ``restart_wait``."""
        held = self._held.get(path)
        if held is None:
            held = self._held[path] = []
            self.nursery.start_soon(self._deliver_parked, path, route)
        held.append((link, frame, source))

    async def _deliver_parked(self, path: str, route: Route) -> None:
        address = await self.names.wait_for(path)
        held = self._held.pop(path, [])
        if address is None and self.names.supervised(path):
            log.warning("%s was not back within %s s: failing what waited for it",
                        path, self.names.restart_wait)
            for link, frame, source in held:
                self.refuse(link, frame, source, "gone",
                            f"{path!r} is restarting and was not back within "
                            f"{self.names.restart_wait} s")
            return
        for link, frame, source in held:
            try:
                route(link, frame)
            except ProtocolError as exc:
                log.error("dropping a held message from node %s: %s", source, exc)
