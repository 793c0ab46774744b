"""Shared state in Redis (through coredis): several masters, several hosts.
"""

from __future__ import annotations

import json
import logging
import math
import secrets
import urllib.parse
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio

from .._base._errors import StoreUnavailable
from ._store import Disconnected, EpochChanged, Reconnected, Record, Reset, StoreChange

__all__ = [
    "RedisStore",
]

log = logging.getLogger("actors.state")

# (1/0), channel, key, the epoch the writer knows. -1: the store is at another epoch (it lost
# its data since the writer last looked): nothing is written.
_WRITE = """
if redis.call('GET', KEYS[2]) ~= ARGV[7] then return -1 end
local current = tonumber(redis.call('HGET', KEYS[1], 'v') or '0')
local has_value = redis.call('HEXISTS', KEYS[1], 'b') == 1
local expect = tonumber(ARGV[1])
if expect == 0 and has_value then return 0 end
if expect > 0 and (not has_value or current ~= expect) then return 0 end
if ARGV[4] == '1' and not has_value then return 0 end
local version = current + 1
if ARGV[4] == '1' then
  redis.call('HSET', KEYS[1], 'v', version)
  redis.call('HDEL', KEYS[1], 't', 'b')
  redis.call('PUBLISH', ARGV[5], cjson.encode({k = ARGV[6], v = version}))
else
  redis.call('HSET', KEYS[1], 'v', version, 't', ARGV[2], 'b', ARGV[3])
  redis.call('PUBLISH', ARGV[5], cjson.encode({k = ARGV[6], v = version, t = ARGV[2],
                                               b = ARGV[3]}))
end
return version
"""


class RedisStore:
    """Shared state in Redis (``redis://`` or ``rediss://host:port/db``), shared by every
    system that uses that Redis with the same key prefix.

    One connection for commands and one subscription per master. Every write is one Lua
    script: the value and its version change atomically, and the change is published.
    A liveness check (a PING, and our own heartbeat coming back through the
    subscription) notices an outage within ``check_every`` seconds; the store then reports
    :class:`Disconnected`, keeps trying, and reports :class:`Reconnected` once both are
    back, so that the service can bring every replica up to date.
    """

    def __init__(self, url: str, *, timeout: float, check_every: float = 0.5) -> None:
        parsed = urllib.parse.urlsplit(url)
        query = urllib.parse.parse_qs(parsed.query)
        prefix = query.pop("prefix", ["trio-actors"])[0]
        self._url = urllib.parse.urlunsplit(
            parsed._replace(query=urllib.parse.urlencode(query, doseq=True))
        )
        host = parsed.hostname or "localhost"
        self.name = f"{parsed.scheme}://{host}:{parsed.port or 6379}{parsed.path or '/0'}"
        self.shared = True  # several masters, on several hosts
        self._prefix = f"{prefix}:state:"
        self._channel = f"{prefix}:state-changes"
        self._epoch_key = f"{prefix}:state-epoch"
        self._epoch: str | None = None  # the epoch this store last saw
        self._timeout = timeout
        self._check_every = check_every
        self._client: Any = None
        self._script: Any = None
        self._up = False
        self._outage: tuple[type[BaseException], ...] = (OSError, trio.TooSlowError)
        self._send, self._receive = trio.open_memory_channel[StoreChange](math.inf)

    def _key(self, key: str) -> str:
        return self._prefix + key

    @asynccontextmanager
    async def running(self) -> AsyncIterator[RedisStore]:
        import coredis  # here: only a system that uses Redis needs it (check_store_url)
        import coredis.exceptions

        client = coredis.Redis.from_url(
            self._url, connect_timeout=self._timeout, stream_timeout=self._timeout,
        )
        async with client:
            self._client = client
            self._script = client.register_script(_WRITE)
            self._outage = (OSError, trio.TooSlowError, trio.BrokenResourceError,
                            StoreUnavailable, coredis.exceptions.RedisError)
            async with trio.open_nursery() as nursery:
                await nursery.start(self._keep_watch)  # connected, or known to be down
                try:
                    yield self
                finally:
                    nursery.cancel_scope.cancel()
                    self._client = None

    async def _call(self, what: str, coroutine: Any) -> Any:
        if not self._up:
            close = getattr(coroutine, "close", None)
            if close is not None:
                close()  # a coroutine never awaited would warn
            raise StoreUnavailable(f"the store {self.name} is unreachable")
        try:
            with trio.fail_after(self._timeout):
                return await coroutine
        except trio.TooSlowError:
            raise StoreUnavailable(
                f"the store {self.name} did not answer {what} within {self._timeout} s"
            ) from None
        except self._outage as exc:
            raise StoreUnavailable(f"the store {self.name} failed {what}: {exc}") from exc

    def _record(self, key: str, fields: dict[Any, Any] | None) -> Record | None:
        if not fields:
            return None
        values = {(k.decode() if isinstance(k, bytes) else k): v for k, v in fields.items()}
        tag = values.get("t", b"")
        return Record(
            key=key, version=int(values["v"]),
            tag=tag.decode() if isinstance(tag, bytes) else str(tag),
            body=values.get("b"),
        )

    async def read(self, key: str) -> Record | None:
        fields = await self._call("a read", self._client.hgetall(self._key(key)))
        return self._record(key, fields)

    async def read_prefix(self, prefix: str) -> list[Record]:
        async def scan() -> list[Record]:
            found = []
            async for name in self._client.scan_iter(match=self._key(prefix) + "*"):
                full = name.decode() if isinstance(name, bytes) else name
                key = full[len(self._prefix):]
                record = self._record(key, await self._client.hgetall(full))
                if record is not None:
                    found.append(record)
            return found

        result: list[Record] = await self._call("a read", scan())
        return result

    async def write(
        self, key: str, tag: str, body: bytes | None, *, expect: int | None
    ) -> Record | None:
        version = await self._call("a write", self._script(
            keys=[self._key(key), self._epoch_key],
            args=[-1 if expect is None else expect, tag, body if body is not None else b"",
                  1 if body is None else 0, self._channel, key, self._epoch or ""],
        ))
        if version is not None and int(version) < 0:
            await self.check()  # it changed: reported, and raised as EpochChanged
            raise EpochChanged(self._epoch or "")  # changed back meanwhile: still not written
        if not version:
            return None
        return Record(key=key, version=int(version), tag=tag if body is not None else "",
                      body=body)

    async def changes(self) -> AsyncIterator[StoreChange]:
        async for change in self._receive:
            yield change

    async def check(self) -> None:
        epoch = await self._call("a read", self._current_epoch(self._client))
        if self._adopt(epoch):
            raise EpochChanged(epoch)

    async def _current_epoch(self, client: Any) -> str:
        """The store's epoch, made now if it has none (a new or emptied store): one token
        wins among the systems that find it missing at once."""
        found = await client.get(self._epoch_key)
        if found is None:
            from coredis.tokens import PureToken

            await client.set(self._epoch_key, secrets.token_hex(8), condition=PureToken.NX)
            found = await client.get(self._epoch_key)
        return found.decode() if isinstance(found, bytes) else str(found)

    def _adopt(self, epoch: str, *, report: bool = True) -> bool:
        """Take ``epoch`` as the store's; True if it changed (then Reset is reported, unless
        the caller reports it later)."""
        if epoch == self._epoch:
            return False
        known, self._epoch = self._epoch, epoch
        if known is None:
            return False  # the first look: nothing was known before
        log.error("the store %s is at a new epoch (%s, was %s): it lost its data", self.name,
                  epoch, known)
        if report:
            self._send.send_nowait(Reset(epoch))
        return True

    async def _keep_watch(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Follow the subscription while the store is up; notice outages; reconnect."""
        down_since: float | None = None
        first = [task_status]
        while True:
            error = "the subscription ended"
            try:
                await self._subscribed(down_since, first)
            except* self._outage as group:
                first_error = group.exceptions[0]
                while isinstance(first_error, BaseExceptionGroup):
                    first_error = first_error.exceptions[0]
                error = str(first_error) or type(first_error).__name__
            if self._up or down_since is None:
                self._up = False
                down_since = trio.current_time()
                log.error("the store %s is unreachable: %s", self.name, error)
                self._send.send_nowait(Disconnected(error))
            if first:
                first.pop().started()
            await trio.sleep(self._check_every)

    async def _subscribed(
        self, down_since: float | None, first: list[trio.TaskStatus[None]]
    ) -> None:
        client = self._client
        if not self._up:
            await self._probe()  # is anything listening, before the client tries again?
        with trio.fail_after(self._timeout):
            await client.ping()
            reset = self._adopt(await self._current_epoch(client), report=False)
        async with client.pubsub(channels=[self._channel], ignore_subscribe_messages=True
                                 ) as pubsub, trio.open_nursery() as nursery:
            heard = trio.Event()
            heartbeat = f"heartbeat:{secrets.token_hex(8)}"  # unique across processes
            nursery.start_soon(self._check_alive, client, heartbeat, lambda: heard)
            if not self._up:
                self._up = True
                if reset:  # back, but not as it was: a Reset says it all
                    self._send.send_nowait(Reset(self._epoch or ""))
                elif down_since is not None:
                    self._send.send_nowait(Reconnected())
            if first:
                first.pop().started()
            async for message in pubsub:
                data = message.get("data")
                if isinstance(data, bytes):
                    data = data.decode()
                if data == heartbeat:
                    heard.set()
                    heard = trio.Event()
                    continue
                if isinstance(data, str) and data.startswith("heartbeat:"):
                    continue  # another system's, on this Redis and prefix: no change
                self._send.send_nowait(self._published(str(data)))

    async def _probe(self) -> None:
        """Connect and PING by hand: raises OSError or TooSlowError while Redis is down."""
        parsed = urllib.parse.urlsplit(self._url)
        with trio.fail_after(self._timeout):
            stream = await trio.open_tcp_stream(parsed.hostname or "localhost",
                                                parsed.port or 6379)
            async with stream:
                await stream.send_all(b"PING\r\n")
                answer = await stream.receive_some(64)
        if not answer:
            raise OSError("the connection closed at once")

    def _published(self, data: str) -> StoreChange:
        # Every change is published whole (key, version, tag, body): subscribers see each
        # version, in order, without reading it back.
        try:
            note = json.loads(data)
            body = note.get("b")
            return Record(
                key=str(note["k"]), version=int(note["v"]), tag=str(note.get("t", "")),
                body=None if body is None else str(body).encode(),
            )
        except (ValueError, KeyError, TypeError, AttributeError):
            log.error("a garbled change notice from %s: %r; resynchronising", self.name,
                      data[:200])
            return Reconnected()  # nothing is known of what changed: bring all up to date

    async def _check_alive(self, client: Any, heartbeat: str, heard: Any) -> None:
        while True:
            await trio.sleep(self._check_every)
            waiting = heard()
            with trio.fail_after(self._timeout):
                await client.ping()
                await client.publish(self._channel, heartbeat)
                await waiting.wait()
                # Emptied while up (a FLUSHDB, a failover to a replica that lagged): seen
                # here within check_every, or by the next write.
                self._adopt(await self._current_epoch(client))
