"""The user's sessions (extauthz.login.account) through the aiohttp adapter: ``GET
/auth/session`` lists this browser, the other logins, the applications and the API keys of the
caller's ``sub``; ``POST /auth/session/end`` ends one by ``sid``. Over the in-memory store and
a real Redis; what was ended is refused right after by the real Check and by
``SessionManager.lookup``."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from argon2 import PasswordHasher, Type

from extauthz.check.context import RequestContext
from extauthz.check.decisions import Allow, Deny
from extauthz.errors import Reason, StoreUnavailable, Unauthenticated
from extauthz.login.account import GrantRevoker
from extauthz.login.http import AuthHandlers
from extauthz.login.service import LoginService
from extauthz.login.users import FileUserStore, PasswordVerifier
from extauthz.server.http_server import build_http_app
from extauthz.store.memory import MemorySessionStore
from extauthz.store.model import Session, SessionStore
from extauthz.store.redis.clients import RedisClients, RedisEndpoints
from extauthz.store.redis.store import RedisSessionStore
from tests.fixtures.core import COOKIE, FakeClock, Harness, build_harness
from tests.support import RedisServer

HTML = {"Accept": "text/html"}
JSON = {"Accept": "application/json"}


class FlakyStore(MemorySessionStore):
    """A memory store whose listing and revocation by sid can be made to fail (a store that
    cannot answer)."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__(clock=clock)
        self.down = False

    async def list_subject(self, sub: str) -> list[Session]:
        if self.down:
            raise StoreUnavailable("store down")
        return await super().list_subject(sub)

    async def revoke_sid(self, sid: str) -> Session | None:
        if self.down:
            raise StoreUnavailable("revocation not stored")
        return await super().revoke_sid(sid)


@dataclass
class Page:
    client: TestClient[web.Request, web.Application]
    h: Harness

    @property
    def origin(self) -> str:
        return f"http://{self.client.host}:{self.client.port}"

    async def get(self, token: str, accept: dict[str, str] = JSON) -> Any:
        return await self.client.get(
            "/auth/session", headers={**accept, "Cookie": f"{COOKIE}={token}"},
            allow_redirects=False,
        )  # fmt: skip

    async def end(self, token: str, sid: str, **headers: str) -> Any:
        """A same-site form post from the session page (unless ``headers`` say otherwise)."""
        sent = {"Origin": self.origin, "Cookie": f"{COOKIE}={token}", **headers}
        return await self.client.post(
            "/auth/session/end", data={"sid": sid}, headers=sent, allow_redirects=False
        )

    async def check(self, token: str) -> Allow | Deny:
        """The real Check, for ``token`` as a Bearer credential."""
        ctx = RequestContext(
            method="GET", scheme="https", host="app.test", path="/orders",
            headers={"authorization": f"Bearer {token}", "accept": "application/json"},
            peer_address="203.0.113.9",
        )  # fmt: skip
        return await self.h.authorizer.authorize(ctx)

    async def assert_ended(self, token: str) -> None:
        with pytest.raises(Unauthenticated) as gone:
            await self.h.sessions.lookup(token)
        assert gone.value.reason is Reason.REVOKED_SESSION
        denied = await self.check(token)
        assert isinstance(denied, Deny) and denied.status == 401

    async def assert_alive(self, token: str, sub: str = "alice") -> None:
        assert (await self.h.sessions.lookup(token)).sub == sub


class StoreGrants:
    """A grant revoker over the session store alone (the OAuth token issuer also drops the
    grant's refresh tokens and consent): every access token of the client for the user."""

    def __init__(self, store: SessionStore) -> None:
        self.store = store
        self.down = False
        self.calls: list[tuple[str, str]] = []

    async def revoke_grant(self, sub: str, client_id: str) -> int:
        self.calls.append((sub, client_id))
        if self.down:
            raise StoreUnavailable("grant not revoked")
        count = 0
        for s in await self.store.list_subject(sub):
            if s.kind == "oauth" and s.client_id == client_id:
                count += await self.store.revoke_sid(s.sid) is not None
        return count


async def serve(
    h: Harness, tmp_path: Path, grants: GrantRevoker | None = None
) -> TestClient[web.Request, web.Application]:
    users = FileUserStore(tmp_path / "users.json")
    verifier = PasswordVerifier(
        users, hasher=PasswordHasher(time_cost=1, memory_cost=8, parallelism=1, type=Type.ID)
    )
    handlers = AuthHandlers(
        LoginService(h.authorizer.resolver, verifier), realm="test", clock=h.clock, grants=grants
    )
    client = TestClient(TestServer(build_http_app(h.keyring, handlers)))
    await client.start_server()
    return client


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.e2e)])
async def page(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Page]:
    clients: RedisClients | None = None
    clock = FakeClock()
    if request.param == "redis":
        redis: RedisServer = request.getfixturevalue("redis_server")
        clients = RedisClients(RedisEndpoints(redis.url, timeout_seconds=2))
        store: MemorySessionStore | RedisSessionStore = RedisSessionStore(
            clients.primary, f"sp{uuid.uuid4().hex[:8]}:"
        )
    else:
        store = FlakyStore(clock)
    h = build_harness(tmp_path, store=store, clock=clock)
    client = await serve(h, tmp_path)
    try:
        yield Page(client, h)
    finally:
        await client.close()
        if clients is not None:
            await clients.aclose()


async def sessions_of_every_kind(h: Harness) -> dict[str, tuple[str, Session]]:
    """alice signed in twice, an application and an API key of hers; bob signed in once."""
    return {
        "here": await h.sessions.create("alice", roles=["admin"], scopes=["read"]),
        "elsewhere": await h.sessions.create("alice"),
        "app": await h.sessions.create(
            "alice", scopes=["read", "orders:write"], kind="oauth", client_id="photo-printer",
            lifetime_seconds=600,
        ),
        "key": await h.sessions.create(
            "alice", scopes=["read"], kind="api_key", data={"name": "CI <deploy>"},
            lifetime_seconds=86400,
        ),
        "bob": await h.sessions.create("bob"),
    }  # fmt: skip


# -- listing ----------------------------------------------------------------------------------


async def test_the_json_overview_lists_every_kind_of_the_users_sessions(page: Page) -> None:
    made = await sessions_of_every_kind(page.h)
    token, here = made["here"]
    resp = await page.get(token)
    assert resp.status == 200
    assert resp.headers["Cache-Control"] == "no-store"
    body = await resp.json()
    # the current session as before, marked as a login
    assert (body["sub"], body["sid"], body["kind"]) == ("alice", here.sid, "session")
    assert body["roles"] == ["admin"] and body["scopes"] == ["read"]
    assert [s["sid"] for s in body["sessions"]] == [made["elsewhere"][1].sid]
    assert set(body["sessions"][0]) == {"sid", "created_at", "last_seen", "expires_at"}
    app = made["app"][1]
    assert body["applications"] == [{
        "sid": app.sid, "client_id": "photo-printer", "scopes": ["read", "orders:write"],
        "created_at": int(app.created_at), "expires_at": int(app.created_at) + 600,
    }]  # fmt: skip
    key = made["key"][1]
    assert body["api_keys"] == [{
        "sid": key.sid, "name": "CI <deploy>", "scopes": ["read"],
        "created_at": int(key.created_at), "expires_at": int(key.created_at) + 86400,
        "last_used": int(key.last_seen),
    }]  # fmt: skip
    text = await resp.text()
    assert made["bob"][1].sid not in text  # another user's sessions are never listed
    for secret, _ in made.values():
        assert secret not in text  # never a token
    assert "token_hash" not in text and "eyJ" not in text


async def test_the_session_page_shows_this_browser_and_every_other_session(page: Page) -> None:
    made = await sessions_of_every_kind(page.h)
    resp = await page.get(made["here"][0], HTML)
    assert resp.status == 200
    assert resp.headers["Content-Security-Policy"].count("frame-ancestors 'none'") == 1
    assert resp.headers["X-Frame-Options"] == "DENY"
    assert resp.headers["Cache-Control"] == "no-store"
    text = await resp.text()
    assert re.search(r'<span id="user">alice</span>', text)
    assert "This browser" in text and 'action="/auth/logout"' in text
    for name in ("elsewhere", "app", "key"):
        sid = made[name][1].sid
        assert f'<tr data-sid="{sid}">' in text
        assert f'name="sid" value="{sid}"' in text and f'id="end-{sid}"' in text
    assert 'action="/auth/session/end"' in text
    assert "photo-printer" in text and "orders:write" in text
    assert "CI &lt;deploy&gt;" in text and "<deploy>" not in text  # escaped
    assert made["bob"][1].sid not in text
    for secret, _ in made.values():
        assert secret not in text
    assert "<script" not in text


async def test_a_user_with_one_session_sees_empty_lists(page: Page) -> None:
    token, _ = await page.h.sessions.create("alice")
    body = await (await page.get(token)).json()
    assert body["sessions"] == body["applications"] == body["api_keys"] == []
    text = await (await page.get(token, HTML)).text()
    assert text.count("None.") == 3


async def test_ended_and_expired_sessions_are_not_listed(page: Page) -> None:
    token, _ = await page.h.sessions.create("alice")
    gone, _ = await page.h.sessions.create("alice")
    await page.h.sessions.revoke_token(gone)
    await page.h.sessions.create("alice", kind="oauth", client_id="c", lifetime_seconds=60)
    page.h.clock.advance(61)  # the access token's lifetime is over; the login lives on
    body = await (await page.get(token)).json()
    assert body["sessions"] == body["applications"] == []


# -- ending -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["elsewhere", "app", "key"])
async def test_ending_another_session_revokes_it_at_once(page: Page, name: str) -> None:
    made = await sessions_of_every_kind(page.h)
    here = made["here"][0]
    target_token, target = made[name]
    assert isinstance(await page.check(target_token), Allow)  # works until it is ended
    resp = await page.end(here, target.sid)
    assert resp.status == 303
    assert resp.headers["Location"] == "/auth/session"
    assert "Set-Cookie" not in resp.headers  # this browser stays signed in
    await page.assert_ended(target_token)
    await page.assert_alive(here)
    await page.assert_alive(made["bob"][0], "bob")
    listed = await (await page.get(here)).json()
    assert target.sid not in str(listed["sessions"] + listed["applications"] + listed["api_keys"])


async def test_a_json_client_ends_a_session_with_a_json_body(page: Page) -> None:
    made = await sessions_of_every_kind(page.h)
    key_token, key = made["key"]
    resp = await page.client.post(
        "/auth/session/end", json={"sid": key.sid},
        headers={"Authorization": f"Bearer {made['here'][0]}"},
    )  # fmt: skip
    assert resp.status == 200
    assert await resp.json() == {"ended": key.sid, "kind": "api_key", "logged_out": False}
    assert resp.headers["Cache-Control"] == "no-store"
    await page.assert_ended(key_token)


async def test_ending_this_browsers_session_is_a_logout(page: Page) -> None:
    token, here = await page.h.sessions.create("alice")
    resp = await page.end(token, here.sid)
    assert resp.status == 303
    assert resp.headers["Location"] == "/auth/login?logged_out=1"
    cleared = resp.headers.getall("Set-Cookie")
    assert cleared and all(c.startswith(f"{COOKIE}=;") and "Max-Age=0" in c for c in cleared)
    await page.assert_ended(token)
    again = await page.get(token, HTML)
    assert again.status == 303 and again.headers["Location"].startswith("/auth/login")
    token, here = await page.h.sessions.create("alice")
    json_end = await page.client.post(
        "/auth/session/end", json={"sid": here.sid}, headers={"Cookie": f"{COOKIE}={token}"}
    )
    assert await json_end.json() == {"ended": here.sid, "kind": "session", "logged_out": True}
    assert "Max-Age=0" in json_end.headers["Set-Cookie"]
    await page.assert_ended(token)


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "https://evil.example"},
        {"Origin": "null"},
        {"Sec-Fetch-Site": "cross-site"},
        {"Referer": "https://evil.example/auth/session"},
        {},  # a form post without any provenance
    ],
)
async def test_a_cross_site_end_is_refused_and_ends_nothing(
    page: Page, headers: dict[str, str]
) -> None:
    made = await sessions_of_every_kind(page.h)
    here = made["here"][0]
    sent = {"Cookie": f"{COOKIE}={here}", **headers}
    for name in ("elsewhere", "here"):
        resp = await page.client.post(
            "/auth/session/end", data={"sid": made[name][1].sid}, headers=sent,
            allow_redirects=False,
        )  # fmt: skip
        assert resp.status == 403
        assert "Set-Cookie" not in resp.headers
    for name in ("here", "elsewhere", "app", "key"):
        await page.assert_alive(made[name][0])


async def test_advisory_a_users_sid_cannot_be_ended_by_another_user(page: Page) -> None:
    """Ending by ``sid`` must not become a way to end anybody's session: bob's sid (or a
    made-up one) sent with alice's live session is 404, the same answer for both, and
    nothing is revoked."""
    made = await sessions_of_every_kind(page.h)
    bob_token, bob = made["bob"]
    here = made["here"][0]
    foreign = await page.end(here, bob.sid)
    unknown = await page.end(here, "no-such-sid")
    assert foreign.status == unknown.status == 404
    assert await foreign.read() == await unknown.read()
    as_json = await page.client.post(
        "/auth/session/end", json={"sid": bob.sid}, headers={"Authorization": f"Bearer {here}"}
    )
    assert as_json.status == 404 and (await as_json.json())["error"] == "not_found"
    await page.assert_alive(bob_token, "bob")
    assert isinstance(await page.check(bob_token), Allow)
    await page.assert_alive(here)


@pytest.mark.parametrize("caller", ["app", "key"])
async def test_advisory_an_application_or_api_key_cannot_list_or_end_the_users_sessions(
    page: Page, caller: str
) -> None:
    """An access token issued to an application (or an API key) has the user's ``sub``, but
    it is not the user: it sees only itself at /auth/session and ends nothing (403)."""
    made = await sessions_of_every_kind(page.h)
    bearer = {"Authorization": f"Bearer {made[caller][0]}"}
    own = await page.client.get("/auth/session", headers=bearer)
    body = await own.json()
    assert body["sid"] == made[caller][1].sid
    assert body["sessions"] == body["applications"] == body["api_keys"] == []
    for name in ("here", "elsewhere", caller):
        resp = await page.client.post(
            "/auth/session/end", json={"sid": made[name][1].sid}, headers=bearer
        )
        assert resp.status == 403
        assert (await resp.json())["error"] == "credential_kind_refused"
    for name in ("here", "elsewhere", "app", "key"):
        await page.assert_alive(made[name][0])


async def test_ending_without_a_session_or_a_sid(page: Page) -> None:
    token, _ = await page.h.sessions.create("alice")
    anonymous = await page.client.post("/auth/session/end", json={"sid": "x"})
    assert anonymous.status == 401
    assert anonymous.headers["WWW-Authenticate"] == 'Bearer realm="test"'
    browser = await page.client.post(
        "/auth/session/end", data={"sid": "x"}, headers={"Origin": page.origin},
        allow_redirects=False,
    )  # fmt: skip
    assert browser.status == 303 and browser.headers["Location"].startswith("/auth/login?")
    cookie = {"Cookie": f"{COOKIE}={token}"}
    for body in ({}, {"sid": ""}, {"sid": 7}, {"sid": "x" * 200}):
        resp = await page.client.post("/auth/session/end", json=body, headers=cookie)
        assert resp.status == 400, body
    await page.assert_alive(token)


async def test_ending_an_application_ends_its_whole_grant(tmp_path: Path) -> None:
    """With the token issuer's grant revoker wired, ending one access token of an application
    ends every token it holds for the user (and not another application's, nor another
    user's); a grant that could not be revoked is a 503."""
    h = build_harness(tmp_path)
    grants = StoreGrants(h.store)
    client = await serve(h, tmp_path, grants)
    page = Page(client, h)
    try:
        here, _ = await h.sessions.create("alice")

        async def app(client_id: str, sub: str = "alice") -> tuple[str, Session]:
            return await h.sessions.create(
                sub, kind="oauth", client_id=client_id, lifetime_seconds=600
            )

        (first, shown), (second, _), (other_app, _), (bobs, _) = [
            await app("printer"), await app("printer"), await app("calendar"),
            await app("printer", "bob"),
        ]  # fmt: skip
        resp = await page.end(here, shown.sid)
        assert resp.status == 303
        assert grants.calls == [("alice", "printer")]
        await page.assert_ended(first)
        await page.assert_ended(second)
        await page.assert_alive(other_app)
        await page.assert_alive(bobs, "bob")
        await page.assert_alive(here)
        _, key_session = await h.sessions.create("alice", kind="api_key", lifetime_seconds=600)
        assert (await page.end(here, key_session.sid)).status == 303
        assert grants.calls == [("alice", "printer")]  # an API key is no grant
        grants.down = True
        _, calendar = await app("calendar")
        assert (await page.end(here, calendar.sid)).status == 503
    finally:
        await client.close()


# -- a store that cannot answer ---------------------------------------------------------------


async def test_a_store_that_cannot_list_or_revoke_is_503_and_ends_nothing(
    tmp_path: Path,
) -> None:
    clock = FakeClock()
    store = FlakyStore(clock)
    h = build_harness(tmp_path, store=store, clock=clock)
    client = await serve(h, tmp_path)
    page = Page(client, h)
    try:
        token, here = await h.sessions.create("alice")
        other, elsewhere = await h.sessions.create("alice")
        store.down = True
        for accept in (JSON, HTML):
            listing = await page.get(token, accept)
            assert listing.status == 503 and listing.headers["Retry-After"] == "5"
        for sid in (elsewhere.sid, here.sid):
            resp = await page.end(token, sid)
            assert resp.status == 503
            assert "Set-Cookie" not in resp.headers
        store.down = False
        await page.assert_alive(token)
        await page.assert_alive(other)
    finally:
        await client.close()


@pytest.mark.e2e
async def test_a_redis_that_is_down_is_503_never_401(
    fresh_redis: RedisServer, tmp_path: Path
) -> None:
    clients = RedisClients(RedisEndpoints(fresh_redis.url, timeout_seconds=0.5))
    h = build_harness(tmp_path, store=RedisSessionStore(clients.primary, "down:"))
    client = await serve(h, tmp_path)
    page = Page(client, h)
    try:
        token, here = await h.sessions.create("alice")
        _, elsewhere = await h.sessions.create("alice")
        fresh_redis.stop()
        for accept in (JSON, HTML):
            assert (await page.get(token, accept)).status == 503
        json_end = await page.client.post(
            "/auth/session/end", json={"sid": elsewhere.sid},
            headers={"Cookie": f"{COOKIE}={token}"},
        )  # fmt: skip
        assert json_end.status == 503
        assert (await json_end.json())["error"] == "temporarily_unavailable"
        form_end = await page.end(token, here.sid)
        assert form_end.status == 503 and "Set-Cookie" not in form_end.headers
    finally:
        await client.close()
        await clients.aclose()
