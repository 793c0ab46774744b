"""Which store a URL names, opened for the duration of a system.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio

from ._memory import MemoryStore
from ._store import Store

__all__ = [
    "check_store_url",
    "open_store",
]


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
    # Each store's module is imported by the system that uses it (sqlite3 costs the others
    # ~5 ms at import, the Redis store's client more).
    if kind == "sqlite":
        from ._sqlite import SqliteStore

        store = SqliteStore(where, timeout=store_timeout)
        await store.open()
        try:
            yield store
        finally:
            with trio.CancelScope(shield=True):
                await store.close()
        return
    from ._redis import RedisStore

    async with RedisStore(where, timeout=store_timeout).running() as redis:
        yield redis
