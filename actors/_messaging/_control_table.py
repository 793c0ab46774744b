"""``ControlTable``: which part of a process handles each control message.

Control messages (``SYSTEM`` frames) are the runtime's own: credit, heartbeats, names and
events reported up the tree, the shutdown said down it, and a worker's lifecycle (Hello,
Ready, Stop, Suicide, ...). Each type is registered once, with its handler and the side it
may come from (the parent link, a child's, or a direct link to a sibling worker's, which
carries nothing but credit): the process's :class:`Router` fills the table
when it is made, and the relay looks every control message up in it. Whatever has no
handler for the side it came from goes to the link's owner (``Link.control``: a worker
handle in the parent, the bootstrap in a worker), which refuses what it does not expect;
on a direct link, which has no owner, it is a protocol error that ends the link.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from protocol import Message, ProtocolError

from ._link import Link

__all__ = ["ControlTable"]

M = TypeVar("M", bound=Message)

# A handler takes exactly the type it was registered for (``dispatch`` looks the message's
# own type up), which the table's values cannot say: each is checked at ``register``.
_Handler = Callable[[Link, Any], None]


class ControlTable:
    """Control message types to their handlers, one table per side a message comes from."""

    def __init__(self) -> None:
        self._from_parent: dict[type[Message], _Handler] = {}
        self._from_children: dict[type[Message], _Handler] = {}
        self._from_peers: dict[type[Message], _Handler] = {}

    def register(
        self,
        kind: type[M],
        handler: Callable[[Link, M], None],
        *,
        from_parent: bool = False,
        from_children: bool = False,
        from_peers: bool = False,
    ) -> None:
        """``handler(link, message)`` handles every ``kind`` arriving from the parent, from
        a child, from a direct link's peer, or several; a type has one handler per side (a
        second is a ValueError)."""
        if not (from_parent or from_children or from_peers):
            raise ValueError(f"{kind.__name__} must come from the parent, a child or a peer")
        sides = [side for side, wanted in ((self._from_parent, from_parent),
                                           (self._from_children, from_children),
                                           (self._from_peers, from_peers)) if wanted]
        for side in sides:
            if kind in side:
                raise ValueError(f"{kind.__name__} already has a handler")
        for side in sides:
            side[kind] = handler

    def dispatch(self, link: Link, message: Message) -> None:
        """Hand a control message that arrived on ``link`` to its handler, or to the
        link's owner when it has none (a direct link has none: ProtocolError)."""
        side = (self._from_parent if link.is_parent
                else self._from_peers if link.direct else self._from_children)
        handler = side.get(type(message))
        if handler is None:
            if link.direct:
                raise ProtocolError(
                    f"node {link.peer} sent {type(message).__name__} on a direct link"
                )
            link.to_owner(message)
        else:
            handler(link, message)
