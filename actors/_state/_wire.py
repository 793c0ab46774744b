"""What replicas and the master's state service say to each other, and the pages it is said
in: nothing sent is larger than a frame, whatever the data.
"""

from __future__ import annotations

import bisect
import logging
from collections.abc import Iterable, Iterator
from typing import Literal, TypeVar

from protocol import Message

from ._store import Record

__all__ = [
    "ENVELOPE",
    "TOO_LARGE",
    "Failed",
    "Page",
    "ReadKey",
    "Records",
    "Resubscribe",
    "Resync",
    "Sync",
    "WatchPrefix",
    "Write",
    "fit",
    "page_after",
    "page_budget",
    "pages",
    "travel_size",
]

log = logging.getLogger("actors.state")

M = TypeVar("M", bound=Message)

_WATCH_BUFFER = 1024  # changes a watcher may fall behind before it is resynced
_PUSH_BUFFER = 4096  # records queued for one process before it is resynced instead
ENVELOPE = 16384  # a frame's bytes that are not records: header, route, tag, JSON around them
TOO_LARGE = "actors.state.TooLarge"
"""The tag of a record that stands for one too large to travel in this system's frames
(another system with a larger frame limit wrote it): reading it is InvalidStoredValue."""


def page_budget(max_frame_size: int) -> int:
    """The bytes of records one frame may carry (what a value may take, too)."""
    return max(max_frame_size - ENVELOPE, max_frame_size // 2)


def travel_size(record: Record) -> int:
    """An upper bound of the bytes ``record`` takes in a frame's JSON (body as base64; a tag
    escaped at worst; keys have nothing to escape)."""
    body = 0 if record.body is None else (len(record.body) + 2) // 3 * 4
    return 96 + len(record.key) + 6 * len(record.tag) + body


def fit(record: Record, budget: int) -> Record:
    """``record``, or a stand-in with its key and version if it cannot travel at all."""
    if travel_size(record) <= budget:
        return record
    log.error("the value of %r (version %d) is too large for this system's frames: its "
              "readers get InvalidStoredValue", record.key, record.version)
    return Record(key=record.key, version=record.version, tag=TOO_LARGE, body=b"")


def pages(records: Iterable[Record], budget: int) -> Iterator[list[Record]]:
    """``records`` in lists that each fit in a frame (at least one list, maybe empty)."""
    page: list[Record] = []
    size = 0
    for record in records:
        record = fit(record, budget)
        took = travel_size(record)
        if page and size + took > budget:
            yield page
            page, size = [], 0
        page.append(record)
        size += took
    yield page


def page_after(records: list[Record], after: str | None, budget: int
                ) -> tuple[list[Record], str | None]:
    """The page of ``records`` (sorted by key) that follows the key ``after``, and the key
    to ask the next one after (None: this was the last)."""
    keys = [r.key for r in records]
    start = 0 if after is None else bisect.bisect_right(keys, after)
    page = next(pages(records[start:], budget))
    if start + len(page) >= len(records):
        return page, None
    return page, page[-1].key


# -- what replicas and the service say to each other -----------------------------------------


class ReadKey(Message, tag="actors.state.ReadKey"):
    """Subscribe ``replica`` to ``key``; answered with the key's records."""

    key: str
    replica: str


class WatchPrefix(Message, tag="actors.state.WatchPrefix"):
    """Subscribe ``replica`` to every key under ``prefix`` (when ``after`` is None); answered
    with a Page of their records, the page after the key ``after`` otherwise."""

    prefix: str
    replica: str
    after: str | None = None


class Write(Message, tag="actors.state.Write"):
    """Write (``body`` None: delete) with ``expect`` as :meth:`Store.write`."""

    key: str
    tag: str
    body: bytes | None
    expect: int | None


class Resubscribe(Message, tag="actors.state.Resubscribe"):
    """``replica`` holds these keys and prefixes: subscribe it to any the service lost (it
    is then resynced). Part of a sync."""

    replica: str
    keys: list[str] = []
    prefixes: list[str] = []


class Sync(Message, tag="actors.state.Sync"):
    """Answered (in pages: ``after`` as for WatchPrefix) once everything the store had when
    it was asked is in the answer."""

    replica: str
    after: str | None = None


class Records(Message, tag="actors.state.Records"):
    """Records (an answer, or a push); ``written``: a write's own record (None if it did
    not happen)."""

    records: list[Record] = []
    written: Record | None = None


class Page(Message, tag="actors.state.Page"):
    """One page of an answer; ``after`` is the key to ask the next page after (None: the
    last page)."""

    records: list[Record]
    after: str | None = None


class Resync(Message, tag="actors.state.Resync"):
    """To a replica that may have missed changes: the current records of its keys and
    prefixes (watchers of those prefixes get a StateResynced marker first). Sent in parts:
    ``more`` on all but the last. ``reset``: the store lost its data, and what the replica
    held before is meaningless (versions started again)."""

    prefixes: list[str]
    records: list[Record]
    more: bool = False
    reset: bool = False


class Failed(Message, tag="actors.state.Failed"):
    """A state request failed: ``kind`` names the StateError to raise."""

    kind: Literal["unavailable", "invalid"]
    message: str


