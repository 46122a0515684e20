"""An in-process authorization server for the OAuth tests: the real aiohttp app
(``build_http_app`` with the login and OAuth routes) on aiohttp's test server, a memory
session store, memory or Redis records, a confidential and a public client, and the Check
(``Authorizer``) over the same sessions."""

from __future__ import annotations

import base64
import hashlib
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from argon2 import PasswordHasher, Type

from extauthz.check.authorizer import Authorizer
from extauthz.check.denials import DenialRenderer
from extauthz.check.minting import JwtMinter
from extauthz.check.resolver import SessionResolver
from extauthz.keys.keyring import KeyRing, generate_key
from extauthz.login.cookies import SessionCookie
from extauthz.login.csrf import SameSiteCheck
from extauthz.login.http import AuthHandlers
from extauthz.login.service import LoginService
from extauthz.login.users import FileUserStore, PasswordVerifier
from extauthz.oauth.clients import MemoryClientStore, OAuthClient, new_client
from extauthz.oauth.grants import build_server
from extauthz.oauth.http import OAuthHandlers
from extauthz.oauth.issuer import Lifetimes, TokenIssuer
from extauthz.oauth.metadata import metadata
from extauthz.oauth.records import OAuthRecords
from extauthz.server.http_server import build_http_app
from extauthz.store.manager import SessionManager
from extauthz.store.memory import MemorySessionStore

COOKIE = "sid"
ISSUER = "https://auth.example"
APP_CB = "https://app.example/cb"
PUBLIC_CB = "http://127.0.0.1:8400/cb"
FAST = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1, type=Type.ID)
DESCRIPTIONS = {"read": "Read your reports", "write": "Change your reports"}


def pkce() -> tuple[str, str]:
    """(code_verifier, S256 code_challenge)."""
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode()).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def query_of(location: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


@dataclass
class Harness:
    client: TestClient[web.Request, web.Application]
    sessions: SessionManager
    store: MemorySessionStore
    records: OAuthRecords
    issuer: TokenIssuer
    minter: JwtMinter
    keyring: KeyRing
    authorizer: Authorizer
    confidential: OAuthClient
    secret: str
    public: OAuthClient
    clients: MemoryClientStore

    @property
    def origin(self) -> str:
        return f"http://{self.client.host}:{self.client.port}"

    def basic(self, client_id: str | None = None, secret: str | None = None) -> dict[str, str]:
        pair = f"{client_id or self.confidential.client_id}:{secret or self.secret}"
        return {"Authorization": "Basic " + base64.b64encode(pair.encode()).decode()}

    async def login(self, user: str = "alice") -> str:
        """A live login session's token (what the login form sets as the cookie)."""
        token, _ = await self.sessions.create(user, scopes=["read", "write"])
        return token

    def cookie(self, token: str) -> dict[str, str]:
        return {"Cookie": f"{COOKIE}={token}"}

    async def token(self, data: dict[str, str], headers: dict[str, str] | None = None) -> Any:
        return await self.client.post("/auth/oauth/token", data=data, headers=headers or {})

    def authorize_params(
        self, client: OAuthClient | None = None, scope: str = "read", **extra: str
    ) -> dict[str, str]:
        c = client or self.confidential
        params = {
            "response_type": "code", "client_id": c.client_id,
            "redirect_uri": c.redirect_uris[0], "scope": scope, "state": "st-123",
            "code_challenge_method": "S256",
        }
        params.update(extra)
        return params

    async def consent_form(self, login: str, params: dict[str, str]) -> dict[str, str]:
        """GET the consent page; its form's fields (hidden ones and csrf_token)."""
        import re

        page = await self.client.get("/auth/oauth/authorize", params=params,
                                     headers=self.cookie(login), allow_redirects=False)
        assert page.status == 200, await page.text()
        html = await page.text()
        return dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', html))

    async def decide(self, login: str, fields: dict[str, str], decision: str) -> Any:
        return await self.client.post(
            "/auth/oauth/authorize", data={**fields, "decision": decision},
            headers={**self.cookie(login), "Origin": self.origin}, allow_redirects=False,
        )

    async def code_for(
        self, client: OAuthClient | None = None, scope: str = "read", login: str | None = None
    ) -> tuple[str, str]:
        """Run the authorization (consent: allow); return (code, code_verifier)."""
        verifier, challenge = pkce()
        login = login or await self.login()
        params = self.authorize_params(client, scope, code_challenge=challenge)
        fields = await self.consent_form(login, params)
        answer = await self.decide(login, fields, "allow")
        assert answer.status == 302, await answer.text()
        found = query_of(answer.headers["Location"])
        assert found["state"] == "st-123"
        return found["code"], verifier

    async def exchange(
        self, code: str, verifier: str, client: OAuthClient | None = None
    ) -> Any:
        c = client or self.confidential
        data = {"grant_type": "authorization_code", "code": code,
                "redirect_uri": c.redirect_uris[0], "code_verifier": verifier}
        if c.confidential:
            return await self.token(data, self.basic())
        return await self.token({**data, "client_id": c.client_id})


async def build_harness(tmp_path: Path, records: OAuthRecords) -> AsyncIterator[Harness]:
    generate_key(tmp_path, "ES256")
    keyring = KeyRing.from_directory(tmp_path)
    minter = JwtMinter(keyring, issuer=ISSUER, audience="aud", lifetime_seconds=60)
    store = MemorySessionStore()
    sessions = SessionManager(store, idle_timeout=600, absolute_timeout=3600)
    users = FileUserStore(tmp_path / "users.json")
    verifier = PasswordVerifier(users, hasher=FAST)
    await users.put("carol", verifier.hash_password("s3cret pass"), [], ["read"])
    cookie = SessionCookie(COOKIE, secure=False)
    resolver = SessionResolver(sessions, cookie)
    auth = AuthHandlers(LoginService(resolver, verifier), realm="t")
    confidential, secret = new_client(
        "Reporting", [APP_CB], ["read", "write"], confidential=True, now=1.0, hasher=FAST
    )
    public, _ = new_client("Mobile", [PUBLIC_CB], ["read"], confidential=False, now=2.0,
                           hasher=FAST)
    assert secret is not None
    clients = MemoryClientStore([confidential, public])
    issuer = TokenIssuer(sessions, records, Lifetimes(access=600, refresh=3600, code=60))
    server = build_server(clients, issuer)
    handlers = OAuthHandlers(
        server, auth, minter, metadata=metadata(ISSUER, ["read", "write"]),
        same_site=SameSiteCheck(), scope_descriptions=DESCRIPTIONS,
    )
    authorizer = Authorizer(
        resolver, minter, DenialRenderer(realm="t", login_url="/auth/login", cookie=cookie),
        store_strategy="sticky", node_id="n1",
    )
    app = build_http_app(keyring, auth, oauth=handlers)
    async with TestClient(TestServer(app)) as client:
        yield Harness(client, sessions, store, records, issuer, minter, keyring, authorizer,
                      confidential, secret, public, clients)
    server.close()
