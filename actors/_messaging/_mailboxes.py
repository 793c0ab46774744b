"""``Mailboxes``: the actors of one process as messages reach them, and the actors gone.

A cell puts its :class:`Mailbox` here while it runs (by its actor id, the part of its address
after the node: ``0.1/3`` is actor 3 of node ``0.1``) and takes it out when it stops. Both
ways into a mailbox look it up here: a send from this process (the outbox) and a frame from
another (the inbox). Actors known to be gone, here or in a process below, are remembered for
a while with why they went, so that a send to one says so instead of "not running".
"""

from __future__ import annotations

import contextvars
import itertools
from collections import OrderedDict
from collections.abc import Callable
from typing import Protocol

from protocol import Message

from .._base._errors import ActorGone
from .._base._events import ExitReason
from ._asks import Reply

__all__ = ["Mailbox", "Mailboxes", "current_actor"]

_DEPARTED_KEPT = 4096

current_actor: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "actors.current_actor", default=None
)
"""The address of the actor whose handler is running in this task (None elsewhere)."""


class Mailbox(Protocol):
    """An actor of this process, as messages are delivered to it (a cell)."""

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


class Mailboxes:
    """The running actors of node ``node_id`` by id, and the actors known to be gone."""

    def __init__(self, node_id: str) -> None:
        self.node_id = node_id
        self._by_id: dict[int, Mailbox] = {}
        self._ids = itertools.count(1)
        # Actors known to be gone, by address: who they were and why they went (bounded).
        # The outbox reads it on every send to another process.
        self.departures: OrderedDict[str, str] = OrderedDict()

    def next_id(self) -> int:
        """A new actor id in this process."""
        return next(self._ids)

    def add(self, actor_id: int, mailbox: Mailbox) -> None:
        self._by_id[actor_id] = mailbox

    def remove(self, actor_id: int) -> None:
        self._by_id.pop(actor_id, None)

    def local(self, actor: str) -> Mailbox:
        """The mailbox of actor ``actor`` (its id as text), if it takes messages; else
        :class:`ActorGone`, saying why when it is known."""
        try:
            mailbox = self._by_id.get(int(actor))
        except ValueError:
            mailbox = None
        if mailbox is None:
            address = f"{self.node_id}/{actor}"
            raise self.gone(address, f"actor {address} is not running")
        if not mailbox.accepting:
            raise self.gone(mailbox.address,
                            f"actor {mailbox.path} ({mailbox.address}) is stopping")
        return mailbox

    def departed(self, address: str, path: str, reason: ExitReason) -> None:
        """Remember that the actor at ``address`` is gone, so that sends to it say so."""
        self.departures[address] = f"actor {path} ({address}) is gone: {reason.why()}"
        self.departures.move_to_end(address)
        while len(self.departures) > _DEPARTED_KEPT:
            self.departures.popitem(last=False)

    def gone(self, address: str, fallback: str) -> ActorGone:
        """The error for a send to ``address``: why it went if known, else ``fallback``."""
        return ActorGone(self.departures.get(address, fallback))
