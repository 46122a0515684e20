"""Fixtures of the OAuth tests: ``records`` (memory, and real Redis and Redis Cluster in
``e2e``) and ``h``,
the in-process authorization server (:mod:`tests.oauth.harness`)."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio

from extauthz.oauth.records import MemoryOAuthRecords, OAuthRecords
from extauthz.store.redis.oauth_records import RedisOAuthRecords
from tests.oauth.harness import Harness, build_harness
from tests.support import RedisServer
from tests.support.redis_cluster import cluster_clients


@pytest.fixture(
    params=[
        "memory",
        pytest.param("redis", marks=pytest.mark.e2e),
        pytest.param("cluster", marks=pytest.mark.e2e),
    ]
)
async def records(request: pytest.FixtureRequest) -> AsyncIterator[OAuthRecords]:
    if request.param == "memory":
        yield MemoryOAuthRecords()
        return
    if request.param == "cluster":
        clients = cluster_clients(request.getfixturevalue("redis_cluster"))
        yield RedisOAuthRecords(clients.primary, f"t{secrets.token_hex(4)}:")
        await clients.aclose()
        return
    server: RedisServer = request.getfixturevalue("redis_process")
    client = redis.asyncio.Redis.from_url(server.url)
    prefix = f"t{secrets.token_hex(4)}:"
    yield RedisOAuthRecords(client, prefix)
    await client.aclose()


@pytest.fixture
async def h(tmp_path: Path, records: OAuthRecords) -> AsyncIterator[Harness]:
    async for harness in build_harness(tmp_path, records):
        yield harness
