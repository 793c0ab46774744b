"""The shared-state integration tests' real redis-servers (skipped, saying why, where
redis-server is not installed)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.redis_server import RedisServer, redis_server


@pytest.fixture(scope="session")
def redis() -> Iterator[RedisServer]:
    """One redis-server for every test that needs one as it is: each keeps to a key prefix
    of its own (``unique_prefix()``)."""
    with redis_server() as server:
        yield server


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A redis-server of the test's own, to stop, start again or write bad data to."""
    with redis_server() as server:
        yield server
