"""Errors of the wire layer.

Every failure to read or write the wire is a :class:`ProtocolError`::

    ProtocolError                  the root: catch this to handle any wire failure
    ├── FrameTooLarge              a header announced more bytes than the channel accepts
    ├── DecodeError                bytes that are not a valid frame or message
    │   ├── UnknownMessageType     a well-formed frame whose tag no Message class claims
    │   └── InvalidMessage         a known tag whose body fails the Message's validation
    ├── HandleError                file descriptors that do not match the frames
    │   ├── TruncatedHandles       the kernel cut ancillary data, or a frame's fds never came
    │   └── UnexpectedHandles      fds arrived that no frame claims
    └── VersionMismatch            the peer speaks another protocol version

A channel that raises any of these (but :class:`UnknownMessageType` and
:class:`InvalidMessage`, which leave the stream in step) is closed, and every file descriptor
it had received and not handed out is closed with it.
"""

from __future__ import annotations

__all__ = [
    "DecodeError",
    "FrameTooLarge",
    "HandleError",
    "InvalidMessage",
    "ProtocolError",
    "TruncatedHandles",
    "UnexpectedHandles",
    "UnknownMessageType",
    "VersionMismatch",
]


class ProtocolError(Exception):
    """The peer sent something the wire protocol does not allow."""


class FrameTooLarge(ProtocolError):
    """A frame header announced a length above the channel's maximum frame size."""

    def __init__(self, length: int, limit: int) -> None:
        super().__init__(
            f"frame of {length} bytes exceeds the maximum frame size of {limit} bytes "
            "(raise max_frame_size on both ends if such messages are intended)"
        )
        self.length = length
        self.limit = limit


class DecodeError(ProtocolError):
    """Bytes that do not form a valid frame or message."""


class UnknownMessageType(DecodeError):
    """A frame's tag is not registered by any imported Message class."""

    def __init__(self, tag: str) -> None:
        super().__init__(
            f"unknown message type {tag!r}: no Message subclass with this tag is imported "
            "in this process"
        )
        self.tag = tag


class InvalidMessage(DecodeError):
    """A message body failed validation against its Message class."""

    def __init__(self, tag: str, detail: str) -> None:
        super().__init__(f"invalid {tag!r} message: {detail}")
        self.tag = tag
        self.detail = detail


class HandleError(ProtocolError):
    """File descriptors received do not match what the frames announce."""


class TruncatedHandles(HandleError):
    """Ancillary data was truncated, or a frame announced fds that never arrived."""


class UnexpectedHandles(HandleError):
    """File descriptors arrived that no frame announced."""


class VersionMismatch(ProtocolError):
    """The peer speaks another version of the wire protocol."""

    def __init__(self, ours: int, theirs: int) -> None:
        super().__init__(f"protocol version mismatch: we speak {ours}, the peer speaks {theirs}")
        self.ours = ours
        self.theirs = theirs
