"""Fixtures shared by the store tests: an injected clock, and one session store per backend
(the in-memory store, and the Redis store on the session's own redis-server and on the module's
Redis Cluster, under a fresh key prefix)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from extauthz.store.memory import MemorySessionStore
from extauthz.store.model import SessionStore
from extauthz.store.redis.store import RedisSessionStore
from tests.fixtures.core import FakeClock
from tests.support import RedisServer
from tests.support.redis_cluster import cluster_clients


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def redis_client(redis_process: RedisServer) -> AsyncIterator[aioredis.Redis]:
    """A client of the session's redis-server, answering in bytes like the store's."""
    client = aioredis.Redis.from_url(redis_process.url)
    yield client
    await client.aclose()


@pytest.fixture(
    params=[
        "memory",
        pytest.param("redis", marks=pytest.mark.e2e),
        pytest.param("cluster", marks=pytest.mark.e2e),
    ]
)
async def store(request: pytest.FixtureRequest, clock: FakeClock) -> AsyncIterator[SessionStore]:
    if request.param == "memory":
        yield MemorySessionStore(clock=clock)
        return
    if request.param == "cluster":
        clients = cluster_clients(request.getfixturevalue("redis_cluster"))
        yield RedisSessionStore(clients.primary, f"t{uuid.uuid4().hex[:8]}:", clock=clock)
        await clients.aclose()
        return
    server: RedisServer = request.getfixturevalue("redis_process")
    client = aioredis.Redis.from_url(server.url)
    yield RedisSessionStore(client, f"t{uuid.uuid4().hex[:8]}:", clock=clock)
    await client.aclose()
