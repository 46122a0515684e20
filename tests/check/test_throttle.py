"""The throttle of failed token lookups (extauthz.check.throttle) when its rate limiter cannot
answer: counting fails open (a guess stays a 401, never a 503); a bug is not taken for an
outage."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import pytest
import redis.asyncio
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from extauthz import tokens
from extauthz.check.context import RequestContext
from extauthz.check.resolver import SessionResolver
from extauthz.check.throttle import LookupThrottle
from extauthz.errors import Reason, Unauthenticated
from extauthz.login.cookies import SessionCookie
from extauthz.login.ratelimit import MemoryRateLimiter, RateKey, Verdict
from extauthz.store.manager import SessionManager
from extauthz.store.memory import MemorySessionStore
from extauthz.store.redis.ratelimit import RedisRateLimiter
from tests.support import free_port

PEER = "198.51.100.7"
LIMIT = 5


@pytest.fixture
async def unreachable() -> AsyncIterator[RedisRateLimiter]:
    """The Redis rate limiter on a port nobody listens on: every call is refused."""
    dead = redis.asyncio.Redis(
        host="127.0.0.1", port=free_port(), socket_connect_timeout=1, retry=Retry(NoBackoff(), 0)
    )
    try:
        yield RedisRateLimiter(dead, "t:", limit=LIMIT, window_seconds=60)
    finally:
        await dead.aclose()


class BuggyLimiter(MemoryRateLimiter):
    async def hit(self, key: RateKey) -> Verdict:
        raise RuntimeError("a bug, not an outage")


async def test_a_limiter_that_cannot_answer_counts_nothing_and_blocks_no_one(
    unreachable: RedisRateLimiter, caplog: pytest.LogCaptureFixture
) -> None:
    throttle = LookupThrottle(unreachable)
    with caplog.at_level(logging.WARNING, logger="extauthz.check.throttle"):
        assert await throttle.failed(PEER, LIMIT + 1) == 0
    assert throttle.retry_after(PEER) == 0
    assert "rate limiter unavailable" in caplog.text


async def test_a_guess_stays_a_401_while_the_limiter_cannot_answer(
    unreachable: RedisRateLimiter,
) -> None:
    sessions = SessionManager(MemorySessionStore(), idle_timeout=600, absolute_timeout=3600)
    resolver = SessionResolver(sessions, SessionCookie("sid"), throttle=LookupThrottle(unreachable))
    guess = RequestContext(
        method="GET",
        scheme="https",
        host="app.test",
        path="/",
        headers={"authorization": f"Bearer {tokens.mint_token()}"},
        peer_address=PEER,
    )
    for _ in range(LIMIT + 2):  # past the limit: nothing could be counted, nothing is blocked
        with pytest.raises(Unauthenticated) as denied:
            await resolver.resolve(guess)
        assert denied.value.reason is Reason.UNKNOWN_SESSION


async def test_a_bug_in_the_limiter_is_not_taken_for_an_outage() -> None:
    throttle = LookupThrottle(BuggyLimiter(LIMIT, 60))
    with pytest.raises(RuntimeError, match="a bug"):
        await throttle.failed(PEER)
