"""The wire layer: typed messages, frames, fd passing and channels. Never imports ``actors``."""

from typing import Final

from ._channel import Channel as Channel
from ._channel import open_channel as open_channel
from ._errors import DecodeError as DecodeError
from ._errors import FrameTooLarge as FrameTooLarge
from ._errors import HandleError as HandleError
from ._errors import InvalidMessage as InvalidMessage
from ._errors import ProtocolError as ProtocolError
from ._errors import TruncatedHandles as TruncatedHandles
from ._errors import UnexpectedHandles as UnexpectedHandles
from ._errors import UnknownMessageType as UnknownMessageType
from ._errors import VersionMismatch as VersionMismatch
from ._frame import DEFAULT_MAX_FRAME_SIZE as DEFAULT_MAX_FRAME_SIZE
from ._frame import HEADER_SIZE as HEADER_SIZE
from ._frame import MAX_FDS_PER_FRAME as MAX_FDS_PER_FRAME
from ._frame import Frame as Frame
from ._frame import FrameDecoder as FrameDecoder
from ._frame import FrameKind as FrameKind
from ._frame import decode_message as decode_message
from ._frame import encode_frame as encode_frame
from ._frame import encode_message as encode_message
from ._handles import FdHandle as FdHandle
from ._handles import SocketHandle as SocketHandle
from ._message import Message as Message
from ._message import MessageRegistry as MessageRegistry
from ._message import default_tag as default_tag
from ._message import registry as registry

PROTOCOL_VERSION: Final = 1
"""Exchanged in every handshake; peers speaking another version refuse each other."""

__all__ = [
    "DEFAULT_MAX_FRAME_SIZE",
    "HEADER_SIZE",
    "MAX_FDS_PER_FRAME",
    "PROTOCOL_VERSION",
    "Channel",
    "DecodeError",
    "FdHandle",
    "Frame",
    "FrameDecoder",
    "FrameKind",
    "FrameTooLarge",
    "HandleError",
    "InvalidMessage",
    "Message",
    "MessageRegistry",
    "ProtocolError",
    "SocketHandle",
    "TruncatedHandles",
    "UnexpectedHandles",
    "UnknownMessageType",
    "VersionMismatch",
    "decode_message",
    "default_tag",
    "encode_frame",
    "encode_message",
    "open_channel",
    "registry",
]

# Public names print as ``protocol.FrameTooLarge``, not ``protocol._errors.FrameTooLarge``.
# Message keeps its module: pydantic resolves a model's annotations there.
for _name in __all__:
    _obj = globals()[_name]
    if getattr(_obj, "__module__", "").startswith("protocol._") and _obj is not Message:
        try:
            _obj.__module__ = __name__
        except (AttributeError, TypeError):
            pass
del _name, _obj
