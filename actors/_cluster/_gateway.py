"""Sends to other nodes from worker processes, which do not talk to Redis themselves.

A worker's outbox hands a send to a ref with a node to :class:`ViaMaster`, which asks the
master's :class:`ClusterGateway` (a runtime actor registered under ``GATEWAY_PATH``) to make
it: the message travels to the master as JSON, is validated there, and leaves through the
master's node. A typed failure (``NodeDown``, ``BrokerUnavailable``, ``ActorGone``...) comes
back as itself. The gateway serves one send at a time: a worker's tells keep their order,
and its asks to other nodes wait for each other there.
"""

from __future__ import annotations

from typing import Literal

from protocol import DecodeError, Message, registry

from .._base._actor import Actor, handler
from .._base._errors import (
    ActorError,
    ActorGone,
    ActorNotFound,
    BrokerUnavailable,
    NodeDown,
    RemoteError,
)
from .._base._ref import SENDER_CONTEXT_KEY, ActorRef, Sender
from .._messaging._outbox import RemoteSender
from ._wire import decode_body

__all__ = [
    "GATEWAY_PATH",
    "ClusterGateway",
    "Forward",
    "Forwarded",
    "MonitorRemote",
    "Monitored",
    "ViaMaster",
]

GATEWAY_PATH = "actors:cluster"
"""Where the master's gateway is registered (no user name can hold a ``:``-less clash)."""

ErrorKind = Literal["", "node_down", "broker", "gone", "not_found", "remote"]


class Forward(Message, tag="actors.cluster.Forward"):
    """Send ``tag``/``body`` (the message's JSON) to ``to``, a ref with a node."""

    to: ActorRef
    tag: str
    body: str
    ask: bool


class Forwarded(Message, tag="actors.cluster.Forwarded"):
    """What became of a Forward: the reply (``tag`` empty: None), or an error."""

    tag: str = ""
    body: str = ""
    error: ErrorKind = ""
    text: str = ""
    in_doubt: bool = False
    type_name: str = ""
    traceback: str = ""
    actor: str = ""


class MonitorRemote(Message, tag="actors.cluster.MonitorRemote"):
    """Have ``watcher`` (in a worker) watch ``target`` (on another node); ``id`` set:
    stop that monitor instead."""

    target: ActorRef | None = None
    watcher: ActorRef | None = None
    id: str = ""


class Monitored(Message, tag="actors.cluster.Monitored"):
    id: str


class ClusterGateway(Actor):
    """The master's actor that sends to other nodes for its worker processes."""

    def __init__(self, node: tuple[str, int], outbox: Sender, remote: RemoteSender) -> None:
        self._node = node
        self._outbox = outbox
        self._remote = remote

    @handler
    async def monitor(self, msg: MonitorRemote) -> Monitored:
        if msg.target is None or msg.watcher is None:
            await self._remote.demonitor(msg.id)
            return Monitored(id=msg.id)
        return Monitored(id=await self._remote.monitor(msg.target, msg.watcher))

    @handler
    async def forward(self, msg: Forward) -> Forwarded:
        try:
            message = decode_body(msg.tag, msg.body.encode(), self._outbox, self._node)
        except DecodeError as exc:
            return Forwarded(error="remote", text=str(exc), type_name=type(exc).__name__)
        try:
            if not msg.ask:
                await msg.to.tell(message)
                return Forwarded()
            reply = await msg.to.ask(message)
        except ActorError as exc:
            return _failure(exc)
        if reply is None:
            return Forwarded()
        return Forwarded(tag=reply.message_tag,
                         body=type(reply).__pydantic_serializer__.to_json(reply).decode())


def _failure(exc: ActorError) -> Forwarded:
    if isinstance(exc, NodeDown):
        return Forwarded(error="node_down", text=str(exc), in_doubt=exc.in_doubt)
    if isinstance(exc, ActorGone):
        return Forwarded(error="gone", text=str(exc), in_doubt=exc.in_doubt)
    if isinstance(exc, BrokerUnavailable):
        return Forwarded(error="broker", text=str(exc))
    if isinstance(exc, ActorNotFound):
        return Forwarded(error="not_found", text=str(exc))
    if isinstance(exc, RemoteError):
        return Forwarded(error="remote", text=exc.message, type_name=exc.type_name,
                         traceback=exc.traceback, actor=exc.actor)
    return Forwarded(error="remote", text=str(exc), type_name=type(exc).__qualname__)


class ViaMaster:
    """The sender of a worker process's refs with a node: through the master's gateway."""

    def __init__(self, outbox: Sender) -> None:
        self._outbox = outbox
        self._gateway = ActorRef(outbox, path=GATEWAY_PATH)

    async def tell(self, ref: ActorRef, message: Message) -> None:
        await self._forward(ref, message, ask=False)

    async def ask(self, ref: ActorRef, message: Message) -> Message | None:
        return await self._forward(ref, message, ask=True)

    async def monitor(self, target: ActorRef, watcher: ActorRef) -> str:
        answer = await self._gateway.ask(MonitorRemote(target=target, watcher=watcher),
                                         Monitored)
        return answer.id

    async def demonitor(self, id: str) -> None:
        await self._gateway.ask(MonitorRemote(id=id), Monitored)

    async def _forward(self, ref: ActorRef, message: Message, *, ask: bool) -> Message | None:
        body = type(message).__pydantic_serializer__.to_json(message).decode()
        try:
            answer = await self._gateway.ask(
                Forward(to=ref, tag=message.message_tag, body=body, ask=ask), Forwarded)
        except ActorNotFound:
            raise ActorNotFound(
                f"{ref!r} lives on node {ref.node!r}, another master, and this system's "
                "master is in no cluster (open_system(cluster=..., node=...))") from None
        if answer.error:
            raise _error(answer)
        if not answer.tag:
            return None
        return registry.decode(answer.tag, answer.body.encode(),
                               {SENDER_CONTEXT_KEY: self._outbox})


def _error(answer: Forwarded) -> ActorError:
    error: ActorError
    if answer.error == "node_down":
        error = NodeDown(answer.text)
        error.in_doubt = answer.in_doubt
    elif answer.error == "gone":
        error = ActorGone(answer.text)
        error.in_doubt = answer.in_doubt
    elif answer.error == "broker":
        error = BrokerUnavailable(answer.text)
    elif answer.error == "not_found":
        error = ActorNotFound(answer.text)
    else:
        error = RemoteError(answer.type_name, answer.text, answer.traceback, answer.actor)
    return error
