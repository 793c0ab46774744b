"""What a store is, to the state service: a :class:`Record` per key (version, tag and body of
its value, or a tombstone once deleted: versions keep increasing across deletes), the
:class:`Store` protocol, and what a store reports besides records (its comings and goings,
and a reset when it lost its data).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

import trio

from protocol import Message

__all__ = [
    "Disconnected",
    "EpochChanged",
    "Reconnected",
    "Record",
    "Reset",
    "Store",
    "StoreChange",
    "decide",
    "nothing",
]

log = logging.getLogger("actors.state")


class Record(Message, tag="actors.state.Record"):
    """One key's latest version: its value's tag and JSON body, or a deletion (no body)."""

    key: str
    version: int
    tag: str = ""
    body: bytes | None = None

    @property
    def deleted(self) -> bool:
        return self.body is None


@dataclass(frozen=True)
class Disconnected:
    """The store stopped answering (``error`` says how)."""

    error: str


@dataclass(frozen=True)
class Reconnected:
    """The store answers again; changes made meanwhile were not reported."""


@dataclass(frozen=True)
class Reset:
    """The store answers, but without the data it held: its epoch (a token kept in the
    store, made anew when it is missing) is ``epoch`` now. Every version known before is
    meaningless; versions start again from what the store holds."""

    epoch: str


StoreChange = Record | Disconnected | Reconnected | Reset


class EpochChanged(Exception):
    """A write found the store at another epoch (it lost its data): nothing was written.
    The store reports :class:`Reset` too; the write may be made again once the service
    has started over."""

    def __init__(self, epoch: str) -> None:
        super().__init__(f"the store is at epoch {epoch} now")
        self.epoch = epoch


class Store(Protocol):
    """What the state service needs of a store. Every method raises
    :class:`StoreUnavailable` when the store cannot be reached."""

    name: str
    """How the store is named in logs and events (no credentials)."""

    shared: bool
    """Whether other systems write to it too: then what this service holds may be behind
    it, and ``sync`` reads the store itself."""

    async def read(self, key: str) -> Record | None: ...

    async def read_prefix(self, prefix: str) -> list[Record]: ...

    async def write(
        self, key: str, tag: str, body: bytes | None, *, expect: int | None
    ) -> Record | None:
        """Write (``body`` None: delete) and return the record written.

        ``expect``: None writes unconditionally; 0 only if the key has no value; a version
        only if the key has a value at that version. Returns None when ``expect`` did not
        hold, or for a delete of a key that has no value.
        """
        ...

    def changes(self) -> AsyncIterator[StoreChange]:
        """Writes made by others (Redis) and the store's comings and goings."""
        ...

    async def check(self) -> None:
        """Raise :class:`EpochChanged` if the store lost its data since it was last seen
        (a store that cannot lose it alone, as memory or SQLite, never does)."""
        ...


def decide(current: Record | None, key: str, tag: str, body: bytes | None,
            expect: int | None) -> Record | None:
    """The record a write makes of ``current``, or None if it makes none."""
    has_value = current is not None and not current.deleted
    if expect is not None:
        if expect == 0 and has_value:
            return None
        if expect > 0 and (not has_value or current is None or current.version != expect):
            return None
    if body is None and not has_value:
        return None  # deleting what is not there
    version = (current.version if current is not None else 0) + 1
    return Record(key=key, version=version, tag=tag if body is not None else "", body=body)


async def nothing() -> AsyncIterator[StoreChange]:
    """The changes of a store only this master writes to: none, ever."""
    never, nothing = trio.open_memory_channel[StoreChange](0)
    async with never, nothing:
        async for change in nothing:
            yield change


