"""What crosses between nodes, and the membership's view, without Redis or an event loop."""

from __future__ import annotations

from typing import Any

import pytest

from actors import ActorRef
from actors._cluster._membership import Membership
from actors._cluster._wire import (
    Entry,
    Keys,
    decode_body,
    encode_body,
    pack,
    unpack,
    validate_node_name,
)
from protocol import Message


class Job(Message, tag="tests.cluster_wire.Job"):
    n: int
    back: ActorRef
    data: bytes = b""


class _Sender:
    async def tell(self, ref: ActorRef, message: Message) -> None: ...

    async def ask(self, ref: ActorRef, message: Message) -> Message | None:
        return None


def test_an_entry_round_trips_whatever_its_body_holds() -> None:
    entry = Entry("ask", "@root/pool", 12, "a", 7, 3, "tests.x", b'{"a":"\\n"}\n\x00\xff')
    assert unpack(pack(entry)) == entry


@pytest.mark.parametrize("data", [
    b"", b"no header", b"[1,2]\n", b'["nope","","0","a",1,1,""]\n',
                                  b'["tell","",0,"a",1,1]\n', b"\xff\n"])
def test_what_another_program_wrote_is_refused(data: bytes) -> None:
    with pytest.raises(ValueError, match="header"):
        unpack(data)


def test_a_message_leaves_naming_its_node_and_comes_home_local() -> None:
    sender = _Sender()
    job = Job(n=1, back=ActorRef(sender, address="0.2/9"), data=b"\x00\x01")
    body = encode_body(job, ("a", 5))
    there = decode_body(Job.message_tag, body, sender, ("b", 8))
    assert isinstance(there, Job)
    assert (there.back.node, there.back.incarnation, there.data) == ("a", 5, b"\x00\x01")
    home = decode_body(Job.message_tag, encode_body(there, ("b", 8)), sender, ("a", 5))
    assert isinstance(home, Job)
    assert home.back == ActorRef(sender, address="0.2/9")


@pytest.mark.parametrize("name", ["", "a b", "a/b", "a@b", "a#1", "x" * 65])
def test_node_names_are_checked(name: str) -> None:
    with pytest.raises(ValueError, match="invalid node name"):
        validate_node_name(name)


def test_the_view_says_who_joined_and_who_left() -> None:
    class _Broker:
        class client:  # what registering scripts needs
            @staticmethod
            def register_script(script: str) -> Any:
                return None

    view = Membership(_Broker(), Keys("p"), "a", 1, ttl=1.0)  # type: ignore[arg-type]
    change = view.adopt({"a": 1, "b": 2})
    assert (change.joined, change.left) == ([("b", 2)], [])
    change = view.adopt({"a": 1, "b": 3, "c": 1})  # b restarted: it left, and joined anew
    assert (change.joined, change.left) == ([("b", 3), ("c", 1)], [("b", 2)])
    change = view.adopt({"a": 1})
    assert (change.joined, sorted(change.left)) == ([], [("b", 3), ("c", 1)])
    assert view.every == 1.0 / 8
