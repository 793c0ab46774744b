"""Frames: the fixed binary header, encoding, and a sans-IO decoder.

A frame on the wire is::

    header (20 bytes, little endian)
        u32  length      bytes after the header: len(tag) + len(route) + len(body)
        u8   kind        FrameKind
        u8   nfds        file descriptors sent with the frame (SCM_RIGHTS)
        u16  tag_len
        u16  route_len
        u16  reserved    zero
        u64  corr        correlation id: pairs an ASK with its REPLY or ERROR
    tag      UTF-8, the registered Message tag
    route    UTF-8, addressing owned by the layer above (opaque here)
    body     JSON

``length`` is checked against the maximum frame size before a byte of the body is buffered.
"""

from __future__ import annotations

import enum
import os
import struct
from typing import Any, Final

from ._errors import DecodeError, FrameTooLarge, TruncatedHandles
from ._handles import CLAIMED_KEY, HANDLES_KEY
from ._message import Message, registry

__all__ = [
    "DEFAULT_MAX_FRAME_SIZE",
    "HEADER_SIZE",
    "MAX_FDS_PER_FRAME",
    "Frame",
    "FrameDecoder",
    "FrameKind",
    "decode_message",
    "encode_frame",
    "encode_message",
]

DEFAULT_MAX_FRAME_SIZE: Final = 16 * 1024 * 1024
MAX_FDS_PER_FRAME: Final = 253  # SCM_MAX_FD: the kernel refuses more in one sendmsg

_HEADER: Final = struct.Struct("<IBBHHHQ")
_SMALL_PARTIAL: Final = 64 * 1024
_HEAD_CACHE: Final = 256
HEADER_SIZE: Final = _HEADER.size
_U64_MAX: Final = (1 << 64) - 1


class FrameKind(enum.IntEnum):
    """What a frame is for; the actor layer gives each its meaning."""

    TELL = 1
    ASK = 2
    REPLY = 3
    ERROR = 4
    SYSTEM = 5


_KINDS: Final = {int(kind): kind for kind in FrameKind}


class Frame:
    """One decoded frame. ``fds`` is filled in by the channel that received it.

    ``size`` is the frame's length on the wire, header included. A frame holding fewer
    ``fds`` than its ``nfds`` lost some to the kernel on the way in (the receiver was out of
    file descriptors): decoding it raises :class:`TruncatedHandles`.
    """

    __slots__ = ("body", "corr", "fds", "kind", "nfds", "route", "size", "tag")

    def __init__(
        self,
        kind: FrameKind,
        corr: int,
        tag: str,
        route: str,
        body: bytes,
        nfds: int = 0,
        fds: list[int] | None = None,
        size: int = 0,
    ) -> None:
        self.kind = kind
        self.corr = corr
        self.tag = tag
        self.route = route
        self.body = body
        self.nfds = nfds
        self.fds: list[int] = [] if fds is None else fds
        self.size = size or HEADER_SIZE + len(tag) + len(route) + len(body)

    def close_fds(self) -> None:
        """Close the fds the frame still holds (a frame that is dropped owns them)."""
        fds, self.fds = self.fds, []
        for fd in fds:
            _close_quietly(fd)

    def encode(self) -> bytes:
        """The frame's bytes (its fds travel beside them)."""
        return encode_frame(
            self.kind, self.tag.encode(), self.body, corr=self.corr,
            route=self.route.encode(), nfds=self.nfds,
        )

    def __repr__(self) -> str:
        return (
            f"Frame({self.kind.name}, corr={self.corr}, tag={self.tag!r}, route={self.route!r}, "
            f"body={len(self.body)} bytes, nfds={self.nfds})"
        )


def encode_frame(
    kind: FrameKind,
    tag: bytes,
    body: bytes,
    *,
    corr: int = 0,
    route: bytes = b"",
    nfds: int = 0,
) -> bytes:
    """Build a frame from already-encoded parts."""
    if not 0 <= corr <= _U64_MAX:
        raise ValueError(f"correlation id out of range: {corr}")
    if nfds > MAX_FDS_PER_FRAME:
        raise ValueError(f"a frame carries at most {MAX_FDS_PER_FRAME} fds, not {nfds}")
    if len(tag) > 0xFFFF or len(route) > 0xFFFF:
        raise ValueError("tag and route are limited to 65535 bytes each")
    length = len(tag) + len(route) + len(body)
    if length > 0xFFFFFFFF:
        raise FrameTooLarge(length, 0xFFFFFFFF)
    return b"".join(
        (_HEADER.pack(length, kind, nfds, len(tag), len(route), 0, corr), tag, route, body)
    )


def encode_message(
    kind: FrameKind,
    message: Message,
    *,
    corr: int = 0,
    route: str = "",
    max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
) -> tuple[bytes, list[int]]:
    """Encode ``message`` as one frame; returns its bytes and the fds to send with them.

    A message larger than ``max_frame_size`` is refused here, where the caller can still act
    on it, rather than by the peer's decoder.
    """
    fds: list[int] = []
    body = type(message).__pydantic_serializer__.to_json(message, context={HANDLES_KEY: fds})
    tag = message.message_tag.encode()
    route_bytes = route.encode()
    length = len(tag) + len(route_bytes) + len(body)
    if length > max_frame_size:
        raise FrameTooLarge(length, max_frame_size)
    return encode_frame(kind, tag, body, corr=corr, route=route_bytes, nfds=len(fds)), fds


def decode_message(frame: Frame, context: dict[str, Any] | None = None) -> Message:
    """Validate a frame's body as its registered Message class.

    The message takes ownership of the frame's fds that its handle fields claim; any fd it
    does not claim, and every fd when decoding fails, is closed here. ``context`` is passed
    to pydantic validators (it is not modified).
    """
    fds = frame.fds
    if len(fds) < frame.nfds:
        frame.close_fds()
        raise TruncatedHandles(
            f"{frame.nfds - len(fds)} of the {frame.nfds} fds sent with a {frame.tag!r} "
            "message were dropped by the kernel (is the receiver out of file descriptors?)"
        )
    if not fds:
        return registry.decode(frame.tag, frame.body, context)
    frame.fds = []
    ctx: dict[str, Any] = {} if context is None else dict(context)
    ctx[HANDLES_KEY] = fds
    claimed: set[int] = set()
    try:
        message = registry.decode(frame.tag, frame.body, ctx)
        claimed = ctx.get(CLAIMED_KEY, claimed)
        return message
    finally:
        for index, fd in enumerate(fds):
            if index not in claimed:
                _close_quietly(fd)


def _close_quietly(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass


class FrameDecoder:
    """Sans-IO decoder: feed it bytes, take complete frames out.

    ``feed`` only buffers; ``next_frame`` returns the next complete frame or None. A bad
    header raises a :class:`ProtocolError` from ``next_frame`` after every frame before it
    was returned, so nothing that arrived intact is lost. After an error the decoder is
    unusable (the stream has lost its framing).
    """

    def __init__(self, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE) -> None:
        if max_frame_size < 0:
            raise ValueError("max_frame_size must be >= 0")
        self.max_frame_size = max_frame_size
        # What was fed and not yet returned starts at self._pos. A read that ends on a frame
        # boundary is kept as the bytes object it came in (no copy); only a partial frame is
        # accumulated in a bytearray.
        self._buf: bytes | bytearray = b""
        self._pos = 0
        self._failed: DecodeError | FrameTooLarge | None = None
        # Decoded (tag, route) by their bytes: the same few pairs recur on a channel.
        self._heads: dict[bytes, tuple[str, str]] = {}

    @property
    def buffered(self) -> int:
        """Bytes received that belong to a frame not yet complete."""
        return len(self._buf) - self._pos

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        if self._pos >= len(self._buf):
            self._buf = data if isinstance(data, bytes) else bytes(data)
            self._pos = 0
            return
        pending = len(self._buf) - self._pos
        if pending <= _SMALL_PARTIAL and not isinstance(self._buf, bytearray):
            # A small partial frame: one copy into a new bytes object keeps every later
            # slice a single copy (slices of a bytearray need a second one).
            self._buf = b"".join((memoryview(self._buf)[self._pos :], data))
            self._pos = 0
            return
        if isinstance(self._buf, bytearray):
            if self._pos:
                del self._buf[: self._pos]
        else:
            # A large frame arriving in pieces: accumulate in place (no quadratic copying).
            self._buf = bytearray(memoryview(self._buf)[self._pos :])
        self._pos = 0
        self._buf += data

    def next_frame(self) -> Frame | None:
        if self._failed is not None:
            raise self._failed
        buf = self._buf
        pos = self._pos
        if len(buf) - pos < HEADER_SIZE:
            return None
        length, kind, nfds, tag_len, route_len, reserved, corr = _HEADER.unpack_from(buf, pos)
        error: DecodeError | FrameTooLarge | None = None
        if length > self.max_frame_size:
            error = FrameTooLarge(length, self.max_frame_size)
        elif kind not in _KINDS:
            error = DecodeError(f"unknown frame kind {kind} (garbage on the channel?)")
        elif reserved != 0 or tag_len + route_len > length:
            error = DecodeError("malformed frame header (garbage on the channel?)")
        if error is not None:
            self._failed = error
            raise error
        end = pos + HEADER_SIZE + length
        if len(buf) < end:
            return None
        start = pos + HEADER_SIZE
        split = start + tag_len
        body_start = split + route_len
        head = bytes(buf[start:body_start])
        names = self._heads.get(head)
        if names is None:
            try:
                names = (str(head[:tag_len], "utf-8"), str(head[tag_len:], "utf-8"))
            except UnicodeDecodeError as exc:
                self._failed = DecodeError(f"frame tag or route is not UTF-8: {exc}")
                raise self._failed from exc
            if len(self._heads) >= _HEAD_CACHE:
                self._heads.clear()
            self._heads[head] = names
        tag, route = names
        body = buf[body_start:end]
        self._pos = end
        return Frame(
            _KINDS[kind], corr, tag, route, body if type(body) is bytes else bytes(body), nfds,
            size=HEADER_SIZE + length,
        )

    def frames(self) -> list[Frame]:
        """Every complete frame buffered now.

        A bad header raises here only once the frames before it were returned (by this call
        or an earlier one): they are already taken out of the decoder and would be lost.
        """
        # next_frame's work in one loop, for all the frames of a read (a channel's read
        # often holds hundreds): the lookups and the call are paid once per read, and each
        # Frame is filled in without a call to its __init__.
        if self._failed is not None:
            raise self._failed
        out: list[Frame] = []
        buf = self._buf
        pos = self._pos
        available = len(buf)
        unpack = _HEADER.unpack_from
        heads = self._heads
        limit = self.max_frame_size
        kinds = _KINDS
        new_frame = Frame.__new__
        append = out.append
        try:
            while available - pos >= HEADER_SIZE:
                length, kind, nfds, tag_len, route_len, reserved, corr = unpack(buf, pos)
                if (length > limit or kind not in kinds or reserved != 0
                        or tag_len + route_len > length):
                    self._pos = pos
                    self.next_frame()  # raises the header's error (and keeps it)
                end = pos + HEADER_SIZE + length
                if available < end:
                    break
                start = pos + HEADER_SIZE
                body_start = start + tag_len + route_len
                head = buf[start:body_start]
                names = heads.get(head if type(head) is bytes else bytes(head))
                if names is None:
                    self._pos = pos
                    frame = self.next_frame()  # decodes and caches the names, or raises
                    assert frame is not None
                    append(frame)
                    pos = end
                    continue
                frame = new_frame(Frame)
                frame.kind = kinds[kind]
                frame.corr = corr
                frame.tag, frame.route = names
                body = buf[body_start:end]
                frame.body = body if type(body) is bytes else bytes(body)
                frame.nfds = nfds
                frame.fds = []
                frame.size = HEADER_SIZE + length
                append(frame)
                pos = end
        except (DecodeError, FrameTooLarge):
            if not out:
                raise
            # The error is kept in self._failed: the next call raises it.
            return out
        self._pos = pos
        return out

