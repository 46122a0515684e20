"""The store's plumbing on a Redis Cluster (3 primaries, 3 replicas on loopback): the client,
the memberships and the node registry (multi-key scripts in one slot), the invalidation over a
shard channel, ``WAIT`` on the connection that wrote to the slot's primary, and the users, rate
limits and factors (single-key commands, routed by slot)."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator, Callable

import pytest
import redis.asyncio as aioredis
from argon2 import PasswordHasher

from extauthz import tokens
from extauthz.errors import SettingsError, StoreWriteNotDurable
from extauthz.login.ratelimit import RateKey
from extauthz.store.manager import SessionManager
from extauthz.store.redis.channel import Channel
from extauthz.store.redis.clients import RedisClients
from extauthz.store.redis.cluster import StoreCluster
from extauthz.store.redis.durable import DurablePipeline
from extauthz.store.redis.factors import RedisFactorStore
from extauthz.store.redis.invalidation import InvalidationSubscriber
from extauthz.store.redis.membership import CACHE, Membership
from extauthz.store.redis.ratelimit import RedisRateLimiter
from extauthz.store.redis.store import RedisSessionStore
from extauthz.store.redis.users import RedisUserStore
from harness.ports import LOOPBACK
from harness.redis_cluster import RedisCluster
from tests.support.redis_cluster import cluster_clients

pytestmark = pytest.mark.e2e


@pytest.fixture
async def clients(redis_cluster: RedisCluster) -> AsyncIterator[RedisClients]:
    built = cluster_clients(redis_cluster)
    yield built
    await built.aclose()


def membership(clients: RedisClients, prefix: str) -> Membership:
    return Membership(
        clients.primary, prefix, "node-1", strategy="central", version="t",
        topology="cluster", heartbeat_seconds=1.0,
    )  # fmt: skip


async def test_the_primary_of_a_cluster_setting_is_the_cluster_and_answers(
    clients: RedisClients, redis_cluster: RedisCluster
) -> None:
    assert isinstance(clients.primary, StoreCluster)
    assert not clients.sentinel_managed()
    store = RedisSessionStore(clients.primary, "ping:")
    await store.ping()  # every primary
    assert clients.pool_counts() == {"primary": {"waits": 0, "exhausted": 0}}


async def test_memberships_and_the_registry_work_in_one_slot(
    clients: RedisClients, redis_cluster: RedisCluster
) -> None:
    m = membership(clients, "reg:")
    members, acks = m.keys(CACHE)
    slot = redis_cluster.command(redis_cluster.nodes[0].port, "CLUSTER", "KEYSLOT", members)
    assert slot == redis_cluster.command(redis_cluster.nodes[0].port, "CLUSTER", "KEYSLOT", acks)
    await m.beat(CACHE, 60)
    assert await m.pending(CACHE, 1) == [m.instance]
    await m.ack(CACHE, 1)
    assert await m.pending(CACHE, 1) == []
    assert await m.leave(CACHE)
    await m.register()  # the node record: one key


class Seen:
    def __init__(self) -> None:
        self.hashes: list[str] = []

    def reset(self) -> None:
        pass

    def invalidate(self, token_hash: str) -> None:
        self.hashes.append(token_hash)


async def until(predicate: Callable[[], bool], seconds: float = 5.0) -> None:
    for _ in range(int(seconds / 0.02)):
        if predicate():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not met in time")


async def test_an_invalidation_reaches_the_subscriber_over_the_shard_channel(
    clients: RedisClients, redis_cluster: RedisCluster
) -> None:
    store = RedisSessionStore(clients.primary, "inv:")
    assert store.invalidation_channel == "inv:{inv}invalidate"
    channel = Channel(clients.primary, store.invalidation_channel)
    subscriber = InvalidationSubscriber(membership(clients, "inv:"), channel, trust_window=0.3)
    seen = Seen()
    subscriber.add_listener(seen)
    await subscriber.start()
    try:
        await until(subscriber.trusted)  # the liveness proofs travel the shard channel too
        seq = await clients.primary.eval(
            store.publish_script, 1, store.invalidation_channel + ":seq",
            store.invalidation_channel, "h1",
        )  # fmt: skip
        await until(lambda: seen.hashes == ["h1"])
        assert int(seq) == 1
    finally:
        await subscriber.stop()


async def test_a_write_is_durable_only_when_the_slot_primarys_replica_has_it(
    clients: RedisClients, redis_cluster: RedisCluster
) -> None:
    cluster = clients.primary
    assert isinstance(cluster, StoreCluster)
    key = "wait:{alice}record"
    shard = await cluster.shard_for(key)
    primary = redis_cluster.primary_for(key)
    assert shard.connection_pool.connection_kwargs["port"] == primary.port
    (replica,) = redis_cluster.replicas_of(primary)
    pipe = DurablePipeline(shard, 1, 200)
    pipe.set(key, "1")
    assert await pipe.execute() == [b"OK"]
    assert replica.pid is not None
    os.kill(replica.pid, signal.SIGSTOP)
    try:
        pipe = DurablePipeline(shard, 1, 200)
        pipe.set(key, "2")
        with pytest.raises(StoreWriteNotDurable):
            await pipe.execute()
    finally:
        os.kill(replica.pid, signal.SIGCONT)


async def test_a_node_configured_for_one_primary_is_refused_on_a_cluster_node(
    redis_cluster: RedisCluster,
) -> None:
    single = aioredis.Redis(host=LOOPBACK, port=redis_cluster.nodes[0].port)
    try:
        m = Membership(single, "mixed:", "node-2", strategy="central", version="t",
                       topology="primary", heartbeat_seconds=1.0)  # fmt: skip
        with pytest.raises(SettingsError, match="^store.cluster_nodes: the store is a Redis"):
            await m.register()
    finally:
        await single.aclose()


async def test_users_rate_limits_and_factors_work_on_the_cluster(clients: RedisClients) -> None:
    users = RedisUserStore(clients.primary, "u:")
    hashed = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1).hash("pw")
    for name in ("alice", "bob", "carol"):  # spread over the shards; names() asks each
        await users.put(name, hashed, ["admin"], ["read"])
    assert await users.names() == ["alice", "bob", "carol"]
    assert await users.set_password_hash("bob", hashed)
    assert await users.remove("carol") and await users.get("carol") is None
    limiter = RedisRateLimiter(clients.primary, "u:", limit=2, window_seconds=30)
    key = RateKey("login:user", "alice")
    assert not (await limiter.hit(key)).blocked
    assert not (await limiter.hit(key)).blocked
    assert (await limiter.blocked(key)).blocked
    await limiter.refund(key)
    assert not (await limiter.blocked(key)).blocked
    assert await RedisFactorStore(clients.primary, "u:").remove_all("alice") == 0


async def test_a_login_is_not_reported_durable_while_its_shards_replica_is_stopped(
    clients: RedisClients, redis_cluster: RedisCluster
) -> None:
    store = RedisSessionStore(clients.primary, "dur:", wait_replicas=1, wait_timeout_ms=200)
    manager = SessionManager(store, idle_timeout=600, absolute_timeout=3600)
    await manager.create("erin")  # the shard's replica acknowledges
    primary = redis_cluster.primary_for(store.keys.tag_index(tokens.subject_tag("erin")))
    (replica,) = redis_cluster.replicas_of(primary)
    assert replica.pid is not None
    os.kill(replica.pid, signal.SIGSTOP)
    try:
        with pytest.raises(StoreWriteNotDurable):
            await manager.create("erin")
        subjects = ("a", "b", "c", "d", "e", "f", "g", "h")
        index = {s: store.keys.tag_index(tokens.subject_tag(s)) for s in subjects}
        shard = {s: redis_cluster.primary_for(index[s]) for s in subjects}
        other = next(s for s in subjects if shard[s] is not primary)
        await manager.create(other)  # another shard's replicas are not stopped
    finally:
        os.kill(replica.pid, signal.SIGCONT)


async def test_sessions_are_found_by_sid_listed_and_revoked_through_the_slots_index(
    clients: RedisClients,
) -> None:
    """On the cluster: the slot's index (``{c}i``, in the slot of the subject's tag, on that
    shard) serves the lookup by sid, a session update, a rotation, the listing and revoke-all
    of each subject (scripts and ``HSCAN`` routed to the tag's shard), and its prune."""
    store = RedisSessionStore(clients.primary, "idx:")
    manager = SessionManager(store, idle_timeout=600, absolute_timeout=3600, touch_interval=0.0)
    made = {sub: [await manager.create(sub) for _ in range(2)] for sub in ("ann", "ben", "cy")}
    for sub, sessions in made.items():
        for token, session in sessions:
            assert (await store.get_by_sid(session.sid)) == session
            assert await store.token_hash_of(session.sid) == tokens.token_hash(token)
        assert await store.update(sessions[0][1].sid, lambda s: s) is not None
        rotated = await manager.rotate(sessions[0][0])
        assert rotated.token is not None and (await manager.lookup(rotated.token)).sub == sub
        listed = await store.list_subject(sub)
        assert sorted(s.sid for s in listed) == sorted(s.sid for _, s in sessions)
    assert await store.revoke_subject("ben") == 2
    assert await store.list_subject("ben") == [] and len(await store.list_subject("ann")) == 2
    for _ in range(33):
        await manager.create("dee")
    index = store.keys.slot_index(tokens.subject_tag("dee"))
    assert await clients.primary.hget(index, "#") == b"33 0"  # pruned once, nothing ended
