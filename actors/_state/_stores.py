"""Where shared state is kept: in the master's memory, in SQLite, or in Redis.

A store holds, per key, the latest :class:`Record` (version, tag and body of the value, or
a tombstone once deleted: versions keep increasing across deletes). The master's state
service is its only user; a Redis store also reports the writes of other systems sharing
that Redis (:meth:`Store.changes`).
"""

from __future__ import annotations

import fcntl
import json
import logging
import math
import os
import secrets
import sqlite3
import urllib.parse
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Protocol

import trio

from protocol import Message

from .._base._errors import StoreInUse, StoreUnavailable

__all__ = [
    "Disconnected",
    "EpochChanged",
    "MemoryStore",
    "Reconnected",
    "Record",
    "RedisStore",
    "Reset",
    "SqliteStore",
    "Store",
    "StoreChange",
    "check_store_url",
    "open_store",
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


def _decide(current: Record | None, key: str, tag: str, body: bytes | None,
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


async def _nothing() -> AsyncIterator[StoreChange]:
    """The changes of a store only this master writes to: none, ever."""
    never, nothing = trio.open_memory_channel[StoreChange](0)
    async with never, nothing:
        async for change in nothing:
            yield change


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
        record = _decide(self._records.get(key), key, tag, body, expect)
        if record is not None:
            self._records[key] = record
        return record

    def changes(self) -> AsyncIterator[StoreChange]:
        return _nothing()  # nobody else writes here

    async def check(self) -> None:
        await trio.lowlevel.checkpoint()


class SqliteStore:
    """The embedded store, durable: one SQLite file (WAL). A write is acknowledged once
    committed to disk, so a master restarted on the same file finds every acknowledged
    value and version. SQLite runs in a worker thread, never on the event loop.

    One master at a time: the file is locked (``flock``) while a system uses it, and a
    second one is refused with :class:`StoreInUse` (it could not see the first one's writes
    as they happen). A write that waits for SQLite's own lock (another program writing the
    file) gives up after ``timeout`` seconds, as every store operation does."""

    def __init__(self, path: str, *, timeout: float = 5.0) -> None:
        self.name = f"sqlite:{path}"
        self.shared = False  # one master at a time (the next one finds what it wrote)
        self._path = path
        self._timeout = timeout
        self._db: sqlite3.Connection | None = None
        self._lock: int | None = None
        self._limiter = trio.CapacityLimiter(1)  # one connection: one call at a time

    async def open(self) -> None:
        def connect() -> sqlite3.Connection:
            db = sqlite3.connect(self._path, check_same_thread=False, isolation_level=None,
                                 timeout=self._timeout)
            try:
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=FULL")  # acknowledged means on disk
                db.execute(
                    "CREATE TABLE IF NOT EXISTS state (key TEXT PRIMARY KEY, "
                    "version INTEGER NOT NULL, tag TEXT NOT NULL, body BLOB)"
                )
            except BaseException:
                db.close()
                raise
            return db

        try:
            self._lock = _lock_file(self._path)  # before SQLite touches a file in use
        except OSError as exc:
            raise StoreUnavailable(f"cannot open the SQLite store {self._path}: {exc}") from exc
        try:
            self._db = await trio.to_thread.run_sync(connect, limiter=self._limiter)
        except BaseException as exc:
            await self.close()
            if isinstance(exc, sqlite3.Error):
                raise StoreUnavailable(
                    f"cannot open the SQLite store {self._path}: {exc}"
                ) from exc
            raise

    async def close(self) -> None:
        db, self._db = self._db, None
        if db is not None:
            await trio.to_thread.run_sync(db.close, limiter=self._limiter)
        lock, self._lock = self._lock, None
        if lock is not None:
            os.close(lock)  # and with it the flock

    async def _run(self, work: Any, *args: Any) -> Any:
        db = self._db
        if db is None:
            raise StoreUnavailable(f"the SQLite store {self._path} is closed")
        try:
            # Abandoned if the caller gives up (store_timeout): the thread ends on its own
            # within SQLite's busy timeout, and keeps the connection (the limiter) until then.
            return await trio.to_thread.run_sync(work, db, *args, limiter=self._limiter,
                                                 abandon_on_cancel=True)
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"the SQLite store {self._path} failed: {exc}") from exc

    @staticmethod
    def _row(row: tuple[str, int, str, bytes | None] | None) -> Record | None:
        if row is None:
            return None
        return Record(key=row[0], version=row[1], tag=row[2], body=row[3])

    async def read(self, key: str) -> Record | None:
        def read(db: sqlite3.Connection, key: str) -> Any:
            return db.execute(
                "SELECT key, version, tag, body FROM state WHERE key = ?", (key,)
            ).fetchone()

        return self._row(await self._run(read, key))

    async def read_prefix(self, prefix: str) -> list[Record]:
        def read(db: sqlite3.Connection, prefix: str) -> Any:
            return db.execute(
                "SELECT key, version, tag, body FROM state WHERE substr(key, 1, ?) = ?",
                (len(prefix), prefix),
            ).fetchall()

        rows = await self._run(read, prefix)
        return [record for row in rows if (record := self._row(row)) is not None]

    async def write(
        self, key: str, tag: str, body: bytes | None, *, expect: int | None
    ) -> Record | None:
        def write(db: sqlite3.Connection) -> Record | None:
            db.execute("BEGIN IMMEDIATE")
            try:
                current = self._row(db.execute(
                    "SELECT key, version, tag, body FROM state WHERE key = ?", (key,)
                ).fetchone())
                record = _decide(current, key, tag, body, expect)
                if record is not None:
                    db.execute(
                        "INSERT INTO state (key, version, tag, body) VALUES (?, ?, ?, ?) "
                        "ON CONFLICT(key) DO UPDATE SET version = excluded.version, "
                        "tag = excluded.tag, body = excluded.body",
                        (key, record.version, record.tag, record.body),
                    )
                db.execute("COMMIT")
                return record
            except BaseException:
                db.execute("ROLLBACK")
                raise

        result: Record | None = await self._run(write)
        return result

    def changes(self) -> AsyncIterator[StoreChange]:
        return _nothing()  # nobody else writes here

    async def check(self) -> None:
        await trio.lowlevel.checkpoint()


def _lock_file(path: str) -> int:
    """Lock the SQLite file for this system (released when the fd closes, or the process
    dies); :class:`StoreInUse` if another system holds it. ``flock`` locks do not touch
    SQLite's own (POSIX) locks on the same file."""
    fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise StoreInUse(
            f"the SQLite store {path} is in use by another system: a SQLite file serves one "
            "master at a time (use Redis to share state between systems)"
        ) from None
    except OSError:
        os.close(fd)
        raise
    return fd


# KEYS[1]: the key's hash, KEYS[2]: the epoch. ARGV: expect (-1: none), tag, body, delete
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
            heartbeat = f"heartbeat:{id(self)}"
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


def check_store_url(url: str | None) -> tuple[str, str]:
    """What ``url`` names: ``("memory", "")``, ``("sqlite", path)`` or ``("redis", url)``;
    ValueError (or ImportError, for Redis without coredis) if it names nothing usable.

    SQLite URLs follow SQLAlchemy's rule: ``sqlite:///state.db`` is relative to the current
    directory, ``sqlite:////var/lib/app/state.db`` (four slashes) is absolute."""
    if url is None or url == "memory":
        return "memory", ""
    if not isinstance(url, str):
        raise TypeError(f"store must be a URL (str) or None, not {type(url).__name__}")
    scheme = urllib.parse.urlsplit(url).scheme
    if scheme == "sqlite":
        if not url.startswith("sqlite:///"):
            raise ValueError(
                f"cannot read the SQLite URL {url!r}: write sqlite:///relative/state.db or "
                "sqlite:////absolute/state.db (three slashes, then the path)"
            )
        path = url.removeprefix("sqlite:///")
        if not path or path.endswith("/") or "?" in path or path == ":memory:":
            raise ValueError(
                f"a SQLite store needs a file: sqlite:///state.db (relative) or "
                f"sqlite:////abs/path/state.db, not {url!r}"
            )
        return "sqlite", path
    if scheme in ("redis", "rediss"):
        try:
            import coredis  # noqa: F401  (only a system that uses Redis needs it)
        except ImportError as exc:
            raise ImportError(
                "the Redis store needs coredis: pip install 'trio-actors[redis]'"
            ) from exc
        if not urllib.parse.urlsplit(url).hostname:
            raise ValueError(f"a Redis store needs a host: redis://host:port/db, not {url!r}")
        return "redis", url
    raise ValueError(
        f"unknown store {url!r}: use sqlite:///path/state.db or redis://host:port/db "
        "(or None for the master's memory)"
    )


@asynccontextmanager
async def open_store(url: str | None, *, store_timeout: float) -> AsyncIterator[Store]:
    """The store ``url`` names (see :func:`check_store_url`): None (the default) for
    memory, ``sqlite:///path`` or ``redis://host:port/db`` (``rediss://`` for TLS;
    ``?prefix=app`` to share one Redis between applications)."""
    kind, where = check_store_url(url)
    if kind == "memory":
        yield MemoryStore()
        return
    if kind == "sqlite":
        store = SqliteStore(where, timeout=store_timeout)
        await store.open()
        try:
            yield store
        finally:
            with trio.CancelScope(shield=True):
                await store.close()
        return
    async with RedisStore(where, timeout=store_timeout).running() as redis:
        yield redis
