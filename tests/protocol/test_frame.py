"""Frames: encoding, the header, and the sans-IO decoder."""

from __future__ import annotations

import itertools
import struct

import pydantic
import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol import (
    DEFAULT_MAX_FRAME_SIZE,
    HEADER_SIZE,
    MAX_FDS_PER_FRAME,
    DecodeError,
    Frame,
    FrameDecoder,
    FrameKind,
    FrameTooLarge,
    InvalidMessage,
    Message,
    ProtocolError,
    UnknownMessageType,
    decode_message,
    encode_frame,
    encode_message,
)

HEADER = struct.Struct("<IBBHHHQ")
U64_MAX = (1 << 64) - 1


def header(
    length: int,
    kind: int = FrameKind.TELL,
    nfds: int = 0,
    tag_len: int = 0,
    route_len: int = 0,
    reserved: int = 0,
    corr: int = 0,
) -> bytes:
    return HEADER.pack(length, kind, nfds, tag_len, route_len, reserved, corr)


class Scalars(Message):
    n: int
    s: str
    f: float = 0.0
    b: bool = False


class Lists(Message):
    numbers: list[int]
    words: list[str] = []


class Optionals(Message):
    maybe: int | None = None
    label: str | None = None


class Leaf(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(frozen=True, extra="forbid")
    value: int
    text: str


class Nested(Message, tag="tests.protocol.frame.nested"):
    leaf: Leaf
    leaves: list[Leaf] = []
    spare: Leaf | None = None
    by_name: dict[str, int] = {}


class Empty(Message):
    pass


texts = st.text(max_size=20)  # all of unicode but lone surrogates, which UTF-8 cannot carry
leaves = st.builds(Leaf, value=st.integers(), text=texts)
messages = st.one_of(
    st.builds(
        Scalars,
        n=st.integers(),
        s=texts,
        f=st.floats(allow_nan=False, allow_infinity=False),
        b=st.booleans(),
    ),
    st.builds(
        Lists, numbers=st.lists(st.integers(), max_size=5), words=st.lists(texts, max_size=5)
    ),
    st.builds(Optionals, maybe=st.none() | st.integers(), label=st.none() | texts),
    st.builds(
        Nested,
        leaf=leaves,
        leaves=st.lists(leaves, max_size=3),
        spare=st.none() | leaves,
        by_name=st.dictionaries(texts, st.integers(), max_size=3),
    ),
    st.builds(Empty),
)
envelopes = st.tuples(
    st.sampled_from(FrameKind), st.integers(0, U64_MAX), st.text(max_size=10), messages
)


def encode_all(sequence: list[tuple[FrameKind, int, str, Message]]) -> bytes:
    parts = []
    for kind, corr, route, message in sequence:
        data, fds = encode_message(kind, message, corr=corr, route=route)
        assert fds == []
        parts.append(data)
    return b"".join(parts)


def check_decoded(frames: list[Frame], sequence: list[tuple[FrameKind, int, str, Message]]):
    assert len(frames) == len(sequence)
    for frame, (kind, corr, route, message) in zip(frames, sequence, strict=True):
        assert frame.kind is kind
        assert frame.corr == corr
        assert frame.route == route
        assert frame.tag == message.message_tag
        assert frame.nfds == 0
        decoded = decode_message(frame)
        assert type(decoded) is type(message)
        assert decoded == message


# -- encoding -------------------------------------------------------------------------------


def test_header_is_20_bytes() -> None:
    assert HEADER_SIZE == 20
    data, fds = encode_message(FrameKind.TELL, Empty())
    assert fds == []
    tag = Empty.message_tag.encode()
    assert len(data) == HEADER_SIZE + len(tag) + len(b"{}")


def test_header_layout() -> None:
    message = Scalars(n=7, s="é")
    data, _ = encode_message(FrameKind.ASK, message, corr=0x0102030405060708, route="r/ö")
    length, kind, nfds, tag_len, route_len, reserved, corr = HEADER.unpack_from(data)
    tag = message.message_tag.encode()
    route = "r/ö".encode()
    body = data[HEADER_SIZE + len(tag) + len(route) :]
    assert length == len(data) - HEADER_SIZE == len(tag) + len(route) + len(body)
    assert kind == FrameKind.ASK
    assert nfds == 0
    assert tag_len == len(tag)
    assert route_len == len(route)
    assert reserved == 0
    assert corr == 0x0102030405060708
    assert data[HEADER_SIZE : HEADER_SIZE + tag_len] == tag
    assert data[HEADER_SIZE + tag_len : HEADER_SIZE + tag_len + route_len] == route
    assert Scalars.model_validate_json(body) == message


def test_round_trip() -> None:
    message = Nested(leaf=Leaf(value=-1, text="✓"), leaves=[Leaf(value=2, text="")])
    data, _ = encode_message(FrameKind.REPLY, message, corr=U64_MAX, route="a.b")
    decoder = FrameDecoder()
    decoder.feed(data)
    frame = decoder.next_frame()
    assert frame is not None
    assert decoder.next_frame() is None
    assert decoder.buffered == 0
    assert (frame.kind, frame.corr, frame.route, frame.tag) == (
        FrameKind.REPLY,
        U64_MAX,
        "a.b",
        "tests.protocol.frame.nested",
    )
    assert frame.fds == []
    assert decode_message(frame) == message
    assert "REPLY" in repr(frame)
    assert frame.encode() == data


def test_frame_encode_round_trip() -> None:
    frame = Frame(FrameKind.SYSTEM, 5, "some.tag", "route", b"\x00body", nfds=2)
    decoder = FrameDecoder()
    decoder.feed(frame.encode())
    [again] = decoder.frames()
    assert (again.kind, again.corr, again.tag, again.route, again.body, again.nfds) == (
        FrameKind.SYSTEM,
        5,
        "some.tag",
        "route",
        b"\x00body",
        2,
    )


def test_encode_message_refuses_a_frame_above_max_frame_size() -> None:
    message = Scalars(n=1, s="x" * 1000)
    data, _ = encode_message(FrameKind.TELL, message)
    size = len(data) - HEADER_SIZE
    # Exactly at the limit is fine...
    assert encode_message(FrameKind.TELL, message, max_frame_size=size)[0] == data
    # ...one byte less is refused, before anything is sent.
    with pytest.raises(FrameTooLarge) as info:
        encode_message(FrameKind.TELL, message, max_frame_size=size - 1)
    assert info.value.length == size
    assert info.value.limit == size - 1
    assert isinstance(info.value, ProtocolError)


def test_encode_message_counts_the_route_in_the_frame_size() -> None:
    data, _ = encode_message(FrameKind.TELL, Empty())
    size = len(data) - HEADER_SIZE
    with pytest.raises(FrameTooLarge):
        encode_message(FrameKind.TELL, Empty(), route="r", max_frame_size=size)


def test_encode_message_default_limit() -> None:
    with pytest.raises(FrameTooLarge) as info:
        encode_message(FrameKind.TELL, Scalars(n=1, s="x" * DEFAULT_MAX_FRAME_SIZE))
    assert info.value.limit == DEFAULT_MAX_FRAME_SIZE


@pytest.mark.parametrize("corr", [-1, U64_MAX + 1])
def test_encode_frame_checks_corr(corr: int) -> None:
    with pytest.raises(ValueError, match="correlation id"):
        encode_frame(FrameKind.TELL, b"t", b"{}", corr=corr)


def test_encode_frame_checks_nfds() -> None:
    encode_frame(FrameKind.TELL, b"t", b"{}", nfds=MAX_FDS_PER_FRAME)
    with pytest.raises(ValueError, match="at most"):
        encode_frame(FrameKind.TELL, b"t", b"{}", nfds=MAX_FDS_PER_FRAME + 1)


def test_encode_frame_checks_tag_and_route_length() -> None:
    with pytest.raises(ValueError, match="65535"):
        encode_frame(FrameKind.TELL, b"t" * 65536, b"{}")
    with pytest.raises(ValueError, match="65535"):
        encode_frame(FrameKind.TELL, b"t", b"{}", route=b"r" * 65536)


# -- decoding -------------------------------------------------------------------------------


@given(st.lists(envelopes, max_size=8), st.data())
def test_random_chunks_yield_the_messages_in_order(sequence, data) -> None:
    stream = encode_all(sequence)
    cuts = sorted(data.draw(st.sets(st.integers(0, len(stream)), max_size=20)))
    bounds = [0, *cuts, len(stream)]
    decoder = FrameDecoder()
    frames = []
    for start, end in itertools.pairwise(bounds):
        decoder.feed(stream[start:end])
        frames.extend(decoder.frames())
    assert decoder.buffered == 0
    check_decoded(frames, sequence)


def _as_tuples(frames: list[Frame]) -> list[tuple[object, ...]]:
    return [(f.kind, f.corr, f.tag, f.route, f.body, f.nfds, f.size) for f in frames]


@given(
    st.lists(envelopes, max_size=8),
    st.data(),
    st.sampled_from([b"", b"\xff" * 20, struct.pack("<IBBHHHQ", 1 << 30, 1, 0, 0, 0, 0, 0)]),
)
def test_frames_in_bulk_are_next_frame_one_by_one(sequence, data, tail: bytes) -> None:
    # frames() parses a read's frames in one loop: the same frames, the same errors, at the
    # same points, as next_frame() called until it returns None.
    stream = encode_all(sequence) + tail
    cuts = sorted(data.draw(st.sets(st.integers(0, len(stream)), max_size=6)))
    bulk, single = FrameDecoder(), FrameDecoder()
    for start, end in itertools.pairwise([0, *cuts, len(stream)]):
        bulk.feed(stream[start:end])
        single.feed(stream[start:end])
        one_by_one: list[Frame] = []
        single_error: type[Exception] | None = None
        try:
            while (frame := single.next_frame()) is not None:
                one_by_one.append(frame)
        except (DecodeError, FrameTooLarge) as exc:
            single_error = type(exc)
        in_bulk: list[Frame] = []
        bulk_error: type[Exception] | None = None
        try:
            in_bulk = bulk.frames()
            if single_error is not None and one_by_one:
                bulk.frames()  # the error comes once the frames before it are taken
        except (DecodeError, FrameTooLarge) as exc:
            bulk_error = type(exc)
        assert _as_tuples(in_bulk) == _as_tuples(one_by_one)
        assert bulk_error == single_error
        assert bulk.buffered == single.buffered
        if single_error is not None:
            return


@given(st.lists(envelopes, max_size=5))
def test_one_byte_chunks_yield_the_messages_in_order(sequence) -> None:
    stream = encode_all(sequence)
    decoder = FrameDecoder()
    frames = []
    for index in range(len(stream)):
        decoder.feed(stream[index : index + 1])
        frame = decoder.next_frame()
        if frame is not None:
            frames.append(frame)
        assert decoder.next_frame() is None
    assert decoder.buffered == 0
    check_decoded(frames, sequence)


@given(st.lists(envelopes, max_size=8))
def test_memoryview_and_bytearray_chunks(sequence) -> None:
    stream = encode_all(sequence)
    decoder = FrameDecoder()
    half = len(stream) // 2
    decoder.feed(bytearray(stream[:half]))
    decoder.feed(memoryview(stream)[half:])
    check_decoded(decoder.frames(), sequence)


def test_decoder_frees_consumed_bytes() -> None:
    frame = encode_frame(FrameKind.TELL, b"t", b"x" * 1000)
    decoder = FrameDecoder()
    for _ in range(1000):
        decoder.feed(frame + frame[:10])
        assert len(decoder.frames()) == 1
        assert decoder.buffered == 10
        decoder.feed(frame[10:])
        assert len(decoder.frames()) == 1
        assert decoder.buffered == 0
    # Consumed bytes do not pile up in the buffer.
    assert len(decoder._buf) <= 2 * 65536 + 2 * len(frame)


def test_partial_frame_is_buffered() -> None:
    data = encode_frame(FrameKind.TELL, b"t", b"{}")
    decoder = FrameDecoder()
    decoder.feed(data[:-1])
    assert decoder.next_frame() is None
    assert decoder.buffered == len(data) - 1
    decoder.feed(data[-1:])
    assert decoder.next_frame() is not None
    assert decoder.buffered == 0


def test_4gib_length_is_refused_from_the_header_alone() -> None:
    decoder = FrameDecoder()
    bad = header(0xFFFFFFFF)
    for index in range(HEADER_SIZE - 1):
        decoder.feed(bad[index : index + 1])
        assert decoder.next_frame() is None
    decoder.feed(bad[-1:])
    with pytest.raises(FrameTooLarge) as info:
        decoder.next_frame()
    assert info.value.length == 0xFFFFFFFF
    assert info.value.limit == DEFAULT_MAX_FRAME_SIZE
    # Nothing like the announced size was buffered: only the header itself.
    assert decoder.buffered == HEADER_SIZE
    assert len(decoder._buf) <= HEADER_SIZE


def test_length_above_a_custom_limit() -> None:
    decoder = FrameDecoder(max_frame_size=100)
    decoder.feed(encode_frame(FrameKind.TELL, b"t", b"x" * 99))  # length 100: fine
    assert decoder.next_frame() is not None
    decoder.feed(encode_frame(FrameKind.TELL, b"t", b"x" * 100))  # length 101
    with pytest.raises(FrameTooLarge) as info:
        decoder.next_frame()
    assert (info.value.length, info.value.limit) == (101, 100)


def test_zero_max_frame_size() -> None:
    decoder = FrameDecoder(max_frame_size=0)
    decoder.feed(header(0))
    frame = decoder.next_frame()
    assert frame is not None
    assert (frame.tag, frame.route, frame.body) == ("", "", b"")
    decoder.feed(header(1))
    with pytest.raises(FrameTooLarge):
        decoder.next_frame()


def test_negative_max_frame_size_is_refused() -> None:
    with pytest.raises(ValueError, match="max_frame_size"):
        FrameDecoder(max_frame_size=-1)


def test_errors_are_sticky() -> None:
    decoder = FrameDecoder()
    decoder.feed(header(0xFFFFFFFF))
    with pytest.raises(FrameTooLarge):
        decoder.next_frame()
    # The stream has lost its framing: valid bytes after the error do not help.
    decoder.feed(encode_frame(FrameKind.TELL, b"t", b"{}"))
    with pytest.raises(FrameTooLarge):
        decoder.next_frame()
    with pytest.raises(FrameTooLarge):
        decoder.frames()


@pytest.mark.parametrize("kind", [0, 6, 0x7F, 0xFF])
def test_unknown_kind_is_a_decode_error(kind: int) -> None:
    decoder = FrameDecoder()
    decoder.feed(header(2, kind=kind, tag_len=1) + b"t!")
    with pytest.raises(DecodeError, match=f"unknown frame kind {kind}"):
        decoder.next_frame()


def test_nonzero_reserved_is_a_decode_error() -> None:
    decoder = FrameDecoder()
    decoder.feed(header(2, tag_len=1, reserved=1) + b"t!")
    with pytest.raises(DecodeError, match="malformed"):
        decoder.next_frame()


def test_tag_and_route_longer_than_the_frame_is_a_decode_error() -> None:
    decoder = FrameDecoder()
    decoder.feed(header(3, tag_len=2, route_len=2) + b"abc")
    with pytest.raises(DecodeError, match="malformed"):
        decoder.next_frame()


@pytest.mark.parametrize(("tag", "route"), [(b"\xff", b""), (b"t", b"\xc3")])
def test_non_utf8_tag_or_route_is_a_decode_error(tag: bytes, route: bytes) -> None:
    decoder = FrameDecoder()
    decoder.feed(encode_frame(FrameKind.TELL, tag, b"{}", route=route))
    with pytest.raises(DecodeError, match="not UTF-8"):
        decoder.next_frame()
    with pytest.raises(DecodeError, match="not UTF-8"):
        decoder.next_frame()


def test_frames_before_a_bad_header_come_out_first() -> None:
    good = [encode_message(FrameKind.TELL, Scalars(n=i, s=str(i)), corr=i)[0] for i in range(3)]
    decoder = FrameDecoder()
    decoder.feed(b"".join(good) + header(0, kind=0))
    for i in range(3):
        frame = decoder.next_frame()
        assert frame is not None
        assert decode_message(frame) == Scalars(n=i, s=str(i))
    with pytest.raises(DecodeError):
        decoder.next_frame()


def test_frames_returns_what_came_before_a_bad_header() -> None:
    good = [encode_message(FrameKind.TELL, Scalars(n=i, s=str(i)), corr=i)[0] for i in range(3)]
    decoder = FrameDecoder()
    decoder.feed(b"".join(good) + header(0xFFFFFFFF))
    assert [frame.corr for frame in decoder.frames()] == [0, 1, 2]
    with pytest.raises(FrameTooLarge):
        decoder.frames()


@given(st.binary(max_size=200))
def test_garbage_raises_only_protocol_errors(garbage: bytes) -> None:
    decoder = FrameDecoder()
    decoder.feed(garbage)
    try:
        while decoder.next_frame() is not None:
            pass
    except (DecodeError, FrameTooLarge):
        pass


@given(st.binary(max_size=200), st.lists(envelopes, max_size=3))
def test_garbage_after_frames(garbage: bytes, sequence) -> None:
    decoder = FrameDecoder()
    decoder.feed(encode_all(sequence) + garbage)
    frames = []
    try:
        while (frame := decoder.next_frame()) is not None:
            frames.append(frame)
    except (DecodeError, FrameTooLarge):
        pass
    check_decoded(frames[: len(sequence)], sequence)


@given(st.binary(min_size=HEADER_SIZE, max_size=200), st.integers(0, 255))
def test_garbage_in_a_small_channel_raises_only_protocol_errors(garbage: bytes, limit: int):
    decoder = FrameDecoder(max_frame_size=limit)
    decoder.feed(garbage)
    try:
        frames = decoder.frames()
    except (DecodeError, FrameTooLarge):
        return
    # What is left is at most a header that passed the checks and part of its frame.
    assert decoder.buffered < HEADER_SIZE + limit
    for frame in frames:
        try:
            decode_message(frame)
        except DecodeError:
            pass


# -- decode_message -------------------------------------------------------------------------


def test_decode_message_of_an_unknown_tag() -> None:
    frame = Frame(FrameKind.TELL, 0, "no.such.tag", "", b"{}")
    with pytest.raises(UnknownMessageType):
        decode_message(frame)


def test_decode_message_of_an_invalid_body() -> None:
    frame = Frame(FrameKind.TELL, 0, Scalars.message_tag, "", b'{"n": "one", "s": "x"}')
    with pytest.raises(InvalidMessage, match="n:"):
        decode_message(frame)


def test_decode_message_passes_the_context() -> None:
    class Contextual(Message):
        n: int

        @pydantic.field_validator("n")
        @classmethod
        def _scale(cls, value: int, info: pydantic.ValidationInfo) -> int:
            assert isinstance(info.context, dict)
            return value * info.context["scale"]

    frame = Frame(FrameKind.TELL, 0, Contextual.message_tag, "", b'{"n": 2}')
    context = {"scale": 10}
    assert decode_message(frame, context) == Contextual.model_construct(n=20)
    assert context == {"scale": 10}  # the caller's dict is not modified
