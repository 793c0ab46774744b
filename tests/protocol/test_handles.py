"""Message fields that carry file descriptors: FdHandle and SocketHandle."""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterator

import pydantic
import pytest

from protocol import (
    FdHandle,
    Frame,
    FrameDecoder,
    FrameKind,
    InvalidMessage,
    Message,
    SocketHandle,
    UnknownMessageType,
    decode_message,
    encode_message,
)
from tests.sockets import socketpair

pytestmark = pytest.mark.usefixtures("no_fd_leak")


class WithFd(Message):
    name: str
    fd: FdHandle


class WithSocket(Message):
    sock: SocketHandle


class TwoFds(Message):
    first: FdHandle
    second: FdHandle | None = None
    count: int = 0


class ManyFds(Message):
    fds: list[FdHandle]


class Plain(Message):
    n: int


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    r, w = os.pipe()
    yield r, w
    os.close(r)
    os.close(w)


@pytest.fixture
def socket_pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    a, b = socketpair()
    with a, b:
        yield a, b


def is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


def same_file(fd1: int, fd2: int) -> bool:
    s1, s2 = os.fstat(fd1), os.fstat(fd2)
    return (s1.st_dev, s1.st_ino) == (s2.st_dev, s2.st_ino)


def wire(data: bytes, fds: list[int]) -> Frame:
    """The frame a channel would hand out for ``data``: decoded, with copies of ``fds``."""
    decoder = FrameDecoder()
    decoder.feed(data)
    [frame] = decoder.frames()
    assert frame.nfds == len(fds)
    frame.fds = [os.dup(fd) for fd in fds]
    return frame


# -- encoding -------------------------------------------------------------------------------


def test_encode_collects_the_fd_and_writes_its_index(pipe) -> None:
    r, _ = pipe
    data, fds = encode_message(FrameKind.TELL, WithFd(name="p", fd=FdHandle(r)))
    assert fds == [r]
    decoder = FrameDecoder()
    decoder.feed(data)
    [frame] = decoder.frames()
    assert frame.nfds == 1
    assert json.loads(frame.body) == {"name": "p", "fd": 0}
    assert is_open(r)  # encoding does not take the descriptor


def test_encode_several_handles_in_field_order(pipe) -> None:
    r, w = pipe
    data, fds = encode_message(FrameKind.TELL, TwoFds(first=FdHandle(w), second=FdHandle(r)))
    assert fds == [w, r]
    decoder = FrameDecoder()
    decoder.feed(data)
    [frame] = decoder.frames()
    assert frame.nfds == 2
    assert json.loads(frame.body) == {"first": 0, "second": 1, "count": 0}


def test_encode_socket_handle(socket_pair) -> None:
    a, _ = socket_pair
    message = WithSocket(sock=SocketHandle.from_socket(a))
    data, fds = encode_message(FrameKind.TELL, message)
    assert fds == [a.fileno()]
    decoder = FrameDecoder()
    decoder.feed(data)
    [frame] = decoder.frames()
    assert json.loads(frame.body) == {"sock": 0}


def test_outside_the_wire_a_handle_shows_its_descriptor(pipe) -> None:
    r, _ = pipe
    handle = FdHandle(r)
    assert WithFd(name="x", fd=handle).model_dump() == {"name": "x", "fd": r}
    assert json.loads(WithFd(name="x", fd=handle).model_dump_json()) == {"name": "x", "fd": r}
    detached = FdHandle(r)
    message = WithFd(name="x", fd=detached)
    detached.detach()
    assert message.model_dump()["fd"] == -1


# -- decoding -------------------------------------------------------------------------------


def test_decode_restores_the_handle(pipe) -> None:
    r, w = pipe
    frame = wire(*encode_message(FrameKind.TELL, WithFd(name="p", fd=FdHandle(w))))
    given = frame.fds[0]
    message = decode_message(frame)
    assert isinstance(message, WithFd)
    assert message.name == "p"
    assert isinstance(message.fd, FdHandle)
    assert message.fd.fileno() == given
    assert given != w
    assert same_file(given, w)
    assert frame.fds == []  # the message owns the descriptor now
    with message.fd:
        os.write(message.fd.fileno(), b"via the received fd")
    assert message.fd.closed
    assert not is_open(given)
    assert os.read(r, 100) == b"via the received fd"


def test_decode_restores_a_list_of_handles(pipe) -> None:
    r, w = pipe
    frame = wire(*encode_message(FrameKind.TELL, ManyFds(fds=[FdHandle(r), FdHandle(w)])))
    given = list(frame.fds)
    message = decode_message(frame)
    assert isinstance(message, ManyFds)
    assert [handle.fileno() for handle in message.fds] == given
    for handle in message.fds:
        handle.close()


def test_unclaimed_fds_are_closed(pipe) -> None:
    r, w = pipe
    data, _ = encode_message(FrameKind.TELL, TwoFds(first=FdHandle(r)))
    decoder = FrameDecoder()
    decoder.feed(data)
    [frame] = decoder.frames()
    # The peer sent more fds than the message claims.
    frame.fds = [os.dup(r), os.dup(w), os.dup(w)]
    claimed, *stray = frame.fds
    message = decode_message(frame)
    assert isinstance(message, TwoFds)
    assert message.first.fileno() == claimed
    assert message.second is None
    for fd in stray:
        with pytest.raises(OSError, match="Bad file descriptor"):
            os.fstat(fd)
    assert is_open(claimed)
    message.first.close()


def test_fds_of_a_message_without_handles_are_closed(pipe) -> None:
    r, w = pipe
    frame = Frame(FrameKind.TELL, 0, Plain.message_tag, "", b'{"n": 1}')
    frame.fds = [os.dup(r), os.dup(w)]
    fds = list(frame.fds)
    assert decode_message(frame) == Plain(n=1)
    assert not any(is_open(fd) for fd in fds)


def test_invalid_message_closes_every_fd(pipe) -> None:
    r, w = pipe
    # The handle field is valid (and claimed), the other field is not.
    frame = Frame(FrameKind.TELL, 0, TwoFds.message_tag, "", b'{"first": 0, "count": "many"}')
    frame.fds = [os.dup(r), os.dup(w)]
    fds = list(frame.fds)
    with pytest.raises(InvalidMessage, match="count"):
        decode_message(frame)
    for fd in fds:
        with pytest.raises(OSError, match="Bad file descriptor"):
            os.fstat(fd)
    assert frame.fds == []


@pytest.mark.parametrize(
    ("body", "match"),
    [
        (b'{"first": 2}', "out of range"),
        (b'{"first": 0, "second": 0}', "claimed twice"),
        (b'{"first": "zero"}', "expected a FdHandle"),
        (b'{"first": -1}', "out of range"),
        (b"not json", "first|json|JSON"),
    ],
)
def test_bad_handle_index_is_invalid_and_closes_every_fd(pipe, body: bytes, match: str) -> None:
    r, w = pipe
    frame = Frame(FrameKind.TELL, 0, TwoFds.message_tag, "", body)
    frame.fds = [os.dup(r), os.dup(w)]
    fds = list(frame.fds)
    with pytest.raises(InvalidMessage, match=match):
        decode_message(frame)
    assert not any(is_open(fd) for fd in fds)


def test_unknown_tag_closes_every_fd(pipe) -> None:
    r, _ = pipe
    frame = Frame(FrameKind.TELL, 0, "no.such.tag", "", b"{}")
    frame.fds = [os.dup(r)]
    fd = frame.fds[0]
    with pytest.raises(UnknownMessageType):
        decode_message(frame)
    assert not is_open(fd)


def test_handle_index_without_fds_is_invalid() -> None:
    frame = Frame(FrameKind.TELL, 0, WithFd.message_tag, "", b'{"name": "n", "fd": 0}')
    with pytest.raises(InvalidMessage, match="fd"):
        decode_message(frame)


def test_an_int_is_not_a_handle_outside_the_wire() -> None:
    with pytest.raises(pydantic.ValidationError, match="expected a FdHandle"):
        WithFd(name="x", fd=3)  # type: ignore[arg-type]
    with pytest.raises(pydantic.ValidationError, match="expected a SocketHandle"):
        WithSocket(sock=FdHandle(3))  # type: ignore[arg-type]


# -- sockets --------------------------------------------------------------------------------


def test_socket_handle_into_socket_gives_a_working_socket(socket_pair) -> None:
    a, b = socket_pair
    frame = wire(*encode_message(FrameKind.TELL, WithSocket(sock=SocketHandle.from_socket(a))))
    given = frame.fds[0]
    message = decode_message(frame)
    assert isinstance(message, WithSocket)
    assert isinstance(message.sock, SocketHandle)
    assert message.sock.fileno() == given
    with message.sock.into_socket() as sock:
        assert message.sock.closed  # the socket owns the descriptor now
        assert sock.fileno() == given
        assert sock.family == socket.AF_UNIX
        assert sock.type == socket.SOCK_STREAM
        sock.sendall(b"ping")
        assert b.recv(4) == b"ping"
        b.sendall(b"pong")
        assert sock.recv(4) == b"pong"
    assert not is_open(given)
    # The original is untouched.
    a.sendall(b"still")
    assert b.recv(5) == b"still"


def test_socket_handle_from_a_trio_socket(socket_pair) -> None:
    import trio

    a, _ = socket_pair
    trio_sock = trio.socket.from_stdlib_socket(a)
    assert SocketHandle.from_socket(trio_sock).fileno() == a.fileno()


# -- the handle itself ----------------------------------------------------------------------


def test_handle_ownership(pipe) -> None:
    r, _ = pipe
    fd = os.dup(r)
    handle = FdHandle(fd)
    assert not handle.closed
    assert repr(handle) == f"FdHandle({fd})"
    assert handle == FdHandle(fd)
    assert handle != SocketHandle(fd)
    assert hash(handle) == hash(FdHandle(fd))
    assert handle.detach() == fd
    assert handle.closed
    assert repr(handle) == "FdHandle(closed)"
    with pytest.raises(ValueError, match="closed or detached"):
        handle.fileno()
    with pytest.raises(ValueError, match="closed or detached"):
        handle.detach()
    handle.close()  # nothing to close: no error
    assert is_open(fd)  # detaching gave it away
    with FdHandle(fd) as owner:
        assert owner.fileno() == fd
    assert not is_open(fd)
    owner.close()  # idempotent


def test_negative_fd_is_refused() -> None:
    with pytest.raises(ValueError, match="not a file descriptor"):
        FdHandle(-1)
