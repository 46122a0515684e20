"""A token whose session ended before its absolute expiry (idle timeout, revocation, rotation)
is its holder's stale cookie, not a guess: the lookup names why (``session_expired``,
``revoked_session``) and the per-address throttle of failed lookups (``check:addr``) counts
nothing, while a token the store never issued still counts. The same tests over the in-memory
store (on an injected clock) and the Redis store (a ``redis-server`` of this module's own, on
the real clock: Redis expires the records itself, so the idle timeout really passes)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import pytest
import redis.asyncio as aioredis

from extauthz import tokens
from extauthz.check.context import RequestContext
from extauthz.check.resolver import SessionResolver
from extauthz.check.throttle import LookupThrottle
from extauthz.errors import Reason, TooManyRequests, Unauthenticated
from extauthz.login.cookies import SessionCookie
from extauthz.login.ratelimit import CHECK_ADDR, MemoryRateLimiter, RateKey, address_subject
from extauthz.store.manager import SessionManager
from extauthz.store.memory import MemorySessionStore
from extauthz.store.model import SessionStore
from extauthz.store.redis.keys import SessionKeys
from extauthz.store.redis.store import RedisSessionStore
from tests.fixtures.core import FakeClock
from tests.support import RedisServer

IDLE = 1  # seconds: the Redis variant waits it out for real
ABSOLUTE = 60
GRACE = 0.2  # a rotated token's grace, over before the idle timeout
LIMIT = 5  # failed lookups per address and window
COOKIE = "sid"
PEER = "203.0.113.9"


@dataclass
class Env:
    store: SessionStore
    sessions: SessionManager
    resolver: SessionResolver
    limiter: MemoryRateLimiter
    # lets the idle timeout of every session that is not used meanwhile pass
    idle_out: Callable[[], Awaitable[None]]
    clock: Callable[[], float]

    async def remaining(self) -> int:
        """Failed lookups ``PEER`` may still make in this window."""
        return (await self.limiter.blocked(RateKey(CHECK_ADDR, address_subject(PEER)))).remaining

    async def denied(self, token: str) -> Reason:
        """The reason the resolver (as at Check) refuses ``token`` as a session cookie."""
        ctx = RequestContext(
            method="GET",
            scheme="https",
            host="app.test",
            path="/",
            headers={"cookie": f"{COOKIE}={token}"},
            peer_address=PEER,
        )
        with pytest.raises(Unauthenticated) as caught:
            await self.resolver.resolve(ctx)
        return caught.value.reason


async def _no_wait() -> None:
    return None


def _env(
    store: SessionStore, clock: Callable[[], float], idle_out: Callable[[], Awaitable[None]]
) -> Env:
    sessions = SessionManager(
        store,
        idle_timeout=IDLE,
        absolute_timeout=ABSOLUTE,
        clock=clock,
        rotation_grace_seconds=GRACE,
    )
    window = FakeClock()  # the throttle's window does not end during a test
    limiter = MemoryRateLimiter(LIMIT, 60, clock=window)
    throttle = LookupThrottle(limiter, clock=window)
    resolver = SessionResolver(sessions, SessionCookie(COOKIE), throttle=throttle)
    return Env(store, sessions, resolver, limiter, idle_out, clock)


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.e2e)])
async def env(request: pytest.FixtureRequest) -> AsyncIterator[Env]:
    if request.param == "memory":
        clock = FakeClock()

        async def advance() -> None:
            clock.advance(IDLE + 0.5)

        yield _env(MemorySessionStore(clock=clock), clock, advance)
        return
    server: RedisServer = request.getfixturevalue("redis_process")
    client = aioredis.Redis.from_url(server.url)

    async def wait() -> None:
        await asyncio.sleep(IDLE + 0.3)

    store = RedisSessionStore(client, f"t{uuid.uuid4().hex[:8]}:", clock=time.time)
    yield _env(store, time.time, wait)
    await client.aclose()


async def test_a_token_that_idled_out_is_expired_and_never_counted(env: Env) -> None:
    token, _ = await env.sessions.create("alice")
    await env.idle_out()
    assert await env.store.get(tokens.token_hash(token)) is None  # the record is gone
    for _ in range(LIMIT + 1):  # the sub-requests of the first page after the idle timeout
        assert await env.denied(token) is Reason.SESSION_EXPIRED
    assert await env.remaining() == LIMIT
    neighbour, _ = await env.sessions.create("bob")
    assert (await env.sessions.lookup(neighbour)).sub == "bob"
    assert await env.sessions.was_issued(token) and await env.sessions.was_issued(neighbour)


async def test_the_new_token_of_a_rotation_that_idled_out_is_expired_and_never_counted(
    env: Env,
) -> None:
    old, _ = await env.sessions.create("alice")
    rotated = await env.sessions.rotate(old)
    assert rotated.created and rotated.token is not None
    new = rotated.token
    await env.idle_out()  # longer than the grace too
    assert await env.store.get(tokens.token_hash(new)) is None
    for _ in range(LIMIT + 1):
        assert await env.denied(new) is Reason.SESSION_EXPIRED
        assert await env.denied(old) is Reason.REVOKED_SESSION  # rotated, its grace over
    assert await env.remaining() == LIMIT


async def test_a_token_the_store_never_issued_still_counts(env: Env) -> None:
    live, _ = await env.sessions.create("alice")
    for n in range(LIMIT):
        assert await env.denied(tokens.mint_token()) is Reason.UNKNOWN_SESSION
        assert await env.remaining() == LIMIT - n - 1
    with pytest.raises(TooManyRequests):
        await env.denied(tokens.mint_token())
    assert not await env.sessions.was_issued(tokens.mint_token())
    assert not await env.sessions.was_issued("not-a-token")
    assert (await env.sessions.lookup(live)).sub == "alice"  # the lookup itself is unchanged


async def test_a_revoked_token_stays_revoked_also_after_its_idle_timeout(env: Env) -> None:
    token, _ = await env.sessions.create("alice")
    assert await env.sessions.revoke_token(token) is not None
    assert await env.denied(token) is Reason.REVOKED_SESSION
    await env.idle_out()
    for _ in range(LIMIT + 1):
        assert await env.denied(token) is Reason.REVOKED_SESSION
    assert await env.remaining() == LIMIT


async def test_after_the_absolute_expiry_the_token_is_unknown_again() -> None:
    """The markers last as long as the cookie may (its ``Max-Age``), not longer: the store
    does not grow with every token it ever issued."""
    clock = FakeClock()
    store = MemorySessionStore(clock=clock)
    env = _env(store, clock, _no_wait)
    token, session = await env.sessions.create("alice")
    rotated = await env.sessions.rotate(token)
    assert rotated.token is not None
    clock.now = session.expires_at
    await env.sessions.create("bob")  # a write purges what expired
    assert await env.denied(token) is Reason.UNKNOWN_SESSION
    assert await env.denied(rotated.token) is Reason.UNKNOWN_SESSION
    assert await env.remaining() == LIMIT - 2
    assert len(store._issued_until) == 1  # bob's token only


@pytest.mark.e2e
async def test_redis_markers_are_small_and_expire_at_the_absolute_expiry(
    redis_process: RedisServer,
) -> None:
    """What remembers a token until the session's absolute expiry, whatever the idle timeout:
    a tagged session's record itself (the create's and the rotation's script keep it that
    long; the store reads it as ended past the idle deadline), and the rotated token's
    tombstone; both small."""
    client = aioredis.Redis.from_url(redis_process.url)
    try:
        p = f"t{uuid.uuid4().hex[:8]}:"
        keys = SessionKeys(p)
        store = RedisSessionStore(client, p)
        env = _env(store, time.time, _no_wait)
        token, _ = await env.sessions.create("alice")
        rotated = await env.sessions.rotate(token)
        assert rotated.token is not None
        record = keys.issued(tokens.token_hash(rotated.token))
        assert record == keys.record(tokens.token_hash(rotated.token))
        tombstone = keys.revoked(tokens.token_hash(token))
        assert await client.get(tombstone) == b"1"
        for key in (record, tombstone):
            assert (ABSOLUTE - 5) * 1000 < await client.pttl(key) <= ABSOLUTE * 1000
        usage = await client.memory_usage(record)
        assert usage is not None and usage <= 240  # bytes (216 on Redis 7.0)
        assert await store.was_issued(tokens.token_hash(rotated.token))
        assert await store.was_issued(tokens.token_hash(token)) is False  # revoked instead
        assert await store.was_revoked(tokens.token_hash(token))
    finally:
        await client.aclose()
