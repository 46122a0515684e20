"""Tests for extauthz.login.ratelimit: the memory limiter on a fake clock, the Redis limiter on a
real server."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator

import pytest
import redis.asyncio
import redis.exceptions
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from extauthz.errors import StoreUnavailable
from extauthz.login.ratelimit import (
    CHECK_ADDR,
    LOGIN_ADDR,
    LOGIN_USER,
    MemoryRateLimiter,
    RateKey,
    Verdict,
    address_subject,
)
from extauthz.store.redis.ratelimit import RedisRateLimiter
from tests.support import RedisServer, free_port

# ---------------------------------------------------------------- a private redis-server


@pytest.fixture(scope="module")
def redis_port(redis_process: RedisServer) -> int:
    """The port of this module's own redis-server (tests/conftest.py)."""
    return redis_process.port


@pytest.fixture
async def client(redis_port: int) -> AsyncIterator[redis.asyncio.Redis]:
    c = redis.asyncio.Redis(host="127.0.0.1", port=redis_port, socket_timeout=5)
    await c.flushdb()
    try:
        yield c
    finally:
        await c.aclose()


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


USER = RateKey(LOGIN_USER, "alice")


# ---------------------------------------------------------------- keys


def test_storage_key_hashes_the_subject() -> None:
    odd = RateKey(LOGIN_USER, "a b\r\n*?[x]:login:addr:\x00é")
    assert re.fullmatch(r"login:user:[0-9a-f]{32}", odd.storage_key)
    assert RateKey(LOGIN_USER, "alice").storage_key == USER.storage_key
    assert RateKey(LOGIN_USER, "Alice").storage_key != USER.storage_key
    assert RateKey(LOGIN_ADDR, "alice").storage_key != USER.storage_key


@pytest.mark.parametrize("namespace", ["", "Login:user", "login::user", "login:user:", "a b", "x*"])
def test_bad_namespace_is_refused(namespace: str) -> None:
    with pytest.raises(ValueError, match="namespace"):
        RateKey(namespace, "alice")


@pytest.mark.parametrize(
    ("address", "subject"),
    [
        ("192.0.2.7", "192.0.2.7"),
        ("::ffff:192.0.2.7", "192.0.2.7"),
        ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:ffff:ffff:ffff:ffff", "2001:db8:1:2::/64"),
        ("not an address", "not an address"),
    ],
)
def test_address_subject(address: str, subject: str) -> None:
    assert address_subject(address) == subject
    assert RateKey.for_address(CHECK_ADDR, address) == RateKey(CHECK_ADDR, subject)


@pytest.mark.parametrize(("limit", "window"), [(0, 1), (1, 0), (-1, 5), (True, 5), (3, 1.5)])
def test_bad_config_is_refused(limit: int, window: int) -> None:
    with pytest.raises(ValueError):
        MemoryRateLimiter(limit, window)


# ---------------------------------------------------------------- memory limiter


async def test_memory_blocks_after_limit_and_recovers_after_window() -> None:
    clock = FakeClock()
    rl = MemoryRateLimiter(limit=3, window_seconds=60, clock=clock)
    assert await rl.blocked(USER) == Verdict(False, 0, 3)
    verdicts = [await rl.hit(USER) for _ in range(3)]
    assert [v.blocked for v in verdicts] == [False, False, False]
    assert [v.remaining for v in verdicts] == [2, 1, 0]

    clock.now += 10.5
    check = await rl.blocked(USER)
    assert check.blocked and check.retry_after_seconds == 50  # ceil(49.5)
    over = await rl.hit(USER)
    assert over.blocked and over.retry_after_seconds == 50

    clock.now += 49.4  # 0.1 s left: still blocked, Retry-After rounds up to 1
    assert (await rl.blocked(USER)).retry_after_seconds == 1
    clock.now += 0.1
    assert await rl.blocked(USER) == Verdict(False, 0, 3)
    assert not (await rl.hit(USER)).blocked


async def test_memory_window_does_not_slide_with_hits() -> None:
    clock = FakeClock()
    rl = MemoryRateLimiter(limit=2, window_seconds=10, clock=clock)
    await rl.hit(USER)
    clock.now += 9
    await rl.hit(USER)
    assert (await rl.hit(USER)).retry_after_seconds == 1
    clock.now += 1
    assert not (await rl.hit(USER)).blocked


async def test_memory_keys_are_independent_and_reset() -> None:
    rl = MemoryRateLimiter(limit=1, window_seconds=60, clock=FakeClock())
    other = RateKey(LOGIN_USER, "bob")
    same_subject_other_ns = RateKey(LOGIN_ADDR, "alice")
    await rl.hit(USER)
    assert (await rl.blocked(USER)).blocked
    assert not (await rl.blocked(other)).blocked
    assert not (await rl.blocked(same_subject_other_ns)).blocked
    await rl.reset(USER)
    assert not (await rl.blocked(USER)).blocked


async def test_memory_sweeps_expired_counters() -> None:
    clock = FakeClock()
    rl = MemoryRateLimiter(limit=1, window_seconds=1, clock=clock)
    for i in range(1023):
        await rl.hit(RateKey(CHECK_ADDR, str(i)))
    clock.now += 2
    await rl.hit(USER)  # the 1024th entry triggers a sweep of the 1023 expired ones
    assert len(rl._counters) == 1


# ---------------------------------------------------------------- redis limiter


@pytest.mark.e2e
async def test_redis_blocks_after_limit_and_recovers_after_window(
    client: redis.asyncio.Redis,
) -> None:
    rl = RedisRateLimiter(client, "t:", limit=3, window_seconds=1)
    for expected_remaining in (2, 1, 0):
        assert await rl.hit(USER) == Verdict(False, 0, expected_remaining)
    check = await rl.blocked(USER)
    assert check.blocked and check.retry_after_seconds == 1
    over = await rl.hit(USER)
    assert over.blocked and over.retry_after_seconds >= 1

    deadline = time.monotonic() + 3
    while (await rl.blocked(USER)).blocked:
        assert time.monotonic() < deadline, "still blocked 3 s after a 1 s window"
        await asyncio.sleep(0.05)
    assert not (await rl.hit(USER)).blocked


@pytest.mark.e2e
async def test_redis_retry_after_reflects_the_window(client: redis.asyncio.Redis) -> None:
    rl = RedisRateLimiter(client, "t:", limit=1, window_seconds=30)
    await rl.hit(USER)
    verdict = await rl.blocked(USER)
    assert verdict.blocked and verdict.retry_after_seconds == 30
    ttl_ms = await client.pttl(rl.redis_key(USER))
    assert 29_000 < ttl_ms <= 30_000


@pytest.mark.e2e
async def test_redis_keys_are_namespaced_hashed_and_independent(
    client: redis.asyncio.Redis,
) -> None:
    rl = RedisRateLimiter(client, "t:", limit=1, window_seconds=60)
    odd = RateKey(LOGIN_USER, "evil\r\n*{x}")
    await rl.hit(odd)
    await rl.hit(USER)
    assert (await rl.blocked(odd)).blocked
    assert not (await rl.blocked(RateKey(LOGIN_USER, "bob"))).blocked
    assert not (await rl.blocked(RateKey(LOGIN_ADDR, "alice"))).blocked
    keys = sorted(k.decode() if isinstance(k, bytes) else k for k in await client.keys("*"))
    assert len(keys) == 2
    assert all(re.fullmatch(r"t:rl:login:user:[0-9a-f]{32}", k) for k in keys)

    await rl.reset(USER)
    assert not (await rl.blocked(USER)).blocked
    assert (await rl.blocked(odd)).blocked


@pytest.mark.e2e
async def test_redis_repairs_a_counter_without_ttl(client: redis.asyncio.Redis) -> None:
    rl = RedisRateLimiter(client, "t:", limit=5, window_seconds=60)
    await client.set(rl.redis_key(USER), 7)  # e.g. left behind without an expiry
    verdict = await rl.hit(USER)
    assert verdict.blocked and verdict.retry_after_seconds == 60
    assert await client.ttl(rl.redis_key(USER)) > 0


@pytest.mark.e2e
async def test_redis_concurrent_hits_count_exactly(redis_port: int) -> None:
    # a pool of many connections, so the 50 INCRs really interleave on the server
    c = redis.asyncio.Redis(host="127.0.0.1", port=redis_port, max_connections=50)
    try:
        rl = RedisRateLimiter(c, "conc:", limit=20, window_seconds=60)
        await c.delete(rl.redis_key(USER))
        verdicts = await asyncio.gather(*(rl.hit(USER) for _ in range(50)))
        assert sum(not v.blocked for v in verdicts) == 20
        assert sorted(v.remaining for v in verdicts if not v.blocked) == list(range(20))
        assert await c.get(rl.redis_key(USER)) == b"50"
    finally:
        await c.aclose()


async def test_memory_concurrent_hits_count_exactly() -> None:
    rl = MemoryRateLimiter(limit=20, window_seconds=60, clock=FakeClock())
    verdicts = await asyncio.gather(*(rl.hit(USER) for _ in range(50)))
    assert sum(not v.blocked for v in verdicts) == 20


async def test_redis_errors_become_store_unavailable() -> None:
    dead = redis.asyncio.Redis(
        host="127.0.0.1", port=free_port(), socket_connect_timeout=1, retry=Retry(NoBackoff(), 0)
    )
    try:
        rl = RedisRateLimiter(dead, "t:", limit=1, window_seconds=1)
        with pytest.raises(StoreUnavailable) as raised:
            await rl.hit(USER)
        assert isinstance(raised.value.__cause__, redis.exceptions.ConnectionError)
        with pytest.raises(StoreUnavailable):
            await rl.blocked(USER)
        with pytest.raises(StoreUnavailable):
            await rl.reset(USER)
    finally:
        await dead.aclose()


# ---------------------------------------------------------------- refund (reserve, then settle)


async def test_memory_refund_takes_one_hit_back_within_the_window() -> None:
    clock = FakeClock()
    rl = MemoryRateLimiter(limit=2, window_seconds=60, clock=clock)
    await rl.refund(USER)  # nothing to take back: no negative counts
    await rl.hit(USER)
    await rl.hit(USER)
    assert (await rl.blocked(USER)).blocked
    await rl.refund(USER)
    verdict = await rl.blocked(USER)
    assert not verdict.blocked and verdict.remaining == 1
    clock.now += 30
    assert await rl.hit(USER) == Verdict(False, 0, 0)
    over = await rl.hit(USER)
    assert over.blocked and over.retry_after_seconds == 30  # the window did not move
    clock.now += 31
    await rl.refund(USER)  # the window is over: nothing happens
    assert (await rl.hit(USER)).remaining == 1


@pytest.mark.e2e
async def test_redis_refund_takes_one_hit_back_and_keeps_the_ttl(
    client: redis.asyncio.Redis,
) -> None:
    rl = RedisRateLimiter(client, "t:", limit=2, window_seconds=60)
    await rl.refund(USER)
    assert await client.exists(rl.redis_key(USER)) == 0  # no key, no negative count
    await rl.hit(USER)
    await rl.hit(USER)
    assert (await rl.blocked(USER)).blocked
    await rl.refund(USER)
    assert not (await rl.blocked(USER)).blocked
    assert await client.get(rl.redis_key(USER)) == b"1"
    assert 0 < await client.pttl(rl.redis_key(USER)) <= 60_000
    await rl.refund(USER)
    await rl.refund(USER)
    assert await client.get(rl.redis_key(USER)) == b"0"
