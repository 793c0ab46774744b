"""``ActorRef``: the handle through which actors are told and asked."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol, TypeVar, overload

import trio
from pydantic import GetCoreSchemaHandler, SerializationInfo, ValidationInfo
from pydantic_core import core_schema

from protocol import Message

from ._errors import UnexpectedReply

__all__ = ["NODE_CONTEXT_KEY", "SENDER_CONTEXT_KEY", "ActorRef", "Sender", "split_node"]

M = TypeVar("M", bound=Message)

SENDER_CONTEXT_KEY = "actors.sender"
"""Key of the receiving process's :class:`Sender` in the pydantic context of decoding."""

NODE_CONTEXT_KEY = "actors.node"
"""Key of this master's cluster node, ``(name, incarnation)``, in the pydantic context of a
message crossing to another node: encoding names the node in the refs it carries, decoding
makes the refs to this very node local again."""


class Sender(Protocol):
    """What delivers a ref's messages: the router of the process the ref lives in."""

    async def tell(self, ref: ActorRef, message: Message) -> None: ...

    async def ask(self, ref: ActorRef, message: Message) -> Message | None: ...


class ActorRef:
    """Where to send messages to one actor, valid in every process of the system.

    A ref holds either an address (one incarnation of an actor) or a path (whatever actor
    holds that name when a message is sent; see ``system.ref``). Refs compare equal when
    they name the same address or path, and may be sent inside messages: a field typed
    ``ActorRef`` arrives as a ref usable from the receiving process.

    ``node`` names another master of the cluster (``open_system(cluster=..., node=...)``)
    when the actor lives there; an address there also names the node's ``incarnation``
    (an address of an earlier incarnation is gone), a path follows the node's restarts.
    """

    __slots__ = ("_sender", "address", "incarnation", "node", "path")

    def __init__(
        self, sender: Sender, *, address: str | None = None, path: str | None = None,
        node: str | None = None, incarnation: int | None = None,
    ) -> None:
        if (address is None) == (path is None):
            raise ValueError("an ActorRef has an address or a path, not both")
        self._sender = sender
        self.address = address
        self.path = path
        self.node = node
        self.incarnation = incarnation

    async def tell(self, message: Message) -> None:
        """Send ``message`` one way. Waits while the target's mailbox (or channel) is full.

        Raises :class:`ActorGone` or :class:`ActorNotFound` when the runtime knows the target
        cannot receive it; a message to an actor in another process that dies before reading
        it is lost silently, as in Erlang.
        """
        await self._sender.tell(self, message)

    @overload
    async def ask(self, message: Message) -> Message | None: ...

    @overload
    async def ask(self, message: Message, expect: type[M]) -> M: ...

    async def ask(self, message: Message, expect: type[M] | None = None) -> Message | None:
        """Send ``message`` and wait for the handler's reply.

        Raises :class:`RemoteError` if the handler raised, :class:`ActorGone` if the actor
        stopped or its process died first, :class:`ActorNotFound` for an unknown path. With
        ``expect``, a reply of another type is :class:`UnexpectedReply` (also a TypeError).
        Bound the wait with ``trio.fail_after``; cancelling an ask abandons its reply, not
        the request: once sent, it is delivered and handled all the same (as in Erlang), so
        a caller that gave up cannot tell whether it happened.
        """
        reply = await self._sender.ask(self, message)
        if expect is not None and not isinstance(reply, expect):
            raise UnexpectedReply(expect, reply)
        return reply

    async def map(self, messages: Iterable[Message], expect: type[M], *, limit: int = 64
                  ) -> list[M]:
        """Ask each of ``messages`` (up to ``limit`` at a time) and return the replies in
        the order of the messages, as ``multiprocessing.Pool.map`` does: to a pool's ref,
        the asks spread over its members. The first failure is raised, as ``ask`` raises
        it, and the asks still in flight are cancelled."""
        if limit < 1:
            raise ValueError("limit must be >= 1")
        items = list(messages)
        replies: list[M | None] = [None] * len(items)
        failed: list[BaseException] = []
        turns = iter(range(len(items)))

        async def asker(scope: trio.CancelScope) -> None:
            for index in turns:
                try:
                    replies[index] = await self.ask(items[index], expect)
                except Exception as exc:
                    failed.append(exc)
                    scope.cancel()
                    return

        async with trio.open_nursery() as nursery:
            for _ in range(min(limit, len(items))):
                nursery.start_soon(asker, nursery.cancel_scope)
        if failed:
            raise failed[0]
        return [reply for reply in replies if reply is not None]

    def wire(self) -> str:
        """The ref as it travels: ``node/id`` for an address, ``@path`` for a path, then
        ``@node#incarnation`` (``@node`` for a path) for an actor of another master."""
        local = self.address if self.address is not None else f"@{self.path}"
        if self.node is None:
            return local
        if self.incarnation is None:
            return f"{local}@{self.node}"
        return f"{local}@{self.node}#{self.incarnation}"

    def _serialize(self, info: SerializationInfo) -> str:
        context = info.context
        if self.node is None and isinstance(context, dict) and NODE_CONTEXT_KEY in context:
            # Leaving for another master: say which node this actor lives on.
            name, incarnation = context[NODE_CONTEXT_KEY]
            if self.address is not None:
                return f"{self.address}@{name}#{incarnation}"
            return f"@{self.path}@{name}"
        return self.wire()

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ActorRef) and other.wire() == self.wire()

    def __hash__(self) -> int:
        return hash(self.wire())

    def __repr__(self) -> str:
        where = "" if self.node is None else f", node={self.node!r}"
        if self.address is not None:
            return f"ActorRef(address={self.address!r}{where})"
        return f"ActorRef(path={self.path!r}{where})"

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: type[Any], handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.with_info_plain_validator_function(
            cls._validate,
            serialization=core_schema.plain_serializer_function_ser_schema(
                ActorRef._serialize, info_arg=True, when_used="always"
            ),
        )

    @classmethod
    def _validate(cls, value: Any, info: ValidationInfo) -> ActorRef:
        if isinstance(value, ActorRef):
            return value
        context = info.context
        sender = context.get(SENDER_CONTEXT_KEY) if isinstance(context, dict) else None
        if sender is None:
            raise ValueError("an ActorRef can only be decoded by the actor runtime")
        if not isinstance(value, str) or not value:
            raise ValueError("an ActorRef travels as a non-empty string")
        local, node, incarnation = split_node(value)
        if node is not None and isinstance(context, dict):
            own = context.get(NODE_CONTEXT_KEY)
            if own is not None and own[0] == node and incarnation in (None, own[1]):
                node = incarnation = None  # back home: an actor of this very master
        if local.startswith("@"):
            if not local[1:]:
                raise ValueError(f"malformed actor path {value!r}")
            return cls(sender, path=local[1:], node=node)
        node_id, sep, actor = local.partition("/")
        if not sep or not node_id or not actor.isdigit():
            raise ValueError(f"malformed actor address {value!r}")
        return cls(sender, address=local, node=node, incarnation=incarnation)


def split_node(wire: str) -> tuple[str, str | None, int | None]:
    """``(local part, node, incarnation)`` of a ref's wire form (ValueError if malformed).

    Paths and addresses never hold ``@`` (names may not), so the last one, past a path's
    leading one, starts the node."""
    at = wire.rfind("@")
    if at <= 0:
        return wire, None, None
    local, node = wire[:at], wire[at + 1:]
    name, sep, number = node.partition("#")
    if not name or (sep and not number.isdigit()):
        raise ValueError(f"malformed node in actor ref {wire!r}")
    return local, name, int(number) if sep else None
