"""The authentication service (/auth/*) in-process, through its aiohttp adapter: aiohttp test
server, in-memory session store, a user file with cheap argon2id parameters, in-memory rate
limits with a fake clock."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from argon2 import PasswordHasher, Type

from extauthz import tokens
from extauthz.check.resolver import SessionResolver
from extauthz.check.throttle import LookupThrottle
from extauthz.errors import StoreUnavailable
from extauthz.keys.keyring import KeyRing, generate_key
from extauthz.login.cookies import SessionCookie
from extauthz.login.http import AuthHandlers, client_address
from extauthz.login.limits import LoginLimits
from extauthz.login.ratelimit import CHECK_ADDR, MemoryRateLimiter, RateKey, address_subject
from extauthz.login.service import LoginService
from extauthz.login.users import FileUserStore, PasswordVerifier, User
from extauthz.server.http_server import build_http_app
from extauthz.store.manager import SessionManager
from extauthz.store.memory import MemorySessionStore

COOKIE = "sid"


class CountingHasher(PasswordHasher):
    """argon2id with cheap parameters that counts verifications."""

    def __init__(self) -> None:
        super().__init__(time_cost=1, memory_cost=8, parallelism=1, type=Type.ID)
        self.verifications = 0

    def verify(self, hash: str | bytes, password: str | bytes) -> Literal[True]:  # noqa: A002
        self.verifications += 1
        return super().verify(hash, password)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FlakyStore(MemorySessionStore):
    """A memory store whose revocations can be made to fail (a store that is down)."""

    def __init__(self) -> None:
        super().__init__()
        self.fail_revoke = False
        self.fail_create = False

    async def revoke(self, token_hash: str) -> Any:
        if self.fail_revoke:
            raise StoreUnavailable("revocation not stored")
        return await super().revoke(token_hash)

    async def revoke_subject(self, sub: str) -> int:
        if self.fail_revoke:
            raise StoreUnavailable("revocation not stored")
        return await super().revoke_subject(sub)

    async def create(self, token_hash: str, session: Any) -> None:
        if self.fail_create:
            raise StoreUnavailable("store down")
        await super().create(token_hash, session)


@dataclass
class Harness:
    client: TestClient[web.Request, web.Application]
    store: FlakyStore
    sessions: SessionManager
    verifier: PasswordVerifier
    clock: FakeClock
    throttle: LookupThrottle
    service: LoginService

    @property
    def origin(self) -> str:
        return f"http://{self.client.host}:{self.client.port}"

    def same_site(self, **extra: str) -> dict[str, str]:
        return {"Origin": self.origin, **extra}

    async def login_json(self, username: str, password: str, **headers: str) -> Any:
        return await self.client.post(
            "/auth/login", json={"username": username, "password": password}, headers=headers
        )


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[Harness]:
    users = FileUserStore(tmp_path / "users.json")
    verifier = PasswordVerifier(users, hasher=CountingHasher())
    await users.put("alice", verifier.hash_password("correct horse"), ["admin"], ["read", "write"])
    await users.put("bob", verifier.hash_password("hunter2"), [], ["read"])
    store = FlakyStore()
    sessions = SessionManager(store, idle_timeout=600, absolute_timeout=3600)
    clock = FakeClock()
    limits = LoginLimits(
        per_user=MemoryRateLimiter(3, 60, clock=clock),
        per_address=MemoryRateLimiter(8, 60, clock=clock),
    )
    # failed token lookups per address (``check:addr``), the budget Check shares
    throttle = LookupThrottle(MemoryRateLimiter(5, 60, clock=clock), clock=clock)
    resolver = SessionResolver(sessions, SessionCookie(COOKIE, secure=True), throttle=throttle)
    service = LoginService(resolver, verifier, limits=limits)
    generate_key(tmp_path / "keys", "ES256")
    app = build_http_app(
        KeyRing.from_directory(tmp_path / "keys"), AuthHandlers(service, realm="test")
    )
    client = TestClient(TestServer(app))
    await client.start_server()
    try:
        yield Harness(client, store, sessions, verifier, clock, throttle, service)
    finally:
        await client.close()


def cookie_value(set_cookie: str) -> str:
    name, _, rest = set_cookie.partition("=")
    assert name == COOKIE
    return rest.split(";", 1)[0]


def attributes(set_cookie: str) -> dict[str, str]:
    out = {}
    for part in set_cookie.split(";")[1:]:
        key, _, value = part.strip().partition("=")
        out[key.lower()] = value
    return out


# -- login ----------------------------------------------------------------------------------------


async def test_login_page_is_a_plain_html_form(harness: Harness) -> None:
    resp = await harness.client.get("/auth/login", params={"return_to": "/app?x=1&y=<2>"})
    assert resp.status == 200
    assert resp.content_type == "text/html"
    page = await resp.text()
    assert '<form method="post" action="/auth/login"' in page
    assert 'name="return_to" value="/app?x=1&amp;y=&lt;2&gt;"' in page
    assert "<script" not in page
    assert "script-src" not in resp.headers["Content-Security-Policy"]
    assert resp.headers["X-Frame-Options"] == "DENY"
    assert resp.headers["Cache-Control"] == "no-store"


@pytest.mark.parametrize(
    "return_to",
    ["//evil.example/x", "https://evil.example/", "/\\evil.example", "javascript:alert(1)", ""],
)
async def test_login_page_replaces_foreign_return_to(harness: Harness, return_to: str) -> None:
    page = await (await harness.client.get("/auth/login", params={"return_to": return_to})).text()
    assert 'name="return_to" value="/"' in page


async def test_json_login_sets_the_cookie_and_returns_the_summary(harness: Harness) -> None:
    resp = await harness.login_json("alice", "correct horse")
    assert resp.status == 200
    body = await resp.json()
    assert body["sub"] == "alice"
    assert body["roles"] == ["admin"] and body["scopes"] == ["read", "write"]
    set_cookie = resp.headers["Set-Cookie"]
    token = cookie_value(set_cookie)
    assert tokens.has_token_shape(token)
    assert token not in await resp.text()  # the summary never carries the token
    attrs = attributes(set_cookie)
    assert {"httponly", "secure", "path", "samesite", "max-age"} <= set(attrs)
    assert attrs["path"] == "/" and attrs["samesite"] == "Lax"
    assert 3590 <= int(attrs["max-age"]) <= 3600  # the session's absolute lifetime
    session = await harness.sessions.lookup(token)
    assert (session.sub, session.roles, session.scopes) == ("alice", ("admin",), ("read", "write"))


async def test_form_login_redirects_303_to_the_validated_return_to(harness: Harness) -> None:
    resp = await harness.client.post(
        "/auth/login",
        data={"username": "bob", "password": "hunter2", "return_to": "/reports?page=2"},
        headers=harness.same_site(),
        allow_redirects=False,
    )
    assert resp.status == 303
    assert resp.headers["Location"] == "/reports?page=2"
    assert tokens.has_token_shape(cookie_value(resp.headers["Set-Cookie"]))


@pytest.mark.parametrize("return_to", ["//evil.example/", "https://evil.example/x", "/auth/login"])
async def test_form_login_never_redirects_off_site(harness: Harness, return_to: str) -> None:
    resp = await harness.client.post(
        "/auth/login",
        data={"username": "bob", "password": "hunter2", "return_to": return_to},
        headers=harness.same_site(),
        allow_redirects=False,
    )
    assert resp.status == 303
    assert resp.headers["Location"] == "/"


async def test_unknown_user_and_wrong_password_get_the_same_answer_and_cost(
    harness: Harness,
) -> None:
    hasher = harness.verifier._hasher
    assert isinstance(hasher, CountingHasher)
    wrong = await harness.login_json("alice", "wrong")
    unknown = await harness.login_json("mallory", "wrong")
    assert wrong.status == unknown.status == 401
    assert await wrong.read() == await unknown.read()
    assert wrong.headers["WWW-Authenticate"] == unknown.headers["WWW-Authenticate"]
    assert "Set-Cookie" not in wrong.headers and "Set-Cookie" not in unknown.headers
    assert hasher.verifications == 2  # one argon2 verify each


async def test_form_login_failure_shows_the_form_again(harness: Harness) -> None:
    resp = await harness.client.post(
        "/auth/login",
        data={"username": "bob", "password": "nope", "return_to": "/x"},
        headers=harness.same_site(),
    )
    assert resp.status == 401
    page = await resp.text()
    assert "Invalid user name or password." in page
    assert 'name="return_to" value="/x"' in page
    assert "nope" not in page


async def test_login_rejects_bad_bodies(harness: Harness) -> None:
    resp = await harness.client.post("/auth/login", data=b"{not json", headers={
        "Content-Type": "application/json"})
    assert resp.status == 400
    resp = await harness.client.post("/auth/login", json={"username": "bob"})
    assert resp.status == 400
    resp = await harness.client.post("/auth/login", data=b"x", headers={
        "Content-Type": "application/octet-stream"})
    assert resp.status == 415


async def test_advisory_a_body_that_is_not_utf8_or_nested_past_the_stack_is_a_400(
    harness: Harness,
) -> None:
    """A form that is not UTF-8 (aiohttp's UnicodeDecodeError) and JSON nested 10,000 deep
    (RecursionError, within the 16 KiB body limit) were 500s at login and logout."""
    same_site = harness.same_site()
    for path in ("/auth/login", "/auth/logout"):
        form = await harness.client.post(path, data=b"username=\xff&everywhere=1", headers={
            **same_site, "Content-Type": "application/x-www-form-urlencoded"})
        assert form.status == 400, path
    nested = await harness.client.post("/auth/login", data=b"[" * 10_000, headers={
        **same_site, "Content-Type": "application/json"})
    assert nested.status == 400


async def test_session_fixation_a_presented_token_is_revoked_at_login(harness: Harness) -> None:
    planted, _ = await harness.sessions.create("bob")  # e.g. set by an attacker
    resp = await harness.login_json("alice", "correct horse", Cookie=f"{COOKIE}={planted}")
    assert resp.status == 200
    fresh = cookie_value(resp.headers["Set-Cookie"])
    assert fresh != planted
    assert await harness.store.get(tokens.token_hash(planted)) is None
    assert (await harness.sessions.lookup(fresh)).sub == "alice"


async def test_a_cookie_that_idled_out_is_not_a_guess_at_login_or_logout(
    harness: Harness,
) -> None:
    """The cookie of a session that ended by its idle timeout, presented to logout (once per
    open tab) or to the next login, is its holder's own: it does not count toward the
    address's budget of failed lookups. A token the store never issued still does."""
    token, session = await harness.sessions.create("alice")
    idled = replace(
        session, last_seen=session.last_seen - session.idle_timeout - 1, version=session.version + 1
    )
    assert await harness.store.touch(tokens.token_hash(token), idled)
    budget = RateKey(CHECK_ADDR, address_subject("127.0.0.1"))
    for _ in range(6):  # the throttle allows 5
        resp = await harness.client.post("/auth/logout", headers={"Cookie": f"{COOKIE}={token}"})
        assert resp.status == 200 and (await resp.json())["revoked"] == 0
    resp = await harness.login_json("alice", "correct horse", Cookie=f"{COOKIE}={token}")
    assert resp.status == 200
    assert (await harness.throttle.limiter.blocked(budget)).remaining == 5
    guess = await harness.client.post(
        "/auth/logout", headers={"Cookie": f"{COOKIE}={tokens.mint_token()}"}
    )
    assert guess.status == 200
    assert (await harness.throttle.limiter.blocked(budget)).remaining == 4


async def test_store_outage_at_login_is_503_not_401(harness: Harness) -> None:
    harness.store.fail_create = True
    resp = await harness.login_json("alice", "correct horse")
    assert resp.status == 503
    assert "Set-Cookie" not in resp.headers


# -- brute force ------------------------------------------------------------------------------


async def test_repeated_wrong_passwords_get_429_even_for_the_right_one(harness: Harness) -> None:
    for _ in range(3):
        assert (await harness.login_json("alice", "guess")).status == 401
    throttled = await harness.login_json("alice", "guess")
    assert throttled.status == 429
    assert 1 <= int(throttled.headers["Retry-After"]) <= 60
    right = await harness.login_json("alice", "correct horse")
    assert right.status == 429
    assert "Set-Cookie" not in right.headers
    # another user from the same address is not affected by alice's budget
    assert (await harness.login_json("bob", "hunter2")).status == 200
    harness.clock.now += 61  # the window passes
    assert (await harness.login_json("alice", "correct horse")).status == 200


async def test_failed_logins_are_limited_per_address_across_user_names(harness: Harness) -> None:
    for i in range(8):
        assert (await harness.login_json(f"user{i}", "guess")).status == 401
    resp = await harness.login_json("bob", "hunter2")
    assert resp.status == 429
    assert "Retry-After" in resp.headers


def test_client_address_believes_only_the_entry_a_trusted_proxy_added() -> None:
    import ipaddress

    from aiohttp.test_utils import make_mocked_request

    loopback = [ipaddress.ip_network("127.0.0.0/8")]

    def address(peer: str, xff: str | None) -> str:
        headers = {"X-Forwarded-For": xff} if xff else {}
        request = make_mocked_request("POST", "/auth/login", headers=headers)
        request = request.clone(remote=peer)
        return client_address(request, loopback)

    assert address("127.0.0.1", "203.0.113.9, 198.51.100.7") == "198.51.100.7"
    assert address("127.0.0.1", None) == "127.0.0.1"
    assert address("192.0.2.1", "203.0.113.9") == "192.0.2.1"  # untrusted peer
    assert address("127.0.0.1", "not-an-ip") == "127.0.0.1"


# -- cross-site protection -------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "https://evil.example"},
        {"Origin": "null"},
        {"Sec-Fetch-Site": "cross-site"},
        {"Referer": "https://evil.example/page"},
        {},  # a form post with no provenance at all
    ],
)
async def test_cross_site_form_posts_are_rejected(
    harness: Harness, headers: dict[str, str]
) -> None:
    login = await harness.client.post(
        "/auth/login", data={"username": "bob", "password": "hunter2"}, headers=headers
    )
    assert login.status == 403
    assert "Set-Cookie" not in login.headers
    token, _ = await harness.sessions.create("bob")
    logout = await harness.client.post(
        "/auth/logout", data={}, headers={**headers, "Cookie": f"{COOKIE}={token}"},
        allow_redirects=False,
    )
    assert logout.status == 403
    assert "Set-Cookie" not in logout.headers
    assert (await harness.sessions.lookup(token)).sub == "bob"  # still logged in


@pytest.mark.parametrize(
    "headers",
    [{"Origin": "SAME"}, {"Sec-Fetch-Site": "same-origin"}, {"Referer": "SAME/auth/login"}],
)
async def test_same_site_form_posts_work(harness: Harness, headers: dict[str, str]) -> None:
    headers = {k: v.replace("SAME", harness.origin) for k, v in headers.items()}
    login = await harness.client.post(
        "/auth/login", data={"username": "bob", "password": "hunter2"}, headers=headers,
        allow_redirects=False,
    )
    assert login.status == 303
    token = cookie_value(login.headers["Set-Cookie"])
    logout = await harness.client.post(
        "/auth/logout", data={}, headers={**headers, "Cookie": f"{COOKIE}={token}"},
        allow_redirects=False,
    )
    assert logout.status == 303
    assert logout.headers["Location"] == "/auth/login?logged_out=1"


# -- logout and the session summary ---------------------------------------------------------


async def test_logout_revokes_first_then_clears_the_cookie(harness: Harness) -> None:
    token, _ = await harness.sessions.create("alice")
    cookie = {"Cookie": f"{COOKIE}={token}"}
    summary = await harness.client.get("/auth/session", headers=cookie)
    assert summary.status == 200
    assert (await summary.json())["sub"] == "alice"
    assert token not in await summary.text()
    resp = await harness.client.post("/auth/logout", headers=cookie)
    assert resp.status == 200
    assert await resp.json() == {"logged_out": True, "revoked": 1}
    assert attributes(resp.headers["Set-Cookie"])["max-age"] == "0"
    assert cookie_value(resp.headers["Set-Cookie"]) == ""
    gone = await harness.client.get("/auth/session", headers=cookie)
    assert gone.status == 401
    assert gone.headers["WWW-Authenticate"] == 'Bearer realm="test", error="invalid_token"'


async def test_logout_whose_revocation_cannot_be_stored_does_not_pretend(
    harness: Harness,
) -> None:
    token, _ = await harness.sessions.create("alice")
    harness.store.fail_revoke = True
    for everywhere in ("0", "1"):
        resp = await harness.client.post(
            f"/auth/logout?everywhere={everywhere}", headers={"Cookie": f"{COOKIE}={token}"}
        )
        assert resp.status == 503
        assert "Set-Cookie" not in resp.headers
        assert (await resp.json())["error"] == "temporarily_unavailable"
    harness.store.fail_revoke = False
    assert (await harness.sessions.lookup(token)).sub == "alice"  # still usable


async def test_logout_everywhere_revokes_every_session_of_the_user(harness: Harness) -> None:
    here, _ = await harness.sessions.create("alice")
    elsewhere, _ = await harness.sessions.create("alice")
    other_user, _ = await harness.sessions.create("bob")
    resp = await harness.client.post(
        "/auth/logout",
        data={"everywhere": "1"},
        headers=harness.same_site(Cookie=f"{COOKIE}={here}"),
        allow_redirects=False,
    )
    assert resp.status == 303
    assert await harness.store.get(tokens.token_hash(here)) is None
    assert await harness.store.get(tokens.token_hash(elsewhere)) is None
    assert (await harness.sessions.lookup(other_user)).sub == "bob"


async def test_logout_without_a_session_still_clears_the_cookie(harness: Harness) -> None:
    resp = await harness.client.post("/auth/logout")
    assert resp.status == 200
    assert await resp.json() == {"logged_out": True, "revoked": 0}
    assert "Max-Age=0" in resp.headers["Set-Cookie"]


async def test_session_page_for_browsers_and_401_for_api_clients(harness: Harness) -> None:
    anonymous = await harness.client.get("/auth/session")
    assert anonymous.status == 401
    assert anonymous.headers["WWW-Authenticate"] == 'Bearer realm="test"'
    browser = await harness.client.get(
        "/auth/session", headers={"Accept": "text/html"}, allow_redirects=False
    )
    assert browser.status == 303
    assert browser.headers["Location"].startswith("/auth/login?return_to=")
    token, _ = await harness.sessions.create("alice", roles=["admin"])
    page = await harness.client.get(
        "/auth/session", headers={"Accept": "text/html", "Cookie": f"{COOKIE}={token}"}
    )
    text = await page.text()
    assert page.status == 200
    assert re.search(r'<span id="user">alice</span>', text)
    assert 'action="/auth/logout"' in text and token not in text
    bearer = await harness.client.get(
        "/auth/session", headers={"Authorization": f"Bearer {token}"}
    )
    assert (await bearer.json())["sub"] == "alice"


async def test_request_bodies_are_bounded(harness: Harness) -> None:
    resp = await harness.client.post(
        "/auth/login", json={"username": "bob", "password": "x" * 20000}
    )
    assert resp.status == 413


# -- advisories: concurrency, lookup throttling, return_to (tests/test_advisory.py style) ----


class SlowVerifier:
    """Counts the logins that reach the password check and holds each one a little, so that
    concurrent requests really overlap (as argon2 in a worker thread does)."""

    def __init__(self, inner: PasswordVerifier) -> None:
        self.inner = inner
        self.calls = 0

    async def verify(self, name: str, password: str) -> User | None:
        self.calls += 1
        await asyncio.sleep(0.05)
        return await self.inner.verify(name, password)


def slow_verifier(harness: Harness, monkeypatch: pytest.MonkeyPatch) -> SlowVerifier:
    spy = SlowVerifier(harness.verifier)
    monkeypatch.setattr(harness.service, "verifier", spy)
    return spy


async def test_advisory_h1_parallel_wrong_passwords_cannot_outrun_the_user_limit(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """H1: the limit was checked before the verify and counted after it, so every request in
    flight passed (12 parallel guesses: 12x401, 0x429). Attempts are now reserved first."""
    spy = slow_verifier(harness, monkeypatch)
    responses = await asyncio.gather(
        *(harness.login_json("alice", f"guess-{i}") for i in range(12))
    )
    statuses = sorted(r.status for r in responses)
    assert spy.calls <= 3  # the per-user limit of the harness
    assert statuses == [401] * spy.calls + [429] * (12 - spy.calls)
    for resp in responses:
        if resp.status == 429:
            assert 1 <= int(resp.headers["Retry-After"]) <= 60
            assert "Set-Cookie" not in resp.headers
    # the budget is spent: the right password is refused too, without a verify
    assert (await harness.login_json("alice", "correct horse")).status == 429
    assert spy.calls <= 3


async def test_advisory_h1_parallel_guesses_from_a_fresh_address_cannot_outrun_its_limit(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """H1: 40 parallel guesses at 40 names from one fresh address all reached argon2."""
    spy = slow_verifier(harness, monkeypatch)
    fresh = {"X-Forwarded-For": "203.0.113.77"}  # set by the trusted proxy (loopback)
    responses = await asyncio.gather(
        *(harness.login_json(f"user{i}", "guess", **fresh) for i in range(40))
    )
    statuses = [r.status for r in responses]
    assert spy.calls <= 8  # the per-address limit of the harness
    assert statuses.count(401) == spy.calls
    assert statuses.count(429) == 40 - spy.calls
    assert all("Retry-After" in r.headers for r in responses if r.status == 429)
    # a refused attempt is not a guess: it does not eat into the budget of the name tried
    for _ in range(5):  # more than the per-user limit (3)
        assert (await harness.login_json("alice", "correct horse", **fresh)).status == 429
    assert (await harness.login_json("alice", "correct horse")).status == 200


async def test_successful_logins_do_not_spend_the_address_budget(harness: Harness) -> None:
    """Attempts are reserved up front; a success takes its own reservation back, so an
    address (a NAT) still counts failures only."""
    for _ in range(10):
        assert (await harness.login_json("bob", "hunter2")).status == 200
    for i in range(8):
        assert (await harness.login_json(f"user{i}", "wrong")).status == 401
    resp = await harness.login_json("bob", "hunter2")
    assert resp.status == 429  # 8 failures: the address budget is spent


async def test_a_store_outage_at_login_does_not_spend_the_budgets(harness: Harness) -> None:
    harness.store.fail_create = True
    for _ in range(5):  # more than the per-user limit (3)
        assert (await harness.login_json("alice", "correct horse")).status == 503
    harness.store.fail_create = False
    assert (await harness.login_json("alice", "correct horse")).status == 200


async def test_advisory_m3_guessing_tokens_at_auth_session_is_throttled(
    harness: Harness,
) -> None:
    """M3: GET /auth/session looked tokens up without counting failures (70 guessed bearers:
    70x401). It now shares Check's per-address budget and answers 429 once it is spent,
    without looking up even a valid token."""
    statuses = []
    for _ in range(70):
        guess = tokens.mint_token()  # the right shape, no such session
        resp = await harness.client.get(
            "/auth/session", headers={"Authorization": f"Bearer {guess}"}
        )
        statuses.append(resp.status)
        if resp.status == 429:
            assert int(resp.headers["Retry-After"]) >= 1
    assert statuses[:4] == [401] * 4
    assert set(statuses[5:]) == {429}
    assert harness.throttle.retry_after("127.0.0.1") >= 1  # Check sees the same block
    valid, _ = await harness.sessions.create("alice")
    blocked = await harness.client.get(
        "/auth/session", headers={"Authorization": f"Bearer {valid}"}
    )
    assert blocked.status == 429
    assert (await blocked.json())["error"] == "rate_limited"


async def test_advisory_m3_failed_lookups_at_check_block_auth_session_and_logout(
    harness: Harness,
) -> None:
    """One budget: an address blocked at Check cannot continue at /auth/* (and back)."""
    token, _ = await harness.sessions.create("alice")
    assert await harness.throttle.failed("127.0.0.1", 6)
    headers = {"Cookie": f"{COOKIE}={token}"}
    assert (await harness.client.get("/auth/session", headers=headers)).status == 429
    logout = await harness.client.post("/auth/logout", headers=headers)
    assert logout.status == 429
    assert "Set-Cookie" not in logout.headers
    assert (await harness.sessions.lookup(token)).sub == "alice"  # nothing was looked up
    # a request without any credential is not a lookup and is not refused
    assert (await harness.client.get("/auth/session")).status == 401


async def test_advisory_m3_guessing_tokens_at_logout_is_throttled(harness: Harness) -> None:
    """M3: POST /auth/logout ("revoked": n) was an uncounted oracle too."""
    statuses = []
    for everywhere in ("0", "1") * 5:
        guess = tokens.mint_token()
        resp = await harness.client.post(
            f"/auth/logout?everywhere={everywhere}", headers={"Authorization": f"Bearer {guess}"}
        )
        statuses.append(resp.status)
    assert statuses[:5] == [200] * 5  # each a miss: counted once, whichever way
    assert set(statuses[5:]) == {429}
    # a logout that ends a real session is still told so when its guesses cross the limit
    harness.clock.now += 61
    mine, _ = await harness.sessions.create("mallory")
    await harness.throttle.failed("127.0.0.1", 4)
    guesses = "; ".join(f"{COOKIE}={tokens.mint_token()}" for _ in range(2))
    resp = await harness.client.post(
        "/auth/logout", headers={"Cookie": f"{guesses}; {COOKIE}={mine}"}
    )
    assert resp.status == 200 and (await resp.json())["revoked"] == 1
    assert (await harness.client.post(
        "/auth/logout", headers={"Cookie": f"{COOKIE}={mine}"})).status == 429  # fmt: skip


async def test_advisory_m3_every_failed_cookie_candidate_counts(harness: Harness) -> None:
    """Up to 4 session cookies are looked up; a valid one must not hide the guesses next to
    it (nor may several guesses count as one)."""
    own, _ = await harness.sessions.create("mallory")
    guesses = "; ".join(f"{COOKIE}={tokens.mint_token()}" for _ in range(3))
    headers = {"Cookie": f"{guesses}; {COOKIE}={own}"}
    first = await harness.client.get("/auth/session", headers=headers)
    assert first.status == 200  # 3 misses counted, under the limit of 5
    second = await harness.client.get("/auth/session", headers=headers)
    assert second.status == 429  # 6 misses: over


async def test_advisory_l5_login_redirect_location_is_ascii(harness: Harness) -> None:
    """L5: return_to=/%E2%80%A8/evil.com put raw UTF-8 (U+2028) into the Location header.
    Now white space and control characters are refused (the default target)."""
    for return_to, expected in (
        ("/\u2028/evil.com", "/"),
        ("/caf\u00e9?q=\u00fc", "/caf%C3%A9?q=%C3%BC"),
        ("/\uff0f\uff0fevil.example", "/%EF%BC%8F%EF%BC%8Fevil.example"),  # fullwidth slashes
        ("/\u0085x", "/"),  # C1 control (NEL)
    ):
        resp = await harness.client.post(
            "/auth/login",
            data={"username": "bob", "password": "hunter2", "return_to": return_to},
            headers=harness.same_site(),
            allow_redirects=False,
        )
        assert resp.status == 303
        location = resp.headers["Location"]
        assert location == expected
        assert location.isascii() and location.isprintable()


async def test_login_logs_hash_attempted_names_and_name_session_subjects(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    """L5 (decided and documented in the module docstring): a name typed into a failed or
    throttled login may be anyone's, or a password in the wrong field: only its hash is
    logged. The subject of a session that was created or ended is logged as it is (audit)."""
    import logging

    caplog.set_level(logging.INFO, logger="extauthz")
    assert (await harness.login_json("hunter2-typed-as-name", "x")).status == 401
    for _ in range(4):
        await harness.login_json("alice", "wrong")
    assert (await harness.login_json("bob", "hunter2")).status == 200
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "hunter2-typed-as-name" not in text
    assert tokens.log_id("hunter2-typed-as-name") in text
    assert "alice" not in text and tokens.log_id("alice") in text
    assert re.search(r"^login sub=bob sid=\S+ addr=", text, re.MULTILINE)
