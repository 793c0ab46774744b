"""The outbox hands a send to a ref with a node to its ``remote`` sender, and to nothing
else; without one (a master in no cluster), the send fails with a typed error."""

from __future__ import annotations

import pytest
import trio

from actors import ActorNotFound, ActorRef
from actors._messaging._names import NameRegistry
from actors._messaging._router import Router
from protocol import Message


class Hello(Message, tag="tests.outbox_remote.Hello"):
    n: int


class Recorder:
    def __init__(self) -> None:
        self.sent: list[tuple[str, str, Message]] = []

    async def tell(self, ref: ActorRef, message: Message) -> None:
        self.sent.append(("tell", ref.wire(), message))

    async def ask(self, ref: ActorRef, message: Message) -> Message | None:
        self.sent.append(("ask", ref.wire(), message))
        return Hello(n=-1)


async def test_a_ref_with_a_node_goes_to_the_remote_sender() -> None:
    async with trio.open_nursery() as nursery:
        router = Router("0", nursery, names=NameRegistry())
        recorder = Recorder()
        router.outbox.remote = recorder
        far = ActorRef(router.outbox, path="echo", node="b")
        await far.tell(Hello(n=1))
        assert await far.ask(Hello(n=2)) == Hello(n=-1)
        assert recorder.sent == [("tell", "@echo@b", Hello(n=1)),
                                 ("ask", "@echo@b", Hello(n=2))]
        with pytest.raises(ActorNotFound):  # no node: the local paths, as ever
            await ActorRef(router.outbox, path="echo").tell(Hello(n=3))
        nursery.cancel_scope.cancel()


async def test_without_a_cluster_a_ref_with_a_node_is_a_typed_error() -> None:
    async with trio.open_nursery() as nursery:
        router = Router("0", nursery, names=NameRegistry())
        far = ActorRef(router.outbox, address="0/1", node="b", incarnation=3)
        with pytest.raises(ActorNotFound, match="another master"):
            await far.tell(Hello(n=1))
        with pytest.raises(ActorNotFound, match="another master"):
            await far.ask(Hello(n=1))
        nursery.cancel_scope.cancel()
