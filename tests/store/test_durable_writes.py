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

from extauthz import tokens
from extauthz.errors import StoreWriteNotDurable, Unauthenticated
from extauthz.store.manager import SessionManager
from extauthz.store.model import Session
from extauthz.store.redis.clients import RedisClients, RedisEndpoints
from extauthz.store.redis.keys import SessionKeys
from extauthz.store.redis.store import RedisSessionStore
from harness.process import wait_until
from tests.support.redis_nodes import RedisNode, parse_info, redis_server_available
from tests.support.session_index import index_probe

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


async def _acknowledged_write(clients: RedisClients, key: str, replicas: int = 1) -> None:
    """A write and its WAIT on one connection, acknowledged by ``replicas`` replicas (5 s at
    most: a fresh replica acknowledges its first WAIT only at its next replication cron)."""
    async with clients.primary.pipeline(transaction=False) as pipe:
        pipe.set(key, "1")
        pipe.execute_command("WAIT", replicas, 5000)
        assert (await pipe.execute())[-1] == replicas


async def _alice_on_a_replicated_store(
    clients: RedisClients,
) -> tuple[str, RedisSessionStore, Session]:
    """A store of its own key prefix that confirms a write once 1 replica has it, and a
    session of alice's created on it (after the replica's first acknowledgement)."""
    prefix = f"d{uuid.uuid4().hex[:6]}:"
    store = RedisSessionStore(clients.primary, prefix, wait_replicas=1, wait_timeout_ms=200)
    sessions = SessionManager(store, idle_timeout=600, absolute_timeout=3600)
    await _acknowledged_write(clients, "attached")
    _, session = await sessions.create("alice")
    return prefix, store, session


async def test_no_write_is_confirmed_while_the_only_replica_is_stopped(
    nodes: tuple[RedisNode, RedisNode], clients: RedisClients
) -> None:
    _, replica = nodes
    store = RedisSessionStore(
        clients.primary, f"d{uuid.uuid4().hex[:6]}:", wait_replicas=1, wait_timeout_ms=200
    )
    sessions = SessionManager(store, idle_timeout=600, absolute_timeout=3600)
    # a freshly attached replica's first acknowledgement can take about a second, more than
    # the store's 200 ms: wait for it before the set-up writes
    await _acknowledged_write(clients, "attached")
    existing = [(await sessions.create(f"user{i}"))[0] for i in range(WRITES)]
    # connections that have only read, every one of them older than an acknowledged write:
    # a WAIT sent on one of them has nothing to wait for
    await asyncio.gather(*(sessions.lookup(t) for t in existing * 2))
    await _acknowledged_write(clients, "warm-up")
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


async def test_wait_all_counts_the_replicas_nodes_read_from(tmp_path: Path) -> None:
    """Under ``replicated``, ``WAIT "all"`` waits for one replica per live read lease (at least
    one, at most the replicas online): a replica whose node gave its lease up (it lags) holds
    no write up. Without the count it waits for every online replica, the stopped one too."""
    primary = RedisNode(tmp_path / "primary").start()
    replicas = [
        RedisNode(tmp_path / f"replica{i}", replicaof=primary.address).start() for i in range(2)
    ]
    c = RedisClients(RedisEndpoints(primary_url=primary.url, timeout_seconds=2.0))
    try:

        def online() -> bool:  # the primary counts a replica online from its first ACK on
            info = parse_info(primary.command("INFO", "replication"))
            return sum("online" in info.get(f"slave{i}", "") for i in range(2)) == 2

        wait_until(online, timeout=15, description="two replicas online")
        leases = 1

        async def replicas_read() -> int:
            return leases

        counted, every = (
            SessionManager(
                RedisSessionStore(
                    c.primary,
                    f"d{uuid.uuid4().hex[:6]}:",
                    wait_replicas="all",
                    wait_timeout_ms=200,
                    replicas_read=read,
                ),
                idle_timeout=600,
                absolute_timeout=3600,
            )
            for read in (replicas_read, None)
        )
        await _acknowledged_write(c, "settle", replicas=2)
        stopped = replicas[1]
        assert stopped.pid is not None
        os.kill(stopped.pid, signal.SIGSTOP)
        try:
            token, _ = await counted.create("alice")  # one lease: the running replica
            await counted.revoke_token(token)
            with pytest.raises(StoreWriteNotDurable, match="1 of 2 replicas"):
                await every.create("bob")
            leases = 0  # no lease: still one replica
            await counted.create("carol")
            leases = 3  # more leases than replicas (nodes share one): every online one
            with pytest.raises(StoreWriteNotDurable, match="1 of 2 replicas"):
                await counted.create("dave")
        finally:
            os.kill(stopped.pid, signal.SIGCONT)
    finally:
        await c.aclose()
        for node in (*replicas, primary):
            node.stop()


async def test_a_rotation_counts_once_the_replica_has_it_and_a_retry_finds_it(
    nodes: tuple[RedisNode, RedisNode], clients: RedisClients
) -> None:
    """Token rotation takes the durable path of a login: once it returns, the replica holds
    the new record and the successor; while the replica is stopped it is not confirmed, and a
    retry returns the token that first attempt stored (never a second rotation)."""
    _, replica = nodes
    prefix = f"r{uuid.uuid4().hex[:6]}:"
    store = RedisSessionStore(clients.primary, prefix, wait_replicas=1, wait_timeout_ms=200)
    sessions = SessionManager(store, idle_timeout=600, absolute_timeout=3600)
    replica_clients = RedisClients(RedisEndpoints(primary_url=replica.url, timeout_seconds=2.0))
    on_replica = RedisSessionStore(replica_clients.primary, prefix)  # reads only
    try:
        await _rotate_on_a_replicated_primary(sessions, store, on_replica, replica, clients)
    finally:
        await replica_clients.aclose()


async def _rotate_on_a_replicated_primary(
    sessions: SessionManager,
    store: RedisSessionStore,
    on_replica: RedisSessionStore,
    replica: RedisNode,
    clients: RedisClients,
) -> None:
    await _acknowledged_write(clients, "attached")
    old, session = await sessions.create("alice")
    rotated = await sessions.rotate(old)
    assert rotated.token is not None
    new_hash = tokens.token_hash(rotated.token)
    # no waiting: the rotation returned after the replica acknowledged it
    assert (await on_replica.get(new_hash)) is not None
    assert (await on_replica.successor(tokens.token_hash(old))) is not None
    assert await on_replica.get(tokens.token_hash(old)) is None

    old, session = await sessions.create("bob")
    assert replica.pid is not None
    os.kill(replica.pid, signal.SIGSTOP)
    try:
        with pytest.raises(StoreWriteNotDurable):
            await sessions.rotate(old)
    finally:
        os.kill(replica.pid, signal.SIGCONT)
    wait_until(lambda: replica.link_up(), timeout=15, description="replica link up")
    retried = await sessions.rotate(old)
    assert not retried.created and retried.token is not None
    assert await store.token_hash_of(session.sid) == tokens.token_hash(retried.token)


async def test_a_retried_revocation_is_not_confirmed_until_the_replicas_have_the_first(
    nodes: tuple[RedisNode, RedisNode], clients: RedisClients
) -> None:
    """A revocation whose ``WAIT`` fell short has still deleted the record on the primary. A
    retry by ``sid`` (``SessionAdmin/RevokeSession``) or by subject then finds nothing to
    delete; it used to report success at once, with no ``WAIT``, while no replica had the
    deletion: after a failover the session was back (seen with the Sentinel topology in
    network namespaces). The retry now succeeds only once the replicas have everything the
    primary wrote before it."""
    primary, replica = nodes
    prefix, store, session = await _alice_on_a_replicated_store(clients)
    assert replica.pid is not None
    os.kill(replica.pid, signal.SIGSTOP)
    try:
        with pytest.raises(StoreWriteNotDurable):
            await store.revoke_sid(session.sid)
        assert primary.command(*index_probe(SessionKeys(prefix), session.sid)) == 0
        with pytest.raises(StoreWriteNotDurable):
            await store.revoke_sid(session.sid)
        with pytest.raises(StoreWriteNotDurable):
            await store.revoke_subject("alice")
    finally:
        os.kill(replica.pid, signal.SIGCONT)
    wait_until(replica.link_up, timeout=15, description="replica link up")
    assert await store.revoke_sid(session.sid) is None  # confirmed: the replica has it
    assert replica.command(*index_probe(SessionKeys(prefix), session.sid)) == 0
    assert await store.revoke_subject("alice") == 0


async def test_a_revocation_short_of_replicas_still_publishes_its_invalidation(
    nodes: tuple[RedisNode, RedisNode], clients: RedisClients
) -> None:
    """Regression: the deletion and its invalidation are two steps (one slot each on a Redis
    Cluster). When the deletion's ``WAIT`` fell short the invalidation was not published, and a
    retry by ``sid`` (which finds the index entry gone) waited only for older numbers: the
    revoking node acknowledged the logout while the caches kept the session until their max
    age (seen through Envoy in the replicated topology with a partitioned node). The number is
    published before the error, so the retry's wait covers it."""
    primary, replica = nodes
    prefix, store, session = await _alice_on_a_replicated_store(clients)
    seq_key = store.invalidation_channel + ":seq"
    before = int(primary.command("GET", seq_key) or 0)
    assert replica.pid is not None
    os.kill(replica.pid, signal.SIGSTOP)
    try:
        with pytest.raises(StoreWriteNotDurable):
            await store.revoke_sid(session.sid)
    finally:
        os.kill(replica.pid, signal.SIGCONT)
    assert int(primary.command("GET", seq_key) or 0) > before
