"""``ActorRef``: the handle through which actors are told and asked."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol, TypeVar, overload

import trio
from pydantic import GetCoreSchemaHandler, ValidationInfo
from pydantic_core import core_schema

from protocol import Message

from ._errors import UnexpectedReply

__all__ = ["SENDER_CONTEXT_KEY", "ActorRef", "Sender"]

M = TypeVar("M", bound=Message)

SENDER_CONTEXT_KEY = "actors.sender"
"""Key of the receiving process's :class:`Sender` in the pydantic context of decoding."""


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
    """

    __slots__ = ("_sender", "address", "path")

    def __init__(
        self, sender: Sender, *, address: str | None = None, path: str | None = None
    ) -> None:
        if (address is None) == (path is None):
            raise ValueError("an ActorRef has an address or a path, not both")
        self._sender = sender
        self.address = address
        self.path = path

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
        """The ref as it travels: ``node/id`` for an address, ``@path`` for a path."""
        return self.address if self.address is not None else f"@{self.path}"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ActorRef) and other.wire() == self.wire()

    def __hash__(self) -> int:
        return hash(self.wire())

    def __repr__(self) -> str:
        if self.address is not None:
            return f"ActorRef(address={self.address!r})"
        return f"ActorRef(path={self.path!r})"

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: type[Any], handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.with_info_plain_validator_function(
            cls._validate,
            serialization=core_schema.plain_serializer_function_ser_schema(
                ActorRef.wire, when_used="always"
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
        if value.startswith("@"):
            return cls(sender, path=value[1:])
        node_id, sep, actor = value.partition("/")
        if not sep or not node_id or not actor.isdigit():
            raise ValueError(f"malformed actor address {value!r}")
        return cls(sender, address=value)
