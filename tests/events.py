"""Reading lifecycle events in tests."""

from __future__ import annotations

from typing import TypeVar

import trio

from actors import Event

E = TypeVar("E", bound=Event)


def received(events: trio.MemoryReceiveChannel[Event]) -> list[Event]:
    """The events already delivered to ``events`` (without waiting)."""
    found = []
    while True:
        try:
            found.append(events.receive_nowait())
        except (trio.WouldBlock, trio.EndOfChannel):
            return found


async def next_event(events: trio.MemoryReceiveChannel[Event], kind: type[E], path: str) -> E:
    """Wait for the next event of type ``kind`` about ``path``."""
    async for event in events:
        if isinstance(event, kind) and event.path == path:
            return event
    raise AssertionError("the events ended")
