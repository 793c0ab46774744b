"""The cluster's integration tests' real redis-servers (skipped, saying why, where
redis-server is not installed), and the shared-state tests' two network namespaces."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration.state.test_state_faults import two_hosts  # noqa: F401 (a fixture)
from tests.redis_server import RedisServer, redis_server, unique_prefix


@pytest.fixture(scope="session")
def redis() -> Iterator[RedisServer]:
    """One redis-server for the tests that leave it as it is: each is a cluster of its own
    (a key prefix of its own)."""
    with redis_server() as server:
        yield server


@pytest.fixture
def cluster(redis: RedisServer) -> str:
    """The URL of a cluster of the test's own."""
    return f"{redis.url}?prefix={unique_prefix()}"


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A redis-server of the test's own, to stop and start again."""
    with redis_server() as server:
        yield server
