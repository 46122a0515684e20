"""A shard of the Redis Cluster loses its primary (``kill -9``): reads answer
``StoreUnavailable`` (503) during the gap and never "no such session", the durable record is
read again from the promoted replica through the same client (new slot map), and the node's
invalidation subscription comes back on the promoted primary (the cache is bypassed meanwhile).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from extauthz.errors import StoreUnavailable
from extauthz.store.model import Session
from extauthz.store.redis.channel import Channel
from extauthz.store.redis.clients import RedisClients
from extauthz.store.redis.cluster import StoreCluster
from extauthz.store.redis.durable import DurablePipeline
from extauthz.store.redis.invalidation import InvalidationSubscriber
from extauthz.store.redis.membership import Membership
from extauthz.store.redis.store import RedisSessionStore
from harness.redis_cluster import RedisCluster
from tests.support.redis_cluster import cluster_clients

pytestmark = pytest.mark.e2e

PREFIX = "fo:"


@pytest.fixture
async def clients(redis_cluster: RedisCluster) -> AsyncIterator[RedisClients]:
    built = cluster_clients(redis_cluster)
    yield built
    await built.aclose()


def _session(sub: str) -> Session:
    now = time.time()
    return Session(sid="s-" + sub, sub=sub, created_at=now, last_seen=now, idle_timeout=600,
                   expires_at=now + 600)  # fmt: skip


async def test_a_killed_shard_primary_costs_503s_then_everything_works_again(
    clients: RedisClients, redis_cluster: RedisCluster
) -> None:
    cluster = clients.primary
    assert isinstance(cluster, StoreCluster)
    store = RedisSessionStore(cluster, PREFIX, wait_replicas=1, wait_timeout_ms=250)
    victim = redis_cluster.primary_for(store.invalidation_channel)
    channel = Channel(cluster, store.invalidation_channel)
    membership = Membership(cluster, PREFIX, "n1", strategy="central", version="t",
                            topology="cluster", heartbeat_seconds=1.0)  # fmt: skip
    subscriber = InvalidationSubscriber(membership, channel, trust_window=0.3)
    # a record on the shard that is about to lose its primary, written with WAIT 1
    token_hash = next(
        h for h in (f"h{n}" for n in range(10_000))
        if redis_cluster.primary_for(PREFIX + "session:" + h) is victim
    )  # fmt: skip
    key = PREFIX + "session:" + token_hash
    pipe = DurablePipeline(await cluster.shard_for(key), 1, 250)
    pipe.set(key, _session("alice").to_json(), px=600_000)
    await pipe.execute()
    # a second client that learns the slot map now and stays idle through the failover and the
    # old primary's return as a replica (redis-py's stale-slot path: MOVED from the old node)
    idle = cluster_clients(redis_cluster)
    idle_store = RedisSessionStore(idle.primary, PREFIX)
    assert await idle_store.get(token_hash) is not None
    await subscriber.start()
    try:
        for _ in range(250):
            if subscriber.trusted():
                break
            await asyncio.sleep(0.02)
        assert subscriber.trusted()

        killed = time.monotonic()
        assert victim.pid is not None
        victim.kill9()
        await store.ping()  # the node stays healthy: the other primaries answer
        answers: list[tuple[float, str]] = []
        untrusted = False
        while time.monotonic() - killed < 20:
            try:
                found = await asyncio.wait_for(store.get(token_hash), 0.5)
                answers.append((time.monotonic(), "found" if found else "missing"))
            except (StoreUnavailable, TimeoutError):
                answers.append((time.monotonic(), "unavailable"))
            untrusted = untrusted or not subscriber.trusted()
            if answers[-1][1] == "found" and subscriber.trusted() and len(answers) > 3:
                break
            await asyncio.sleep(0.05)
        kinds = [a for _, a in answers]
        assert "missing" not in kinds  # never "no such session" for a durable record
        assert "unavailable" in kinds and kinds[-1] == "found"
        assert untrusted  # the cache was bypassed while the channel was down
        assert subscriber.trusted()  # subscribed again, on the promoted primary
        unavailable = [at for at, a in answers if a == "unavailable"]
        print(
            "cluster shard kill -9:",
            f"first 503 {unavailable[0] - killed:.3f}s, last 503 {unavailable[-1] - killed:.3f}s,",
            f"found again {answers[-1][0] - killed:.3f}s after the kill",
        )
        # an invalidation reaches the node over the new primary's shard channel
        before = subscriber.stats["invalidations"]
        await cluster.eval(store.publish_script, 1, store.invalidation_channel + ":seq",
                           store.invalidation_channel, token_hash)  # fmt: skip
        for _ in range(100):
            if subscriber.stats["invalidations"] > before:
                break
            await asyncio.sleep(0.02)
        assert subscriber.stats["invalidations"] == before + 1
        redis_cluster.rejoin(victim)
        records = await asyncio.gather(*(idle_store.get(token_hash) for _ in range(50)))
        assert all(f is not None for f in records)
    finally:
        await subscriber.stop()
        await idle.aclose()
        if not victim.running:
            redis_cluster.rejoin(victim)
