"""The default store: a dict in the master (lost when it ends).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import trio

from ._store import Record, StoreChange, decide, nothing

__all__ = [
    "MemoryStore",
]

class MemoryStore:
    """The default store: a dict in the master. Lost when the master ends."""

    name = "memory"
    shared = False

    def __init__(self) -> None:
        self._records: dict[str, Record] = {}

    async def read(self, key: str) -> Record | None:
        await trio.lowlevel.checkpoint()
        return self._records.get(key)

    async def read_prefix(self, prefix: str) -> list[Record]:
        await trio.lowlevel.checkpoint()
        return [r for k, r in self._records.items() if k.startswith(prefix)]

    async def write(
        self, key: str, tag: str, body: bytes | None, *, expect: int | None
    ) -> Record | None:
        await trio.lowlevel.checkpoint()
        record = decide(self._records.get(key), key, tag, body, expect)
        if record is not None:
            self._records[key] = record
        return record

    def changes(self) -> AsyncIterator[StoreChange]:
        return nothing()  # nobody else writes here

    async def check(self) -> None:
        await trio.lowlevel.checkpoint()


