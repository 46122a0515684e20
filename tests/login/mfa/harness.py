"""An in-process authentication service with second factors: aiohttp test server, in-memory
session store and pending logins, a user file and a factor file, cheap argon2id, in-memory
rate limits, one fake clock for everything (sessions, codes, budgets)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pyotp
import redis.asyncio
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from argon2 import PasswordHasher, Type

from extauthz.check.resolver import SessionResolver
from extauthz.keys.keyring import KeyRing, generate_key
from extauthz.login.cookies import SessionCookie
from extauthz.login.http import AuthHandlers
from extauthz.login.limits import LoginLimits
from extauthz.login.mfa.account import FactorAdmin, MfaAccount
from extauthz.login.mfa.challenges import Ceremonies, MemoryCeremonies
from extauthz.login.mfa.factors import FactorStore
from extauthz.login.mfa.file_store import FileFactorStore
from extauthz.login.mfa.http import MfaHandlers
from extauthz.login.mfa.kinds import FactorKind, FactorKinds
from extauthz.login.mfa.passkey_http import PasskeyHandlers
from extauthz.login.mfa.passkeys import Passkeys
from extauthz.login.mfa.pending import MemoryPendingLogins, PendingLogins
from extauthz.login.mfa.policy import MfaPolicy
from extauthz.login.mfa.recovery import RecoveryKind
from extauthz.login.mfa.sealing import SecretBox
from extauthz.login.mfa.steps import SecondSteps
from extauthz.login.mfa.totp import TotpKind
from extauthz.login.mfa.webauthn_kind import RelyingParty, WebAuthnKind
from extauthz.login.ratelimit import MemoryRateLimiter
from extauthz.login.service import LoginService
from extauthz.login.users import FileUserStore, PasswordVerifier
from extauthz.server.http_server import build_http_app
from extauthz.store.manager import SessionManager
from extauthz.store.memory import MemorySessionStore
from extauthz.store.redis.challenges import RedisCeremonies
from extauthz.store.redis.factors import RedisFactorStore
from extauthz.store.redis.pending import RedisPendingLogins
from tests.fixtures.core import FakeClock

COOKIE = "sid"
PENDING = "sid-mfa"
START = 1_800_000_000.0  # a multiple of 30: the start of a TOTP time-step
PASSWORDS = {"alice": "correct horse", "bob": "hunter2"}


def cookie_of(response: aiohttp.ClientResponse, name: str) -> str | None:
    """The value ``response`` sets for cookie ``name`` (the last one; ``""`` when cleared)."""
    found = None
    for header in response.headers.getall("Set-Cookie", []):
        key, _, rest = header.partition("=")
        if key == name:
            found = rest.split(";", 1)[0]
    return found


@dataclass
class Mfa:
    client: TestClient[web.Request, web.Application]
    clock: FakeClock
    sessions: SessionManager
    factors: FactorStore
    steps: SecondSteps
    admin: FactorAdmin
    service: LoginService

    @property
    def origin(self) -> str:
        return f"http://{self.client.host}:{self.client.port}"

    def headers(self, *, session: str | None = None, pending: str | None = None,
                **extra: str) -> dict[str, str]:
        cookies = [f"{n}={v}" for n, v in ((COOKIE, session), (PENDING, pending)) if v]
        out = {"Origin": self.origin, "Accept": "application/json", **extra}
        if cookies:
            out["Cookie"] = "; ".join(cookies)
        return out

    async def password(self, user: str) -> aiohttp.ClientResponse:
        body = {"username": user, "password": PASSWORDS[user]}
        return await self.client.post("/auth/login", json=body, headers=self.headers())

    async def login(self, user: str) -> str:
        """A password-only session's token (the user has no factor)."""
        response = await self.password(user)
        assert response.status == 200, await response.text()
        token = cookie_of(response, COOKIE)
        assert token
        return token

    async def post(self, path: str, body: dict[str, Any], *, session: str | None = None,
                   pending: str | None = None) -> aiohttp.ClientResponse:
        headers = self.headers(session=session, pending=pending)
        return await self.client.post(path, json=body, headers=headers)

    async def enrol(self, user: str, token: str) -> tuple[str, tuple[str, ...], str]:
        """Enrol a TOTP factor from the session ``token``: (secret, recovery codes, the
        session's new token)."""
        page = await self.client.get("/auth/mfa/enrol", headers=self.headers(session=token))
        assert page.status == 200, await page.text()
        view = await page.json()
        code = pyotp.TOTP(view["secret"]).at(self.clock())
        done = await self.post("/auth/mfa/enrol", {"kind": "totp", "response": code,
                                                   "factor_id": view["factor_id"]},
                               session=token)
        assert done.status == 200, await done.text()
        body = await done.json()
        new_token = cookie_of(done, COOKIE)
        assert new_token and new_token != token
        return view["secret"], tuple(body["recovery_codes"]), new_token

    def code(self, secret: str, offset: float = 0) -> str:
        return str(pyotp.TOTP(secret).at(self.clock() + offset))


@asynccontextmanager
async def mfa_harness(
    tmp_path: Path, *, mode: str = "optional", required_roles: frozenset[str] = frozenset(),
    user_limit: int = 5, addr_limit: int = 50, redis_client: redis.asyncio.Redis | None = None,
    rp: RelyingParty | None = None,
) -> AsyncIterator[Mfa]:
    """With ``redis_client``: factors and pending logins in that Redis (as with
    ``users.backend = "redis"`` and a Redis session store), else a factor file and memory.
    With ``rp``: passkeys too (the ``webauthn`` kind and the ``/auth/passkeys`` routes)."""
    clock = FakeClock(START)
    users = FileUserStore(tmp_path / "users.json")
    hasher = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1, type=Type.ID)
    verifier = PasswordVerifier(users, hasher=hasher)
    await users.put("alice", verifier.hash_password(PASSWORDS["alice"]), ["admin"], ["read"])
    await users.put("bob", verifier.hash_password(PASSWORDS["bob"]), [], ["read"])
    sessions = SessionManager(MemorySessionStore(clock=clock), idle_timeout=3600,
                              absolute_timeout=86400, clock=clock, rotation_grace_seconds=5)
    limits = LoginLimits(MemoryRateLimiter(user_limit, 300, clock=clock),
                         MemoryRateLimiter(addr_limit, 300, clock=clock))
    resolver = SessionResolver(sessions, SessionCookie(COOKIE, secure=False))
    service = LoginService(resolver, verifier, limits=limits)
    totp, recovery = TotpKind(SecretBox(bytes(32))), RecoveryKind()
    kinds: list[FactorKind] = [totp, recovery]
    if rp is not None:
        kinds.append(WebAuthnKind(rp))
    factors: FactorStore = FileFactorStore(tmp_path / "factors.json")
    pending: PendingLogins = MemoryPendingLogins(clock)
    if redis_client is not None:
        factors = RedisFactorStore(redis_client, "mfa-test:")
        pending = RedisPendingLogins(redis_client, "mfa-test:", clock)
    steps = SecondSteps(
        service, verifier, factors, pending,
        kinds=FactorKinds(kinds), totp=totp, recovery=recovery,
        policy=MfaPolicy(mode, required_roles), pending_cookie=SessionCookie(PENDING, secure=False),
        limits=limits.for_second_factors(), clock=clock,
    )
    service.gate = steps
    auth = AuthHandlers(service, realm="test", clock=clock)
    auth.mount(MfaHandlers(auth, steps, MfaAccount(steps, clock=clock)).routes())
    if rp is not None:
        ceremonies: Ceremonies = MemoryCeremonies(clock)
        if redis_client is not None:
            ceremonies = RedisCeremonies(redis_client, "mfa-test:", clock)
        passkeys = Passkeys(steps, WebAuthnKind(rp), ceremonies, clock=clock)
        auth.mount(PasskeyHandlers(auth, passkeys).routes())
    generate_key(tmp_path / "keys", "ES256")
    app = build_http_app(KeyRing.from_directory(tmp_path / "keys"), auth)
    client = TestClient(TestServer(app), cookie_jar=aiohttp.DummyCookieJar())
    await client.start_server()
    try:
        yield Mfa(client, clock, sessions, factors, steps,
                  FactorAdmin(factors, sessions.store), service)
    finally:
        await client.close()
