"""CachingSessionStore on a hand-driven trust source and clock (no Redis), and the
InvalidationSubscriber and the cache barrier against a real redis-server."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from extauthz.errors import SettingsError, StoreUnavailable
from extauthz.settings import load_settings
from extauthz.store.cache import CachingSessionStore, lookup_source
from extauthz.store.memory import MemorySessionStore
from extauthz.store.model import Session
from extauthz.store.redis.channel import Channel
from extauthz.store.redis.invalidation import InvalidationSubscriber, cache_barrier
from extauthz.store.redis.membership import Membership
from extauthz.store.redis.store import RedisSessionStore
from tests.support import RedisServer
from tests.support.redis_nodes import RedisNode
from tests.support.tcp_proxy import TcpProxy


class Trust:
    def __init__(self) -> None:
        self.ok = True
        self.listeners: list[CachingSessionStore] = []

    def trusted(self) -> bool:
        return self.ok

    def down_seconds(self) -> float | None:
        return None if self.ok else 1.0

    def add_listener(self, listener: object) -> None:
        assert isinstance(listener, CachingSessionStore)
        self.listeners.append(listener)

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        self.ok = False


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class CountingStore(MemorySessionStore):
    """The in-memory store, counting reads; ``down`` makes every call fail."""

    def __init__(self) -> None:
        super().__init__()
        self.reads = 0
        self.down = False
        self.gate: asyncio.Event | None = None

    async def get(self, token_hash: str) -> Session | None:
        self.reads += 1
        if self.down:
            raise StoreUnavailable("down")
        if self.gate is not None:
            await self.gate.wait()
        return await super().get(token_hash)


def _session(sid: str = "s1", sub: str = "alice") -> Session:
    now = time.time()
    return Session(sid=sid, sub=sub, created_at=now, last_seen=now, idle_timeout=600,
                   expires_at=now + 3600)  # fmt: skip


@pytest.fixture
def parts() -> tuple[CachingSessionStore, CountingStore, Trust, Clock]:
    inner, trust, clock = CountingStore(), Trust(), Clock()
    cache = CachingSessionStore(inner, trust, max_entries=3, max_age=5.0, clock=clock)
    return cache, inner, trust, clock


async def test_second_read_is_a_hit(parts) -> None:  # type: ignore[no-untyped-def]
    cache, inner, _, _ = parts
    await cache.create("h1", _session())
    assert (await cache.get("h1")) is not None and lookup_source.get() == "miss"
    assert (await cache.get("h1")) is not None and lookup_source.get() == "hit"
    assert inner.reads == 1


async def test_untrusted_channel_bypasses_and_sees_changes_behind_its_back(parts) -> None:  # type: ignore[no-untyped-def]
    cache, inner, trust, _ = parts
    await cache.create("h1", _session())
    await cache.get("h1")
    await inner.revoke("h1")  # behind the cache's back: no invalidation
    assert await cache.get("h1") is not None  # trusted: the (now stale) entry answers
    trust.ok = False
    assert await cache.get("h1") is None
    assert lookup_source.get() == "bypass"


async def test_untrusted_channel_and_a_dead_store_is_unavailable_not_a_cached_allow(parts) -> None:  # type: ignore[no-untyped-def]
    cache, inner, trust, _ = parts
    await cache.create("h1", _session())
    await cache.get("h1")
    trust.ok = False
    inner.down = True
    with pytest.raises(StoreUnavailable):
        await cache.get("h1")


async def test_invalidation_and_reset_drop_entries(parts) -> None:  # type: ignore[no-untyped-def]
    cache, inner, _, _ = parts
    dropped: list[str] = []
    cache.set_on_drop(dropped.append)
    for h, sid in (("h1", "s1"), ("h2", "s2")):
        await cache.create(h, _session(sid))
        await cache.get(h)
    cache.invalidate("h1")
    assert dropped == ["s1"] and len(cache) == 1
    cache.reset()
    assert len(cache) == 0


async def test_entries_expire_after_max_age(parts) -> None:  # type: ignore[no-untyped-def]
    cache, inner, _, clock = parts
    await cache.create("h1", _session())
    await cache.get("h1")
    clock.now += 4.9
    await cache.get("h1")
    assert lookup_source.get() == "hit"
    clock.now += 0.2
    await cache.get("h1")
    assert lookup_source.get() == "miss" and inner.reads == 2


async def test_size_is_bounded_least_recently_used_first(parts) -> None:  # type: ignore[no-untyped-def]
    cache, _, _, _ = parts
    for i in range(4):
        await cache.create(f"h{i}", _session(f"s{i}"))
    for h in ("h0", "h1", "h2", "h0", "h3"):
        await cache.get(h)
    assert len(cache) == 3
    await cache.get("h1")  # the least recently used one was dropped
    assert lookup_source.get() == "miss"


async def test_fill_overlapping_an_invalidation_is_discarded(parts) -> None:  # type: ignore[no-untyped-def]
    cache, inner, _, _ = parts
    await cache.create("h1", _session())
    inner.gate = asyncio.Event()
    read = asyncio.create_task(cache.get("h1"))
    await asyncio.sleep(0)  # the read is in flight with the old record ...
    cache.invalidate("h1")  # ... when the revocation's message is processed
    inner.gate.set()
    assert await read is not None  # a concurrent read may still see it once
    assert len(cache) == 0 and cache.stats["discarded_fills"] == 1


async def test_read_started_while_untrusted_does_not_fill(parts) -> None:  # type: ignore[no-untyped-def]
    cache, _, trust, _ = parts
    await cache.create("h1", _session())
    trust.ok = False
    await cache.get("h1")
    trust.ok = True
    await cache.get("h1")
    assert lookup_source.get() == "miss"


def test_cache_settings_are_validated() -> None:
    s = load_settings(environ={"EXTAUTHZ_CACHE_TRUST_WINDOW_MS": "250"})
    assert s.cache.trust_window_ms == 250 and s.cache.enabled
    with pytest.raises(SettingsError, match="cache.trust_window_ms"):
        load_settings(environ={"EXTAUTHZ_CACHE_TRUST_WINDOW_MS": "5"})
    with pytest.raises(SettingsError, match="cache.max_entries"):
        load_settings(environ={"EXTAUTHZ_CACHE_MAX_ENTRIES": "0"})


# -- the subscriber and the barrier on a real Redis --------------------------------------------


@pytest.fixture
async def client(fresh_redis: RedisServer) -> AsyncIterator[aioredis.Redis]:
    c = aioredis.Redis.from_url(fresh_redis.url, socket_timeout=1.0)
    yield c
    await c.aclose()


async def _until(predicate, timeout: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)


def _subscriber(client: aioredis.Redis, node_id: str = "n1") -> InvalidationSubscriber:
    membership = Membership(client, "t:", node_id)
    return InvalidationSubscriber(membership, Channel(client, "t:invalidate"), trust_window=0.3)


@pytest.mark.e2e
async def test_subscriber_trusts_only_after_proofs_and_acks_revocations(
    client: aioredis.Redis,
) -> None:
    sub = _subscriber(client)
    barrier = cache_barrier(Membership(client, "t:", "revoker"))
    inner = RedisSessionStore(client, "t:", invalidation_barrier=barrier)
    cache = CachingSessionStore(inner, sub)
    assert not sub.trusted()
    await cache.start()
    try:
        await _until(sub.trusted)
        await cache.create("h1", _session())
        await cache.get("h1")
        await cache.get("h1")
        assert lookup_source.get() == "hit"
        t0 = time.monotonic()
        await inner.revoke("h1")  # through the store, not the cache: only the push drops it
        assert time.monotonic() - t0 < 0.3  # acknowledged, not waited out
        assert len(cache) == 0
        acks = await client.hget("t:cache-acks", sub.instance)
        assert acks is not None and int(acks) == 1
    finally:
        await cache.stop()
    assert not sub.trusted()
    assert await client.zscore("t:cache-nodes", sub.instance) is None


@pytest.mark.e2e
async def test_killed_pubsub_connection_clears_the_cache(client: aioredis.Redis) -> None:
    sub = _subscriber(client)
    cache = CachingSessionStore(RedisSessionStore(client, "t:"), sub)
    await cache.start()
    try:
        await _until(sub.trusted)
        await cache.create("h1", _session())
        await cache.get("h1")
        assert len(cache) == 1
        epoch = sub.epoch
        await client.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
        await _until(lambda: sub.epoch > epoch)
        assert len(cache) == 0
        await _until(sub.trusted)  # it comes back on its own
    finally:
        await cache.stop()


@pytest.mark.e2e
async def test_a_subscriber_behind_a_lagging_replica_leaves_so_revocations_stop_waiting(
    client: aioredis.Redis, tmp_path: Path
) -> None:
    """The node reads its channel from a replica whose link to the primary lags by a second:
    the subscription stays up (the replica answers pings) but the proofs come late. Within a
    few trust windows the node leaves CACHE, and a revocation returns at once instead of
    waiting out the window for it; when the lag ends it registers anew, with a cleared cache."""
    primary_url = client.connection_pool.connection_kwargs
    primary = (primary_url["host"], primary_url["port"])
    with TcpProxy(primary) as link:
        replica = RedisNode(tmp_path / "replica", replicaof=link.address).start()
        await _until(replica.link_up, timeout=10)
        replica_client = aioredis.Redis(port=replica.port, socket_timeout=5.0)
        sub = InvalidationSubscriber(
            Membership(client, "t:", "n1"), Channel(replica_client, "t:invalidate"),
            trust_window=0.3,
        )  # fmt: skip
        barrier = cache_barrier(Membership(client, "t:", "revoker"))
        inner = RedisSessionStore(client, "t:", invalidation_barrier=barrier)
        cache = CachingSessionStore(inner, sub)
        await cache.start()
        try:
            await _until(sub.trusted)
            assert await client.zscore("t:cache-nodes", sub.instance) is not None
            await cache.create("h1", _session())
            await cache.get("h1")
            resets = sub.stats["resets"]

            link.set_latency(1.0)
            await _until(lambda: not sub.trusted())
            await _until_async(lambda: client.zscore("t:cache-nodes", sub.instance), None)
            assert sub.is_subscribed  # the channel itself never went down
            t0 = time.monotonic()
            await inner.revoke("h1")
            assert time.monotonic() - t0 < 0.3  # not waited out: nobody left to wait for

            link.heal()
            await _until(sub.trusted, timeout=15)
            assert await client.zscore("t:cache-nodes", sub.instance) is not None
            assert sub.stats["resets"] > resets and len(cache) == 0
            assert await cache.get("h1") is None
        finally:
            await cache.stop()
            await replica_client.aclose()
            replica.stop()


async def _until_async(read, expected: object, timeout: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while (value := await read()) != expected:
        assert time.monotonic() < deadline, f"still {value!r}, waiting for {expected!r}"
        await asyncio.sleep(0.02)


@pytest.mark.e2e
async def test_barrier_waits_out_the_trust_window_for_a_silent_node(
    client: aioredis.Redis,
) -> None:
    # a registered instance that never acknowledges (its process hangs)
    await client.eval(
        "local t = redis.call('TIME') redis.call('ZADD', KEYS[1], t[1] * 1000, 'ghost/1')",
        1,
        "t:cache-nodes",
    )
    barrier = cache_barrier(Membership(client, "t:", "n1"), trust_window=0.2, margin=0.05)
    assert await barrier.pending(1) == ["ghost/1"]
    t0 = time.monotonic()
    await barrier(1)
    assert 0.25 <= time.monotonic() - t0 < 1.0
    assert barrier.stats["timeouts"] == 1
