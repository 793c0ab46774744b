"""A Redis test double for the Redis store's protocol logic, in this process.

It stands in for the coredis client the store makes (``coredis.Redis.from_url``) and for
the bare TCP connection the store probes with before reconnecting (``trio.open_tcp_stream``),
and speaks as much of Redis as the store uses: HGETALL, SCAN, GET, SET NX, PING, PUBLISH,
SUBSCRIBE and the store's one write script, run here as the Python equivalent of its Lua
(the comment above the script says what it does). The real redis-server, and the real Lua,
are tested in tests/integration/state/.

``redis.up = False`` is an outage: every call fails as a refused connection does, and the
subscription hears nothing. ``redis.flush()`` is a FLUSHDB (the data, the epoch with it).
"""

from __future__ import annotations

import errno
import fnmatch
import json
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import coredis
import coredis.exceptions
import pytest
import trio
import trio.testing
from coredis.tokens import PureToken

T = TypeVar("T")

PubSubMessage = dict[str, Any]


class FakeRedis:
    """One Redis server's data, its subscribers, and whether it is reachable."""

    def __init__(self) -> None:
        self.hashes: dict[str, dict[bytes, bytes]] = {}
        self.strings: dict[str, bytes] = {}
        self.subscribers: list[tuple[frozenset[str], trio.MemorySendChannel[PubSubMessage]]] = []
        self.up = True
        self.urls: list[str] = []
        """The URL of every client the store made (what it would connect to)."""

    @contextmanager
    def installed(self, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeRedis]:
        """Every Redis store opened meanwhile talks to this double."""
        with monkeypatch.context() as patch:
            patch.setattr(coredis.Redis, "from_url", self._client)
            patch.setattr(trio, "open_tcp_stream", self._open_tcp_stream)
            yield self

    def flush(self) -> None:
        """FLUSHDB: every key is gone, the store's epoch too."""
        self.hashes.clear()
        self.strings.clear()

    def publish(self, channel: str, data: str | bytes) -> int:
        """What PUBLISH does: ``data`` to every subscriber of ``channel``."""
        raw = data.encode() if isinstance(data, str) else data
        heard = 0
        for channels, send in list(self.subscribers):
            if channel in channels:
                send.send_nowait({"type": "message", "pattern": None,
                                  "channel": channel.encode(), "data": raw})
                heard += 1
        return heard

    # -- what the store calls -----------------------------------------------------------------

    def _client(self, url: str, **options: Any) -> FakeClient:
        self.urls.append(url)
        return FakeClient(self)

    async def _open_tcp_stream(self, host: str, port: int, **options: Any) -> trio.abc.Stream:
        """The store's probe: a connection that answers its PING (refused while down)."""
        await trio.lowlevel.checkpoint()
        if not self.up:
            raise OSError(errno.ECONNREFUSED, f"Connect call failed ({host!r}, {port})")
        answers = trio.testing.MemoryReceiveStream()
        answers.put_data(b"+PONG\r\n")
        return trio.StapledStream(trio.testing.MemorySendStream(), answers)

    def write(self, keys: list[str], args: list[Any]) -> int:
        """The store's write script (KEYS: the key's hash, the epoch; ARGV: expect or -1,
        tag, body, delete 1/0, channel, key, the epoch the writer knows)."""
        hash_key, epoch_key = keys
        expect, tag, body, delete, channel, key, known_epoch = (_text(a) for a in args)
        if self.strings.get(epoch_key) != known_epoch.encode():
            return -1  # (GET of a missing key is nil, never equal to what the writer knows)
        fields = self.hashes.get(hash_key, {})
        current = int(fields.get(b"v", b"0"))
        has_value = b"b" in fields
        wanted = int(expect)
        if wanted == 0 and has_value:
            return 0
        if wanted > 0 and (not has_value or current != wanted):
            return 0
        if delete == "1" and not has_value:
            return 0
        version = current + 1
        fields = self.hashes[hash_key] = {**fields, b"v": str(version).encode()}
        if delete == "1":
            fields.pop(b"t", None)
            fields.pop(b"b", None)
            self.publish(channel, json.dumps({"k": key, "v": version}))
        else:
            fields[b"t"] = tag.encode()
            fields[b"b"] = body.encode()
            self.publish(channel, json.dumps({"k": key, "v": version, "t": tag, "b": body}))
        return version


def _text(value: Any) -> str:
    """An argument as Redis sees it: every value is a string."""
    return value.decode() if isinstance(value, bytes) else str(value)


class FakeClient:
    """The coredis client, as far as the store uses one."""

    def __init__(self, redis: FakeRedis) -> None:
        self._redis = redis

    async def __aenter__(self) -> FakeClient:
        await trio.lowlevel.checkpoint()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await trio.lowlevel.checkpoint()

    async def _answer(self, value: Callable[[], T]) -> T:
        await trio.lowlevel.checkpoint()
        if not self._redis.up:
            raise coredis.exceptions.ConnectionError("Error 111 connecting: Connection refused")
        return value()

    def register_script(self, source: str) -> Callable[..., Awaitable[int]]:
        assert "PUBLISH" in source, "the store's write script"

        def script(*, keys: list[str], args: list[Any]) -> Awaitable[int]:
            return self._answer(lambda: self._redis.write(keys, args))

        return script

    def hgetall(self, key: str) -> Awaitable[dict[bytes, bytes]]:
        return self._answer(lambda: dict(self._redis.hashes.get(key, {})))

    async def scan_iter(self, match: str = "*") -> AsyncIterator[bytes]:
        found = await self._answer(lambda: [
            name for name in [*self._redis.hashes, *self._redis.strings]
            if fnmatch.fnmatchcase(name, match)
        ])
        for name in found:
            yield name.encode()

    def get(self, key: str) -> Awaitable[bytes | None]:
        return self._answer(lambda: self._redis.strings.get(key))

    def set(self, key: str, value: str, *, condition: PureToken | None = None
            ) -> Awaitable[bool | None]:
        def set_() -> bool | None:
            if condition == PureToken.NX and key in self._redis.strings:
                return None
            self._redis.strings[key] = value.encode()
            return True

        return self._answer(set_)

    def ping(self) -> Awaitable[bytes]:
        return self._answer(lambda: b"PONG")

    def publish(self, channel: str, message: str) -> Awaitable[int]:
        return self._answer(lambda: self._redis.publish(channel, message))

    def pubsub(self, *, channels: list[str], ignore_subscribe_messages: bool = False
               ) -> FakePubSub:
        assert ignore_subscribe_messages, "the store reads messages only"
        return FakePubSub(self._redis, frozenset(channels))


class FakePubSub:
    """A subscription: the messages published on its channels, while Redis is up."""

    def __init__(self, redis: FakeRedis, channels: frozenset[str]) -> None:
        self._redis = redis
        self._send, self._receive = trio.open_memory_channel[PubSubMessage](math.inf)
        self._entry = (channels, self._send)

    async def __aenter__(self) -> FakePubSub:
        await trio.lowlevel.checkpoint()
        if not self._redis.up:
            raise coredis.exceptions.ConnectionError("Error 111 connecting: Connection refused")
        self._redis.subscribers.append(self._entry)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._redis.subscribers.remove(self._entry)
        self._send.close()
        self._receive.close()
        await trio.lowlevel.checkpoint()

    def __aiter__(self) -> FakePubSub:
        return self

    async def __anext__(self) -> PubSubMessage:
        while True:
            message = await self._receive.receive()
            if self._redis.up:  # (while it is down, nothing gets through)
                return message
