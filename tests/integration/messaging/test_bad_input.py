"""A worker that writes bad bytes on its channel: the master closes that channel with a typed
error, the asks waiting on that worker fail, and everything else keeps working.

The misbehaving peer is a real worker process writing straight onto its channel's socket,
underneath the runtime (which would never produce such bytes itself).
"""

from __future__ import annotations

import os
import socket
import struct

import pytest
import trio

from actors import Actor, ActorGone, ActorRef, handler, open_system
from protocol import (
    DecodeError,
    FrameKind,
    FrameTooLarge,
    InvalidMessage,
    Message,
    ProtocolError,
    UnexpectedHandles,
    UnknownMessageType,
    encode_frame,
)
from tests.waiting import TIMEOUT


class Add(Message):
    a: int
    b: int


class Total(Message):
    value: int


class Misbehave(Message):
    kind: str
    target: ActorRef
    hang: bool = True  # then wait for whatever the master does about it


class Adder(Actor):
    @handler
    async def add(self, msg: Add) -> Total:
        return Total(value=msg.a + msg.b)


class Vandal(Adder):
    @handler
    async def misbehave(self, msg: Misbehave) -> None:
        node = self.ctx._cell.router.relay  # type: ignore[attr-defined]  # the raw channel, on purpose
        assert node.parent is not None
        fd = node.parent.channel.fileno()
        route = f"{msg.target.address}|{self.ctx.node}".encode()
        if msg.kind == "garbage":
            os.write(fd, b"\x00\x01garbage that is no frame at all\xff" * 4)
        elif msg.kind == "huge":
            os.write(fd, struct.pack("<IBBHHHQ", 0xFFFFFFFF, 1, 0, 0, 0, 0, 0))
        elif msg.kind == "unknown_tag":
            os.write(fd, encode_frame(FrameKind.TELL, b"nobody:Knows", b"{}", route=route))
        elif msg.kind == "wrong_field":
            body = b'{"a": "not a number", "b": 1}'
            os.write(fd, encode_frame(FrameKind.TELL, Add.message_tag.encode(), body, route=route))
        elif msg.kind == "truncated":
            frame = encode_frame(FrameKind.TELL, Add.message_tag.encode(), b'{"a":1,"b":2}',
                                 route=route)
            os.write(fd, frame[: len(frame) // 2])
            os._exit(3)
        elif msg.kind == "stray_fds":
            frame = encode_frame(FrameKind.TELL, Add.message_tag.encode(), b'{"a":1,"b":2}',
                                 route=route)
            read_end, write_end = os.pipe()
            with socket.socket(fileno=os.dup(fd)) as sock:
                socket.send_fds(sock, [frame], [read_end, write_end])
            os.close(read_end)
            os.close(write_end)
        if msg.hang:
            await trio.sleep_forever()


@pytest.mark.parametrize(
    ("kind", "error"),
    [
        ("garbage", ProtocolError),
        ("huge", FrameTooLarge),
        ("truncated", DecodeError),
        ("stray_fds", UnexpectedHandles),
    ],
)
async def test_bad_bytes_close_only_the_offending_channel(
    kind: str, error: type[ProtocolError]
) -> None:
    with trio.fail_after(TIMEOUT):
        async with open_system() as system:
            local = await system.spawn(Adder, name="local")
            good = await system.spawn(Adder, name="good", process=True)
            vandal = await system.spawn(Vandal, name="vandal", process=True)
            with pytest.raises(ActorGone) as info:
                await vandal.ask(Misbehave(kind=kind, target=local))
            assert isinstance(info.value.__cause__, error), repr(info.value.__cause__)
            if kind == "truncated":
                assert "truncated" in str(info.value.__cause__)
            # The master, its local actors and the other workers carry on.
            assert await local.ask(Add(a=1, b=2), Total) == Total(value=3)
            assert await good.ask(Add(a=2, b=2), Total) == Total(value=4)
            with pytest.raises(ActorGone):
                await vandal.ask(Add(a=1, b=1))
            assert "vandal" not in system.names()


@pytest.mark.parametrize(
    ("kind", "error"), [("unknown_tag", UnknownMessageType), ("wrong_field", InvalidMessage)]
)
async def test_a_well_framed_message_that_cannot_be_read_fails_alone(
    kind: str, error: type[ProtocolError], caplog: pytest.LogCaptureFixture
) -> None:
    # The stream is in step: only that message is refused (and logged); the worker that
    # sent it lives on, and so does its channel.
    with trio.fail_after(TIMEOUT):
        async with open_system() as system:
            local = await system.spawn(Adder, name="local")
            vandal = await system.spawn(Vandal, name="vandal", process=True)
            assert await vandal.ask(Misbehave(kind=kind, target=local, hang=False)) is None
            assert await vandal.ask(Add(a=1, b=1), Total) == Total(value=2)
            assert await local.ask(Add(a=1, b=2), Total) == Total(value=3)
            assert "vandal" in system.names()
    expected = "unknown message type" if error is UnknownMessageType else "invalid"
    assert "cannot take a message from node" in caplog.text
    assert expected in caplog.text
