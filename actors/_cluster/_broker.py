"""``Broker``: the one Redis connection (pool) of a node, and whether it answers.

Every command of the cluster goes through ``call``, bounded by the node's timeout: a failure
is :class:`BrokerUnavailable`, and marks the broker down (``lost`` wakes whoever fails the
sends in flight); the membership loop marks it up again when a round succeeds.
"""

from __future__ import annotations

import logging
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import trio

from .._base._errors import BrokerUnavailable

__all__ = ["Broker", "Cleanup", "check_cluster_url", "open_broker", "redacted"]

log = logging.getLogger("actors.cluster")

T = TypeVar("T")


def redacted(url: str) -> str:
    """``url`` without its password, for messages and logs."""
    parsed = urllib.parse.urlsplit(url)
    host = parsed.hostname or "localhost"
    return f"{parsed.scheme}://{host}:{parsed.port or 6379}{parsed.path or '/0'}"


class Broker:
    """The cluster's Redis as one node uses it (``client``: a coredis client)."""

    def __init__(self, client: Any, url: str, timeout: float,
                 outage: tuple[type[BaseException], ...]) -> None:
        self.client = client
        self._url = url
        self.name = redacted(url)
        self.timeout = timeout
        self.up = True
        self.lost = trio.Event()  # set when it goes down; a new one once it is back
        self.back = trio.Event()  # set when it is back; a new one once it goes down
        self.outage = outage  # what a failing Redis raises
        self.refused: tuple[type[BaseException], ...] = ()  # what an error reply raises

    async def call(self, what: str, request: Awaitable[T], *, wait: float = 0.0,
                   probe: bool = False) -> T:
        """``await request`` within the timeout (plus ``wait``, for a blocking read); while
        the broker is down, only a ``probe`` (the heartbeat) is tried."""
        if not self.up and not probe:
            close = getattr(request, "close", None)
            if close is not None:
                close()  # a coroutine never awaited would warn
            raise BrokerUnavailable(f"the cluster's Redis {self.name} is unreachable")
        try:
            with trio.fail_after(self.timeout + wait):
                return await request
        except trio.TooSlowError:
            error = BrokerUnavailable(
                f"the cluster's Redis {self.name} did not answer {what} within "
                f"{self.timeout} s")
            self.failed(str(error))
            raise error from None
        except self.refused as exc:  # Redis answered: it is up, this command failed
            raise BrokerUnavailable(
                f"the cluster's Redis {self.name} refused {what}: {exc}") from exc
        except self.outage as exc:
            self.failed(f"{what}: {exc}")
            raise BrokerUnavailable(
                f"the cluster's Redis {self.name} failed {what}: {exc}") from exc

    def connect(self) -> Any:
        """A client of its own, for ``async with`` (the node's last words)."""
        import coredis

        return coredis.Redis.from_url(self._url, connect_timeout=self.timeout,
                                      decode_responses=False)

    def failed(self, why: str) -> None:
        if self.up:
            self.up = False
            log.error("the cluster's Redis %s is unreachable (%s): sends to other nodes "
                      "fail until it is back", self.name, why)
            self.lost.set()
            self.back = trio.Event()

    def recovered(self) -> None:
        if not self.up:
            self.up = True
            log.warning("the cluster's Redis %s is back", self.name)
            self.back.set()
            self.lost = trio.Event()


_CLEANUP_BATCH = 256
_CLEANUP_GATHER = 0.02


class Cleanup:
    """Stream entries read and taken, deleted (and acknowledged) by a task of their own, so
    that a reading loop waits for nothing but its next read. What fails is tried again
    once the broker is back: an entry left behind would count against the bound."""

    def __init__(self, broker: Broker, what: str,
                 delete: Callable[[list[bytes]], Awaitable[object]]) -> None:
        self._broker = broker
        self._what = what
        self._delete = delete
        self._ids: list[bytes] = []
        self._more = trio.Event()

    def add(self, ids: list[bytes]) -> None:
        self._ids += ids
        self._more.set()

    async def run(self) -> None:
        while True:
            await self._more.wait()
            if len(self._ids) < _CLEANUP_BATCH:
                # A few at a time would cost a command per message, on the CPU the
                # messages need: let them gather a moment (the bound counts them meanwhile).
                await trio.sleep(_CLEANUP_GATHER)
            self._more = trio.Event()
            ids, self._ids = self._ids, []
            try:
                await self._broker.call(self._what, self._delete(ids))
            except BrokerUnavailable:
                self._ids[:0] = ids
                await self._broker.back.wait()
                self._more.set()


@asynccontextmanager
async def open_broker(url: str, call_timeout: float) -> AsyncIterator[Broker]:
    import anyio  # coredis's own: its connections fail with anyio's errors
    import coredis  # here: only a master in a cluster needs it (check_cluster_url)
    import coredis.exceptions

    client = coredis.Redis.from_url(url, connect_timeout=call_timeout, stream_timeout=None,
                                    decode_responses=False)
    outage = (OSError, trio.BrokenResourceError, trio.ClosedResourceError,
              anyio.BrokenResourceError, anyio.ClosedResourceError, anyio.EndOfStream,
              coredis.exceptions.RedisError)
    async with client:
        broker = Broker(client, url, call_timeout, outage)
        broker.refused = (coredis.exceptions.ResponseError,
                          coredis.exceptions.StreamConsumerError)
        yield broker


def check_cluster_url(url: str) -> None:
    """ValueError if ``url`` names no Redis; ImportError if coredis is missing."""
    if not isinstance(url, str):
        raise TypeError(f"cluster must be a Redis URL (str), not {type(url).__name__}")
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme not in ("redis", "rediss") or not parsed.hostname:
        raise ValueError(f"a cluster is a Redis URL: redis://host:port/db or "
                         f"rediss://..., not {redacted(url) if parsed.hostname else url!r}")
    try:
        import coredis  # noqa: F401  (only a master in a cluster needs it)
    except ImportError as exc:
        raise ImportError(
            "a cluster needs coredis: pip install 'trio-actors[redis]'") from exc
