"""GET /auth/verify on the HTTP app (in-process aiohttp server, the real Check pipeline over a
memory store): the answers a proxy acts on, only for trusted proxies, 503 (never 401) when the
store cannot answer, and no route at all unless forward-auth is configured."""

from __future__ import annotations

import ipaddress
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from extauthz.errors import StoreUnavailable
from extauthz.server.http_server import ForwardAuth, build_http_app
from extauthz.store.memory import MemorySessionStore
from tests.fixtures.core import COOKIE, REALM, Harness, build_harness

LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"),)
FORWARDED = {
    "X-Original-Method": "GET",
    "X-Original-URI": "/reports?page=2",
    "X-Forwarded-Host": "app.example",
    "X-Forwarded-Proto": "https",
}


class DownStore(MemorySessionStore):
    """A memory store that can be made not to answer lookups (a store that is down)."""

    down = False

    async def get(self, token_hash: str) -> Any:
        if self.down:
            raise StoreUnavailable("store down")
        return await super().get(token_hash)


@pytest.fixture
def store() -> DownStore:
    return DownStore()


@pytest.fixture
def h(tmp_path: Path, store: DownStore) -> Harness:
    return build_harness(tmp_path, store=store)


@asynccontextmanager
async def serve(app: web.Application) -> AsyncIterator[TestClient[web.Request, web.Application]]:
    client = TestClient(TestServer(app))
    await client.start_server()
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture
def app(h: Harness) -> web.Application:
    return build_http_app(h.keyring, forward_auth=ForwardAuth(h.authorizer, LOOPBACK))


async def test_a_bearer_session_gets_its_jwt(h: Harness, app: web.Application) -> None:
    token, sid = await h.login(scopes=("read",))
    async with serve(app) as client:
        resp = await client.get(
            "/auth/verify", headers={**FORWARDED, "Authorization": f"Bearer {token}"}
        )
        assert resp.status == 200
        assert resp.headers["Cache-Control"] == "no-store"
        value = resp.headers["Authorization"]
        assert value.startswith("Bearer ")
        assert h.verify(value.removeprefix("Bearer "))["sid"] == sid
        assert resp.headers["X-Extauthz-Cookie"] == ""


async def test_the_cookie_for_upstream_has_no_session_cookie(
    h: Harness, app: web.Application
) -> None:
    token, _ = await h.login()
    async with serve(app) as client:
        cookie = f"theme=dark; {COOKIE}={token}; lang=en"
        resp = await client.get("/auth/verify", headers={**FORWARDED, "Cookie": cookie})
        assert resp.status == 200
        assert resp.headers["X-Extauthz-Cookie"] == "theme=dark; lang=en"
        assert token not in str(resp.headers)


async def test_api_client_without_session_gets_the_challenge(app: web.Application) -> None:
    async with serve(app) as client:
        resp = await client.get("/auth/verify", headers=FORWARDED)
        assert resp.status == 401
        assert resp.headers["WWW-Authenticate"] == f'Bearer realm="{REALM}"'
        assert "Authorization" not in resp.headers


async def test_browser_without_session_is_sent_to_login(app: web.Application) -> None:
    async with serve(app) as client:
        headers = {**FORWARDED, "Accept": "text/html"}
        resp = await client.get("/auth/verify", headers=headers, allow_redirects=False)
        assert resp.status == 302
        assert resp.headers["Location"] == "/auth/login?return_to=%2Freports%3Fpage%3D2"
        # nginx: the same redirect as 401 with Location
        headers["X-Extauthz-Redirect"] = "401"
        resp = await client.get("/auth/verify", headers=headers, allow_redirects=False)
        assert resp.status == 401
        assert resp.headers["Location"] == "/auth/login?return_to=%2Freports%3Fpage%3D2"


async def test_route_policy_from_headers(h: Harness, app: web.Application) -> None:
    token, _ = await h.login(scopes=("read",))
    async with serve(app) as client:
        headers = {**FORWARDED, "Authorization": f"Bearer {token}"}
        resp = await client.get("/auth/verify", headers={**headers, "X-Extauthz-Scopes": "admin"})
        assert resp.status == 403
        assert "insufficient_scope" in resp.headers["WWW-Authenticate"]
        assert "Authorization" not in resp.headers
        resp = await client.get("/auth/verify", headers={**headers, "X-Extauthz-Scopes": "read"})
        assert resp.status == 200


@pytest.mark.parametrize(
    "forged",
    [
        {"X-Original-URI": "/reports?page=2", "X-Forwarded-Uri": "/auth/login"},
        {"X-Original-Method": "GET"},
        {**FORWARDED, "X-Original-URI": "https://evil.example/"},
        {**FORWARDED, "X-Forwarded-Proto": "gopher"},
    ],
)
async def test_malformed_forwarding_is_400_even_with_a_live_session(
    h: Harness, app: web.Application, forged: dict[str, str]
) -> None:
    token, _ = await h.login()
    async with serve(app) as client:
        resp = await client.get(
            "/auth/verify", headers={**forged, "Authorization": f"Bearer {token}"}
        )
        assert resp.status == 400
        assert "Authorization" not in resp.headers


async def test_an_untrusted_peer_is_refused(h: Harness) -> None:
    token, _ = await h.login()
    only_elsewhere = (ipaddress.ip_network("192.0.2.0/24"),)
    app = build_http_app(h.keyring, forward_auth=ForwardAuth(h.authorizer, only_elsewhere))
    async with serve(app) as client:
        resp = await client.get(
            "/auth/verify", headers={**FORWARDED, "Authorization": f"Bearer {token}"}
        )
        assert resp.status == 400
        assert "Authorization" not in resp.headers


async def test_store_down_is_503_never_401(
    h: Harness, app: web.Application, store: DownStore
) -> None:
    token, _ = await h.login()
    store.down = True
    async with serve(app) as client:
        resp = await client.get(
            "/auth/verify", headers={**FORWARDED, "Authorization": f"Bearer {token}"}
        )
        assert resp.status == 503
        assert "WWW-Authenticate" not in resp.headers
        assert "Authorization" not in resp.headers


async def test_no_route_without_forward_auth(h: Harness) -> None:
    token, _ = await h.login()
    async with serve(build_http_app(h.keyring)) as client:
        resp = await client.get(
            "/auth/verify", headers={**FORWARDED, "Authorization": f"Bearer {token}"}
        )
        assert resp.status == 404
        assert "Authorization" not in resp.headers
