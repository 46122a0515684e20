"""Rolling token rotation on the Check path, through the servicer's ``Check`` (no socket): a
cookie session older than ``rotate_after`` leaves with one new ``Set-Cookie`` in
``OkHttpResponse.response_headers_to_add``; bearer sessions never; concurrent Checks at the
rotation moment share one new token; a store that cannot take the rotation does not fail the
request."""

from __future__ import annotations

import asyncio
from http.cookies import SimpleCookie
from pathlib import Path

import pytest
from envoy.config.core.v3.base_pb2 import HeaderValueOption
from envoy.service.auth.v3.external_auth_pb2 import CheckRequest, CheckResponse
from google.rpc import code_pb2

from extauthz import tokens
from extauthz.errors import StoreUnavailable
from extauthz.server.grpc_server import AuthorizationServicer
from extauthz.store.memory import MemorySessionStore
from extauthz.store.model import Session, Successor
from tests.fixtures.core import (
    COOKIE,
    FakeClock,
    FakeServicerContext,
    Harness,
    bearer_request,
    build_harness,
    load_check_request,
    metadata,
)

APPEND = HeaderValueOption.HeaderAppendAction.APPEND_IF_EXISTS_OR_ADD
ROTATE_AFTER = 60
GRACE = 5.0


@pytest.fixture
def h(tmp_path: Path) -> Harness:
    return build_harness(tmp_path, rotate_after=ROTATE_AFTER, rotation_grace=GRACE)


async def check(h: Harness, request: CheckRequest) -> CheckResponse:
    return await AuthorizationServicer(h.authorizer).Check(request, FakeServicerContext())


def browser(token: str) -> CheckRequest:
    return load_check_request("browser_cookie", TOKEN=token)


def set_cookies(response: CheckResponse) -> list[str]:
    """The ``Set-Cookie`` values added to the response toward the client; each must be its
    own header with ``APPEND_IF_EXISTS_OR_ADD`` (never replacing the upstream's cookies)."""
    out = []
    for option in response.ok_response.response_headers_to_add:
        assert option.header.key == "set-cookie"
        assert option.append_action == APPEND
        out.append(option.header.value)
    return out


def cookie_token(value: str) -> str:
    parsed = SimpleCookie()
    parsed.load(value)
    return parsed[COOKIE].value


async def test_a_young_cookie_session_is_not_rotated(h: Harness) -> None:
    token, _ = await h.login()
    h.clock.advance(ROTATE_AFTER - 1)
    response = await check(h, browser(token))
    assert response.status.code == code_pb2.OK
    assert set_cookies(response) == []


async def test_an_old_cookie_session_gets_one_new_cookie_and_keeps_its_sid(h: Harness) -> None:
    token, sid = await h.login()
    h.clock.advance(ROTATE_AFTER)
    response = await check(h, browser(token))
    assert response.status.code == code_pb2.OK
    (value,) = set_cookies(response)
    new = cookie_token(value)
    assert new != token and tokens.has_token_shape(new)
    session = await h.sessions.lookup(new)
    assert session.sid == sid
    # the attributes come from the SessionCookie builder; Max-Age runs to the absolute expiry
    assert value == h.authorizer.resolver.cookie.set(new, session.expires_at - h.clock())
    assert "HttpOnly" in value and "Secure" in value and "SameSite=Lax" in value
    assert metadata(response)["sid"] == sid
    # the new token is young: the next request carries no cookie
    assert set_cookies(await check(h, browser(new))) == []
    # the old one works during the grace and learns the same new token, then it is revoked
    h.clock.advance(GRACE - 1)
    again = await check(h, browser(token))
    assert again.status.code == code_pb2.OK
    assert [cookie_token(v) for v in set_cookies(again)] == [new]
    h.clock.advance(2)
    denied = await check(h, browser(token))
    assert denied.status.code != code_pb2.OK
    assert metadata(denied)["reason"] == "revoked_session"


async def test_a_bearer_session_is_never_rotated(h: Harness) -> None:
    token, _ = await h.login()
    h.clock.advance(ROTATE_AFTER * 5)  # within the idle timeout (600 s)
    response = await check(h, bearer_request(token))
    assert response.status.code == code_pb2.OK
    assert set_cookies(response) == []
    assert (await h.sessions.find(token)).session.rotated_at is None


async def test_rotation_is_off_by_default(tmp_path: Path) -> None:
    h = build_harness(tmp_path)
    token, _ = await h.login()
    h.clock.advance(3000)
    assert set_cookies(await check(h, browser(token))) == []


async def test_concurrent_checks_at_the_rotation_moment_share_one_new_token(h: Harness) -> None:
    token, sid = await h.login()
    h.clock.advance(ROTATE_AFTER)
    responses = await asyncio.gather(*(check(h, browser(token)) for _ in range(50)))
    assert all(r.status.code == code_pb2.OK for r in responses)
    new_tokens = {cookie_token(v) for r in responses for v in set_cookies(r)}
    assert len(new_tokens) == 1
    assert h.authorizer.rotation is not None
    assert h.authorizer.rotation.stats["rotated"] == 1
    assert await h.store.token_hash_of(sid) == tokens.token_hash(new_tokens.pop())


class NoRotationStore(MemorySessionStore):
    """A store that reads but cannot take a rotation (its primary lost its replicas)."""

    async def rotate(
        self, token_hash: str, version: int, session: Session, successor: Successor
    ) -> Successor | None:
        raise StoreUnavailable("WAIT: 0 of 1 replicas")


async def test_a_rotation_the_store_cannot_take_still_allows_without_a_cookie(
    tmp_path: Path,
) -> None:
    clock = FakeClock()
    h = build_harness(
        tmp_path, store=NoRotationStore(clock=clock), clock=clock, rotate_after=ROTATE_AFTER
    )
    token, _ = await h.login()
    h.clock.advance(ROTATE_AFTER)
    response = await check(h, browser(token))
    assert response.status.code == code_pb2.OK
    assert set_cookies(response) == []
    assert h.authorizer.rotation is not None
    assert h.authorizer.rotation.stats["failed"] == 1
    assert (await h.sessions.lookup(token)).rotated_at is None  # still the session's token


async def test_a_session_revoked_during_the_rotation_is_denied(tmp_path: Path) -> None:
    clock = FakeClock()

    class RevokedMeanwhile(MemorySessionStore):
        async def rotate(
            self, token_hash: str, version: int, session: Session, successor: Successor
        ) -> Successor | None:
            await self.revoke(token_hash)  # an admin revocation lands first
            return await super().rotate(token_hash, version, session, successor)

    h = build_harness(
        tmp_path, store=RevokedMeanwhile(clock=clock), clock=clock, rotate_after=ROTATE_AFTER
    )
    token, _ = await h.login()
    h.clock.advance(ROTATE_AFTER)
    response = await check(h, browser(token))
    assert response.status.code != code_pb2.OK
    assert metadata(response)["reason"] == "revoked_session"
