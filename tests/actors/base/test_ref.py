"""ActorRef's wire form, with and without a node of a cluster (no event loop)."""

from __future__ import annotations

import pytest

from actors import ActorRef
from actors._base._ref import NODE_CONTEXT_KEY, SENDER_CONTEXT_KEY, split_node
from protocol import Message, registry


class Carry(Message, tag="tests.ref.Carry"):
    ref: ActorRef


class _Sender:
    async def tell(self, ref: ActorRef, message: Message) -> None: ...

    async def ask(self, ref: ActorRef, message: Message) -> Message | None:
        return None


SENDER = _Sender()


def decode(body: bytes, node: tuple[str, int] | None = None) -> ActorRef:
    context: dict[str, object] = {SENDER_CONTEXT_KEY: SENDER}
    if node is not None:
        context[NODE_CONTEXT_KEY] = node
    message = registry.decode(Carry.message_tag, body, context)
    assert isinstance(message, Carry)
    return message.ref


def test_a_local_ref_leaving_for_another_node_names_its_node() -> None:
    address = Carry(ref=ActorRef(SENDER, address="0.1/5"))
    path = Carry(ref=ActorRef(SENDER, path="root/pool"))
    assert address.model_dump_json(context={NODE_CONTEXT_KEY: ("a", 7)}) == \
        '{"ref":"0.1/5@a#7"}'
    assert path.model_dump_json(context={NODE_CONTEXT_KEY: ("a", 7)}) == \
        '{"ref":"@root/pool@a"}'
    assert address.model_dump_json() == '{"ref":"0.1/5"}'  # within the system: as before


def test_a_ref_arriving_on_another_node_keeps_its_node() -> None:
    ref = decode(b'{"ref":"0.1/5@a#7"}', node=("b", 9))
    assert (ref.address, ref.node, ref.incarnation) == ("0.1/5", "a", 7)
    assert ref.wire() == "0.1/5@a#7"
    ref = decode(b'{"ref":"@root/pool@a"}', node=("b", 9))
    assert (ref.path, ref.node, ref.incarnation) == ("root/pool", "a", None)


def test_a_ref_coming_home_is_local_again_unless_of_an_earlier_incarnation() -> None:
    home = decode(b'{"ref":"0.1/5@a#7"}', node=("a", 7))
    assert (home.address, home.node) == ("0.1/5", None)
    assert decode(b'{"ref":"@root/pool@a"}', node=("a", 7)).node is None
    earlier = decode(b'{"ref":"0.1/5@a#6"}', node=("a", 7))
    assert (earlier.node, earlier.incarnation) == ("a", 6)  # sending to it: ActorGone


def test_refs_with_a_node_compare_by_node_too() -> None:
    assert ActorRef(SENDER, path="x", node="a") != ActorRef(SENDER, path="x")
    assert ActorRef(SENDER, path="x", node="a") == ActorRef(SENDER, path="x", node="a")


@pytest.mark.parametrize("wire", ["0.1/5@", "0.1/5@a#", "0.1/5@a#x", "@root@#1"])
def test_a_malformed_node_is_refused(wire: str) -> None:
    with pytest.raises(ValueError, match="malformed"):
        split_node(wire)


def test_split_node() -> None:
    assert split_node("@root/x") == ("@root/x", None, None)
    assert split_node("0/1") == ("0/1", None, None)
    assert split_node("@root/x@b") == ("@root/x", "b", None)
    assert split_node("0/1@b#12") == ("0/1", "b", 12)
