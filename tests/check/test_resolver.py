"""The session resolver shared by Check and /auth/* (extauthz.check.resolver): credentials,
the per-address throttle of failed lookups, the lookup of every candidate."""

from __future__ import annotations

import pytest

from extauthz import tokens
from extauthz.check.context import RequestContext
from extauthz.check.resolver import SessionResolver
from extauthz.check.throttle import LookupThrottle
from extauthz.errors import Reason, StoreUnavailable, TooManyRequests, Unauthenticated
from extauthz.login.cookies import SessionCookie
from extauthz.login.ratelimit import CHECK_ADDR, MemoryRateLimiter, RateKey, address_subject
from extauthz.store.manager import SessionManager
from extauthz.store.memory import MemorySessionStore
from extauthz.store.model import Session
from tests.fixtures.core import FakeClock

COOKIE = "sid"
PEER = "198.51.100.7"


class CountingStore(MemorySessionStore):
    """Counts lookups; ``fail_after`` lookups succeed, then the store is down."""

    def __init__(self) -> None:
        super().__init__()
        self.gets = 0
        self.fail_after: int | None = None

    async def get(self, token_hash: str) -> Session | None:
        self.gets += 1
        if self.fail_after is not None and self.gets > self.fail_after:
            raise StoreUnavailable("down")
        return await super().get(token_hash)


@pytest.fixture
def store() -> CountingStore:
    return CountingStore()


@pytest.fixture
def throttle() -> LookupThrottle:
    clock = FakeClock(100.0)
    return LookupThrottle(MemoryRateLimiter(5, 60, clock=clock), clock=clock)


@pytest.fixture
def resolver(store: CountingStore, throttle: LookupThrottle) -> SessionResolver:
    sessions = SessionManager(store, idle_timeout=600, absolute_timeout=3600)
    return SessionResolver(sessions, SessionCookie(COOKIE), throttle=throttle)


def request(**headers: str) -> RequestContext:
    return RequestContext(
        method="GET", scheme="https", host="app.test", path="/", headers=headers, peer_address=PEER
    )


def guesses(n: int) -> list[str]:
    return [f"{COOKIE}={tokens.mint_token()}" for _ in range(n)]


async def test_no_credential_is_a_typed_denial_and_no_lookup(
    resolver: SessionResolver, store: CountingStore
) -> None:
    with pytest.raises(Unauthenticated) as denied:
        await resolver.resolve(request(cookie="other=1"))
    assert denied.value.reason is Reason.NO_CREDENTIAL
    assert store.gets == 0


async def test_the_first_live_cookie_wins_and_every_miss_counts(
    resolver: SessionResolver, throttle: LookupThrottle
) -> None:
    own, _ = await resolver.sessions.create("alice")
    header = "; ".join([f"{COOKIE}={own}", *guesses(3)])  # the live one first
    assert (await resolver.resolve(request(cookie=header))).sub == "alice"
    with pytest.raises(TooManyRequests) as throttled:
        await resolver.resolve(request(cookie=header))  # 6 misses: over the limit of 5
    assert throttled.value.retry_after_seconds >= 1
    assert throttle.retry_after(PEER) >= 1


async def test_a_blocked_address_gets_no_lookup_even_for_a_live_token(
    resolver: SessionResolver, store: CountingStore, throttle: LookupThrottle
) -> None:
    await throttle.failed(PEER, 6)
    own, _ = await resolver.sessions.create("alice")
    with pytest.raises(TooManyRequests):
        await resolver.resolve(request(authorization=f"Bearer {own}"))
    assert store.gets == 0
    other = RequestContext(method="GET", scheme="https", host="h", path="/",
                           headers={"authorization": f"Bearer {own}"}, peer_address="192.0.2.1")
    assert (await resolver.resolve(other)).sub == "alice"


async def test_live_cookies_of_different_users_are_ambiguous(resolver: SessionResolver) -> None:
    alice, _ = await resolver.sessions.create("alice")
    bob, _ = await resolver.sessions.create("bob")
    with pytest.raises(Unauthenticated) as denied:
        await resolver.resolve(request(cookie=f"{COOKIE}={alice}; {COOKIE}={bob}"))
    assert denied.value.reason is Reason.AMBIGUOUS_CREDENTIAL


async def test_misses_before_a_store_outage_still_count(
    resolver: SessionResolver, store: CountingStore, throttle: LookupThrottle
) -> None:
    store.fail_after = 2
    with pytest.raises(StoreUnavailable):
        await resolver.resolve(request(cookie="; ".join(guesses(3))))
    key = RateKey(CHECK_ADDR, address_subject(PEER))
    assert (await throttle.limiter.blocked(key)).remaining == 5 - 2  # the two looked-up misses


async def test_tokens_without_the_product_shape_count_as_guesses(
    resolver: SessionResolver, throttle: LookupThrottle
) -> None:
    for _ in range(5):
        with pytest.raises(Unauthenticated) as denied:
            await resolver.resolve(request(cookie=f"{COOKIE}=not-a-token"))
        assert denied.value.reason is Reason.MALFORMED_CREDENTIAL
    with pytest.raises(TooManyRequests):  # malformed tokens are guesses too
        await resolver.resolve(request(cookie=f"{COOKIE}=not-a-token"))


def test_presented_is_every_token_and_skips_what_is_malformed(resolver: SessionResolver) -> None:
    a, b = tokens.mint_token(), tokens.mint_token()
    assert resolver.presented(request(cookie=f"{COOKIE}={a}; {COOKIE}={a}; x=1")) == (a,)
    assert resolver.presented(
        request(cookie=f"{COOKIE}={a}", authorization=f"Bearer {b}")
    ) == (a, b)  # a bearer and a cookie that disagree: both are ended at logout
    assert resolver.presented(
        request(cookie=f"{COOKIE}={a}", authorization="Bearer !!")
    ) == (a,)
    too_many = "; ".join(f"{COOKIE}={tokens.mint_token()}" for _ in range(5))
    assert resolver.presented(request(cookie=too_many, authorization=f"Bearer {b}")) == (b,)


def test_carries_cookie_looks_at_names_only(resolver: SessionResolver) -> None:
    assert resolver.carries_cookie(request(cookie=f"a=1; {COOKIE}="))
    assert not resolver.carries_cookie(request(cookie=f"x{COOKIE}=1"))
    assert not resolver.carries_cookie(request())


async def test_a_cookie_of_a_session_that_idled_out_is_not_counted_as_a_guess() -> None:
    """A browser that comes back after the idle timeout sends its old cookie on every
    sub-request of the first page at once (images, scripts, API calls), before any of the
    denials clearing it arrives: the holder's own cookie, not a guess. Counted as guesses,
    they lock every user behind the same address out (here: 6 sub-requests, limit 5)."""
    clock = FakeClock(1_000_000.0)
    store = MemorySessionStore(clock=clock)
    sessions = SessionManager(store, idle_timeout=600, absolute_timeout=3600, clock=clock)
    resolver = SessionResolver(
        sessions,
        SessionCookie(COOKIE),
        throttle=LookupThrottle(MemoryRateLimiter(5, 60, clock=clock), clock=clock),
    )
    stale, _ = await sessions.create("alice")
    clock.advance(601)
    neighbour, _ = await sessions.create("bob")
    for _ in range(6):
        with pytest.raises((Unauthenticated, TooManyRequests)):
            await resolver.resolve(request(cookie=f"{COOKIE}={stale}"))
    assert (await resolver.resolve(request(cookie=f"{COOKIE}={neighbour}"))).sub == "bob"
