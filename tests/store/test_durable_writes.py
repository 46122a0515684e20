"""A write is confirmed durable only by the ``WAIT`` of the connection that made it
(extauthz.store.redis.durable).

``WAIT`` counts the writes of its own connection. Sent through the pool after the write's
transaction, it could run on a connection that wrote nothing (one a lookup had just used) and
answer "1 replica" at once, while the only replica was stopped: logins and logouts reported
replicated that were not.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from extauthz.errors import StoreWriteNotDurable, Unauthenticated
from extauthz.store.manager import SessionManager
from extauthz.store.redis.clients import RedisClients, RedisEndpoints
from extauthz.store.redis.store import RedisSessionStore
from harness.process import wait_until
from tests.support.redis_nodes import RedisNode, parse_info, redis_server_available

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not redis_server_available(), reason="redis-server binary not installed"),
]

WRITES = 24
READERS = 16


@pytest.fixture
def nodes(tmp_path: Path) -> Iterator[tuple[RedisNode, RedisNode]]:
    primary = RedisNode(tmp_path / "primary").start()
    replica = RedisNode(tmp_path / "replica", replicaof=primary.address).start()
    try:

        def online() -> bool:
            info = parse_info(primary.command("INFO", "replication"))
            return replica.link_up() and "online" in info.get("slave0", "")

        wait_until(online, timeout=15, description="replica online")
        yield primary, replica
    finally:
        replica.stop()
        primary.stop()


@pytest.fixture
async def clients(nodes: tuple[RedisNode, RedisNode]) -> AsyncIterator[RedisClients]:
    c = RedisClients(RedisEndpoints(primary_url=nodes[0].url, timeout_seconds=2.0))
    yield c
    await c.aclose()


async def test_no_write_is_confirmed_while_the_only_replica_is_stopped(
    nodes: tuple[RedisNode, RedisNode], clients: RedisClients
) -> None:
    _, replica = nodes
    store = RedisSessionStore(
        clients.primary, f"d{uuid.uuid4().hex[:6]}:", wait_replicas=1, wait_timeout_ms=200
    )
    sessions = SessionManager(store, idle_timeout=600, absolute_timeout=3600)
    existing = [(await sessions.create(f"user{i}"))[0] for i in range(WRITES)]
    # connections that have only read, every one of them older than an acknowledged write:
    # a WAIT sent on one of them has nothing to wait for
    await asyncio.gather(*(sessions.lookup(t) for t in existing * 2))
    async with clients.primary.pipeline(transaction=False) as pipe:
        pipe.set("warm-up", "1")
        pipe.execute_command("WAIT", 1, 5000)
        assert (await pipe.execute())[-1] == 1
    done = asyncio.Event()

    async def read(i: int) -> None:
        """Look sessions up until the writes are over: connections that only read keep
        going back to the pool while the writes wait."""
        while not done.is_set():
            with contextlib.suppress(Unauthenticated):  # revoked meanwhile
                await sessions.lookup(existing[i % WRITES])
            i += 1

    async def login(i: int) -> object:
        await asyncio.sleep(i * 0.003)  # spread among the lookups
        return await sessions.create(f"new{i}")

    async def logout(i: int) -> object:
        await asyncio.sleep(i * 0.003 + 0.0015)
        return await sessions.revoke_token(existing[i])

    async def write_all() -> list[object | BaseException]:
        writes = [login(i) for i in range(WRITES // 2)]
        writes += [logout(i) for i in range(WRITES // 2)]
        try:
            return await asyncio.gather(*writes, return_exceptions=True)
        finally:
            done.set()

    assert replica.pid is not None
    os.kill(replica.pid, signal.SIGSTOP)
    try:
        readers = [read(i) for i in range(READERS)]
        write_outcomes, *_ = await asyncio.wait_for(
            asyncio.gather(write_all(), *readers), timeout=20
        )
        assert write_outcomes is not None
    finally:
        os.kill(replica.pid, signal.SIGCONT)
    confirmed = [o for o in write_outcomes if not isinstance(o, BaseException)]
    assert len(confirmed) == 0, f"{len(confirmed)} of {WRITES} writes reported durable"
    assert all(isinstance(o, StoreWriteNotDurable) for o in write_outcomes), write_outcomes
    # the replica is back: writes are confirmed again
    wait_until(lambda: replica.link_up(), timeout=15, description="replica link up")
    await sessions.create("after")
