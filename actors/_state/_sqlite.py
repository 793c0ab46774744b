"""The embedded durable store: one SQLite file (WAL), one master at a time.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
from collections.abc import AsyncIterator
from typing import Any

import trio

from .._base._errors import StoreInUse, StoreUnavailable
from ._store import Record, StoreChange, decide, nothing

__all__ = [
    "SqliteStore",
]

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
                record = decide(current, key, tag, body, expect)
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
        return nothing()  # nobody else writes here

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
