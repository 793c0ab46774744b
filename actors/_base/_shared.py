"""Shared state as interfaces and plain data: what ``system.state`` and ``ctx.state`` are.

The implementation (replicas, the service in the master, the stores) is ``_state`` and
``_stores``; it is declared here, low, so that the actor context can name its type.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from protocol import Message

from ._errors import InvalidKey

__all__ = [
    "KEY_MAX_BYTES",
    "Entry",
    "State",
    "StateChanged",
    "StateResynced",
    "Watch",
    "check_key",
]

M = TypeVar("M", bound=Message)
M_co = TypeVar("M_co", bound=Message, covariant=True)

KEY_MAX_BYTES = 512
_KEY = re.compile(r"[A-Za-z0-9._:/@+=-]+")


def check_key(key: object) -> str:
    """``key`` if it is a valid state key, else :class:`InvalidKey` saying why.

    Keys are 1 to 512 bytes of ASCII letters, digits and ``. _ : / @ + = -``; a ``/``
    separates the parts that ``watch`` prefixes usually follow (``"config/app"``).
    """
    if not isinstance(key, str):
        raise InvalidKey(f"a state key is a str, not {type(key).__name__}")
    if not key:
        raise InvalidKey("a state key cannot be empty")
    if len(key.encode()) > KEY_MAX_BYTES:
        raise InvalidKey(f"a state key is at most {KEY_MAX_BYTES} bytes, not {len(key)}")
    if not _KEY.fullmatch(key):
        raise InvalidKey(
            f"invalid state key {key!r}: keys use letters, digits and . _ : / @ + = -"
        )
    return key


@dataclass(frozen=True)
class Entry(Generic[M_co]):
    """A value and the version it was written at."""

    value: M_co
    version: int


@dataclass(frozen=True)
class StateChanged:
    """``key`` changed: it is ``value`` at ``version`` now (None: it was deleted)."""

    key: str
    version: int
    value: Message | None


@dataclass(frozen=True)
class StateResynced:
    """This watcher fell behind (or the store was unreachable): changes may have been
    missed, and the :class:`StateChanged` that follow are the current value of each key
    under the prefix. Nothing is silently missed: after the marker, the watcher is up to
    date again."""

    prefix: str


Watch = AsyncIterator[StateChanged | StateResynced]


class State(Protocol):
    """Typed shared state: ``system.state`` in the master, ``self.ctx.state`` in an actor.

    Values are Messages, stored with their tag; versions are integers increasing per key
    (across deletes). Reads come from this process's replica: the first read of a key (or a
    watch of a prefix) subscribes the process, and changes are pushed to it from then on.
    """

    async def put(self, key: str, value: Message) -> int:
        """Write ``value`` under ``key``; the version written."""
        ...

    async def get(self, key: str, kind: type[M]) -> M | None:
        """The value under ``key`` (a ``kind``), or None if there is none."""
        ...

    async def entry(self, key: str, kind: type[M]) -> Entry[M] | None:
        """The value under ``key`` and its version, or None if there is none."""
        ...

    async def compare_and_set(self, key: str, value: Message, *, version: int) -> int | None:
        """Write ``value`` only if ``key`` is at ``version`` (0: only if absent); the version
        written, or None if it lost to another write."""
        ...

    async def delete(self, key: str) -> int | None:
        """Delete ``key``; the version of the deletion, or None if it was absent."""
        ...

    def watch(self, prefix: str) -> AbstractAsyncContextManager[Watch]:
        """Every change under ``prefix``, in version order per key (see StateResynced)."""
        ...

    async def sync(self) -> None:
        """Return once this process's replica is at least as new as the store was when
        ``sync`` was called."""
        ...
