"""Message fields that carry file descriptors.

A field typed :class:`FdHandle` or :class:`SocketHandle` does not travel in the JSON body:
the encoder collects the descriptor into the frame's list of fds (sent out of band with
``SCM_RIGHTS``) and writes its index in that list instead; the decoder puts the received
descriptor back in its place.

Ownership: sending a handle never closes the sender's descriptor (the kernel gives the peer
its own copy); close it once it is no longer needed. A received handle owns its descriptor:
take it with :meth:`FdHandle.detach` or :meth:`SocketHandle.into_socket`, or close it.
"""

from __future__ import annotations

import os
import socket
from typing import Any, Self

from pydantic import GetCoreSchemaHandler, SerializationInfo, ValidationInfo
from pydantic_core import core_schema

__all__ = ["CLAIMED_KEY", "HANDLES_KEY", "FdHandle", "SocketHandle"]

HANDLES_KEY = "handles"
"""Key of the list of fds in the pydantic context used to encode and decode a message."""
CLAIMED_KEY = "claimed"
"""Key of the set of indices into that list that decoded handles took ownership of."""


class FdHandle:
    """A file descriptor sent along with a message."""

    __slots__ = ("_fd",)

    def __init__(self, fd: int) -> None:
        if fd < 0:
            raise ValueError(f"not a file descriptor: {fd}")
        self._fd: int | None = fd

    def fileno(self) -> int:
        """The descriptor; raises ValueError once detached or closed."""
        if self._fd is None:
            raise ValueError("handle is closed or detached")
        return self._fd

    @property
    def closed(self) -> bool:
        return self._fd is None

    def detach(self) -> int:
        """Give up ownership: return the descriptor, which the caller must close."""
        fd = self.fileno()
        self._fd = None
        return fd

    def close(self) -> None:
        """Close the descriptor (idempotent)."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({'closed' if self._fd is None else self._fd})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, FdHandle) and type(other) is type(self) and other._fd == self._fd

    def __hash__(self) -> int:
        return hash((type(self), self._fd))

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: type[Any], handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.with_info_plain_validator_function(
            cls._validate,
            serialization=core_schema.plain_serializer_function_ser_schema(
                cls._serialize, info_arg=True, when_used="always"
            ),
        )

    @classmethod
    def _validate(cls, value: Any, info: ValidationInfo) -> FdHandle:
        if isinstance(value, cls):
            return value
        context = info.context
        if isinstance(value, int) and isinstance(context, dict) and HANDLES_KEY in context:
            handles: list[int] = context[HANDLES_KEY]
            if not 0 <= value < len(handles):
                raise ValueError(
                    f"handle index {value} out of range: the frame carried {len(handles)} fds"
                )
            claimed: set[int] = context.setdefault(CLAIMED_KEY, set())
            if value in claimed:
                raise ValueError(f"handle index {value} is claimed twice")
            claimed.add(value)
            return cls(handles[value])
        raise ValueError(f"expected a {cls.__name__}, got {type(value).__name__}")

    def _serialize(self, info: SerializationInfo) -> int:
        context = info.context
        if isinstance(context, dict) and HANDLES_KEY in context:
            handles: list[int] = context[HANDLES_KEY]
            handles.append(self.fileno())
            return len(handles) - 1
        # Outside the wire (logging, model_dump) a handle shows its descriptor number.
        return self.fileno() if self._fd is not None else -1


class SocketHandle(FdHandle):
    """A socket sent along with a message (a listening socket, an accepted connection)."""

    __slots__ = ()

    @classmethod
    def from_socket(cls, sock: socket.socket | Any) -> SocketHandle:
        """Refer to ``sock`` (a stdlib or trio socket) without taking ownership of it."""
        return cls(sock.fileno())

    def into_socket(self) -> socket.socket:
        """Take ownership of the descriptor as a stdlib socket (family and type detected)."""
        return socket.socket(fileno=self.detach())
