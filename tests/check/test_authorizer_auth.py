"""The Check pipeline's brute-force throttle (failed lookups per client address) and the
per-route same-site requirement (``context_extensions: same_site: required``)."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest

from extauthz import tokens
from extauthz.check.authorizer import Authorizer
from extauthz.check.context import RequestContext
from extauthz.check.decisions import Allow, Deny
from extauthz.check.denials import DenialRenderer
from extauthz.check.minting import JwtMinter
from extauthz.check.resolver import SessionResolver
from extauthz.check.throttle import LookupThrottle
from extauthz.keys.keyring import KeyRing, generate_key
from extauthz.login.cookies import SessionCookie
from extauthz.login.csrf import SameSiteCheck
from extauthz.login.ratelimit import MemoryRateLimiter
from extauthz.store.manager import SessionManager
from extauthz.store.memory import MemorySessionStore

COOKIE = "sid"


class Clock:
    def __init__(self) -> None:
        self.now = 50.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def sessions() -> SessionManager:
    return SessionManager(MemorySessionStore(), idle_timeout=600, absolute_timeout=3600)


@pytest.fixture
def authorizer(tmp_path: Path, sessions: SessionManager, clock: Clock) -> Authorizer:
    generate_key(tmp_path, "ES256")
    minter = JwtMinter(
        KeyRing.from_directory(tmp_path), issuer="https://iss", audience="aud",
        lifetime_seconds=60,
    )
    throttle = LookupThrottle(MemoryRateLimiter(5, 30, clock=clock), clock=clock)
    cookie = SessionCookie(COOKIE)
    return Authorizer(
        SessionResolver(sessions, cookie, throttle=throttle),
        minter,
        DenialRenderer(realm="t", login_url="/auth/login", cookie=cookie),
        store_strategy="sticky",
        node_id="n1",
        same_site=SameSiteCheck.with_origins(["https://partner.example"]),
    )


def bearer(token: str, peer: str = "198.51.100.7") -> RequestContext:
    return RequestContext(
        method="GET", scheme="https", host="app.example", path="/api",
        headers={"authorization": f"Bearer {token}", "accept": "application/json"},
        peer_address=peer,
    )


def random_token() -> str:
    return tokens.PREFIX + secrets.token_hex(24)[:49]


async def test_a_burst_of_random_tokens_from_one_address_is_throttled(
    authorizer: Authorizer, sessions: SessionManager, clock: Clock
) -> None:
    statuses = []
    for _ in range(8):
        decision = await authorizer.authorize(bearer(random_token()))
        assert isinstance(decision, Deny)
        statuses.append(decision.status)
    assert statuses[:5] == [401] * 5
    assert statuses[5:] == [429] * 3
    throttled = await authorizer.authorize(bearer(random_token()))
    assert isinstance(throttled, Deny)
    headers = dict(throttled.headers)
    assert 1 <= int(headers["retry-after"]) <= 30
    assert "set-cookie" not in headers
    # blocked means blocked: not even a valid token from that address is looked up
    valid, _ = await sessions.create("alice")
    assert isinstance(await authorizer.authorize(bearer(valid)), Deny)
    # another address is not affected
    assert isinstance(await authorizer.authorize(bearer(valid, peer="203.0.113.1")), Allow)
    clock.now += 31
    assert isinstance(await authorizer.authorize(bearer(valid)), Allow)


async def test_valid_and_expired_tokens_do_not_count(
    authorizer: Authorizer, sessions: SessionManager
) -> None:
    valid, _ = await sessions.create("alice")
    for _ in range(20):
        assert isinstance(await authorizer.authorize(bearer(valid)), Allow)
    # requests without any credential are not lookups either
    anonymous = RequestContext(method="GET", scheme="https", host="h", path="/",
                               peer_address="198.51.100.7")
    for _ in range(20):
        decision = await authorizer.authorize(anonymous)
        assert isinstance(decision, Deny) and decision.status == 401


def cookie_post(token: str, **headers: str) -> RequestContext:
    return RequestContext(
        method="POST", scheme="https", host="app.example", path="/orders",
        headers={"cookie": f"{COOKIE}={token}", "content-type": "application/x-www-form-urlencoded",
                 **headers},
        context_extensions={"same_site": "required"},
        peer_address="198.51.100.7",
    )


@pytest.mark.parametrize(
    "headers",
    [
        {"origin": "https://evil.example"},
        {"origin": "null"},
        {"sec-fetch-site": "cross-site"},
        {"referer": "https://evil.example/x"},
        {},
    ],
)
async def test_same_site_required_refuses_cross_site_cookie_posts(
    authorizer: Authorizer, sessions: SessionManager, headers: dict[str, str]
) -> None:
    token, _ = await sessions.create("alice")
    decision = await authorizer.authorize(cookie_post(token, **headers))
    assert isinstance(decision, Deny)
    assert decision.status == 403
    assert '"reason":"cross_site_request"' in decision.body
    assert "set-cookie" not in dict(decision.headers)  # the session is not touched


@pytest.mark.parametrize(
    "headers",
    [
        {"origin": "https://app.example"},
        {"origin": "https://partner.example"},
        {"sec-fetch-site": "same-origin"},
        {"referer": "https://app.example/form"},
    ],
)
async def test_same_site_required_allows_same_site_cookie_posts(
    authorizer: Authorizer, sessions: SessionManager, headers: dict[str, str]
) -> None:
    token, _ = await sessions.create("alice")
    assert isinstance(await authorizer.authorize(cookie_post(token, **headers)), Allow)


async def test_same_site_applies_only_to_unsafe_cookie_requests_on_opted_in_routes(
    authorizer: Authorizer, sessions: SessionManager
) -> None:
    token, _ = await sessions.create("alice")
    evil = {"origin": "https://evil.example"}
    ctx = cookie_post(token, **evil)
    get = RequestContext(method="GET", scheme=ctx.scheme, host=ctx.host, path=ctx.path,
                         headers=ctx.headers, context_extensions=ctx.context_extensions)
    assert isinstance(await authorizer.authorize(get), Allow)
    other_route = RequestContext(method="POST", scheme=ctx.scheme, host=ctx.host, path=ctx.path,
                                 headers=ctx.headers)
    assert isinstance(await authorizer.authorize(other_route), Allow)
    api = RequestContext(
        method="POST", scheme="https", host="app.example", path="/orders",
        headers={"authorization": f"Bearer {token}", **evil},
        context_extensions={"same_site": "required"},
    )
    assert isinstance(await authorizer.authorize(api), Allow)
