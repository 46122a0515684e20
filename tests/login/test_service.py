"""The login rules without HTTP (extauthz.login.service): inputs are RequestContexts and plain
values, results and refusals the project's own types. The routes: test_auth_service.py."""

from __future__ import annotations

import ast
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
import redis.asyncio
from argon2 import PasswordHasher, Type
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

import extauthz
from extauthz import tokens
from extauthz.check.context import RequestContext
from extauthz.check.resolver import SessionResolver
from extauthz.errors import Forbidden, Reason, StoreUnavailable, Unauthenticated
from extauthz.login.cookies import SessionCookie
from extauthz.login.limits import LoginLimits
from extauthz.login.ratelimit import MemoryRateLimiter, RateKey
from extauthz.login.service import LoginFailed, LoginForm, LoginService, SignedIn
from extauthz.login.users import (
    FileUserStore,
    PasswordVerifier,
    UserRecord,
    UserStore,
    UserStoreError,
)
from extauthz.store.manager import SessionManager
from extauthz.store.memory import MemorySessionStore
from extauthz.store.redis.users import RedisUserStore
from tests.support import free_port

COOKIE = "__Host-sid"
SAME_SITE = {"origin": "https://app.test"}


class BrokenUsers(FileUserStore):
    """A user file whose reads raise ``error``."""

    def __init__(self, path: Path, error: Exception) -> None:
        super().__init__(path)
        self.error = error

    async def get(self, name: str) -> UserRecord | None:
        raise self.error


@pytest.fixture
async def service(tmp_path: Path) -> LoginService:
    users = FileUserStore(tmp_path / "users.json")
    hasher = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1, type=Type.ID)
    verifier = PasswordVerifier(users, hasher=hasher)
    await users.put("alice", verifier.hash_password("correct horse"), [], ["read"])
    sessions = SessionManager(MemorySessionStore(), idle_timeout=600, absolute_timeout=3600)
    limits = LoginLimits(MemoryRateLimiter(3, 60), MemoryRateLimiter(8, 60))
    return LoginService(SessionResolver(sessions, SessionCookie(COOKIE)), verifier, limits=limits)


def ctx(**headers: str) -> RequestContext:
    return RequestContext(
        method="POST", scheme="https", host="app.test", path="/auth/login",
        headers=headers, peer_address="203.0.113.5",
    )


def form(username: str, password: str, return_to: str = "") -> Callable[[], Awaitable[LoginForm]]:
    async def read() -> LoginForm:
        return LoginForm(username, password, return_to)

    return read


async def test_sign_in_use_and_sign_out(service: LoginService) -> None:
    signed_in = await service.login(ctx(**SAME_SITE), form("alice", "correct horse", "/app"))
    assert isinstance(signed_in, SignedIn)
    assert signed_in.return_to == "/app" and signed_in.session.sub == "alice"
    (set_cookie,) = signed_in.set_cookies
    token = set_cookie.partition("=")[2].split(";")[0]
    assert tokens.has_token_shape(token)
    presented = ctx(cookie=f"{COOKIE}={token}")
    assert (await service.session(presented)).sid == signed_in.session.sid

    async def just_this_one() -> bool:
        return False

    signed_out = await service.logout(ctx(cookie=f"{COOKIE}={token}", **SAME_SITE), just_this_one)
    assert signed_out.revoked == 1
    assert signed_out.set_cookies == service.resolver.cookie.clearing()
    with pytest.raises(Unauthenticated) as gone:
        await service.session(presented)
    assert gone.value.reason is Reason.REVOKED_SESSION


async def test_a_cross_site_login_is_refused_before_its_body_is_read(
    service: LoginService,
) -> None:
    async def must_not_be_read() -> LoginForm:
        raise AssertionError("the body of a cross-site request was read")

    with pytest.raises(Forbidden) as refused:
        await service.login(ctx(origin="https://evil.example"), must_not_be_read)
    assert refused.value.reason is Reason.CROSS_SITE_REQUEST


async def test_a_wrong_password_is_a_login_failure_that_keeps_its_count(
    service: LoginService,
) -> None:
    failed = await service.login(ctx(**SAME_SITE), form("alice", "wrong", "//evil.example"))
    assert failed == LoginFailed("alice", "/")
    assert service.limits is not None
    left = await service.limits.per_user.blocked(RateKey("login:user", "alice"))
    assert left.remaining == 2


async def assert_unavailable_at_no_cost(service: LoginService, users: UserStore) -> None:
    service.verifier = PasswordVerifier(users)
    for _ in range(5):  # more than the per-user limit (3)
        with pytest.raises(StoreUnavailable):
            await service.login(ctx(**SAME_SITE), form("alice", "correct horse"))
    assert service.limits is not None
    left = await service.limits.per_user.blocked(RateKey("login:user", "alice"))
    assert left.remaining == 3


@pytest.mark.parametrize(
    "error", [UserStoreError("users.json: not valid JSON"), PermissionError("users.json")]
)
async def test_a_broken_user_file_is_unavailable_and_costs_no_attempt(
    service: LoginService, tmp_path: Path, error: Exception
) -> None:
    await assert_unavailable_at_no_cost(service, BrokenUsers(tmp_path / "broken.json", error))


async def test_a_user_store_in_a_redis_that_does_not_answer_is_unavailable_at_no_cost(
    service: LoginService,
) -> None:
    dead = redis.asyncio.Redis(
        host="127.0.0.1", port=free_port(), socket_connect_timeout=1, retry=Retry(NoBackoff(), 0)
    )
    try:
        await assert_unavailable_at_no_cost(service, RedisUserStore(dead, "t:"))
    finally:
        await dead.aclose()


@pytest.mark.parametrize(
    "module", ["login/service.py", "login/limits.py", "check/resolver.py", "login/cookies.py"]
)
def test_the_login_rules_import_no_web_framework_no_redis_and_no_settings(module: str) -> None:
    source = (Path(extauthz.__file__).parent / module).read_text(encoding="utf-8")
    imported: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module)
    roots = {name.split(".")[0] for name in imported}
    assert not roots & {"aiohttp", "redis"}, imported
    assert "extauthz.settings" not in imported
