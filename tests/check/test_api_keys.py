"""API keys through the Check (``AuthorizationServicer.Check``, no socket): the API-key header
and Bearer, the JWT's ``auth_method`` and ``key_id``, the key never sent upstream, bearer-only
tokens refused in the cookie, a route's ``credentials``, revocation, expiry, the throttle of
failed lookups and the last-use write."""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Any

import pytest
from envoy.service.auth.v3.external_auth_pb2 import CheckRequest, CheckResponse
from google.protobuf import json_format
from google.rpc import code_pb2

from extauthz import tokens
from extauthz.check.authorizer import Authorizer
from extauthz.check.resolver import SessionResolver
from extauthz.check.throttle import LookupThrottle
from extauthz.login.ratelimit import MemoryRateLimiter
from extauthz.server.grpc_server import AuthorizationServicer
from tests.fixtures.core import (
    COOKIE,
    FakeServicerContext,
    Harness,
    build_harness,
    http_request,
    metadata,
    ok_headers,
    response_headers,
)

DAY = 86400


@pytest.fixture
def h(tmp_path: Path) -> Harness:
    return build_harness(tmp_path)


async def check(h: Harness, request: CheckRequest) -> CheckResponse:
    return await AuthorizationServicer(h.authorizer).Check(request, FakeServicerContext())


async def new_key(h: Harness, sub: str = "svc-reports", **kw: Any) -> tuple[str, str]:
    """``(key, key id)`` of a new API key living 90 days."""
    key, session = await h.sessions.create(
        sub, kind="api_key", lifetime_seconds=90 * DAY, data={"name": "reports"}, **kw
    )
    return key, session.sid


def api(headers: dict[str, str], **extensions: str) -> CheckRequest:
    return http_request(
        {"accept": "application/json", **headers},
        context_extensions={"client": "api", **extensions},
        source="198.51.100.7",
    )


def upstream_jwt(h: Harness, response: CheckResponse) -> dict[str, Any]:
    assert response.status.code == code_pb2.OK, response
    values = [v for k, v, _ in ok_headers(response) if k == "authorization"]
    assert len(values) == 1 and values[0].startswith("Bearer ")
    return h.verify(values[0].removeprefix("Bearer "))


def denial(response: CheckResponse) -> tuple[int, dict[str, Any]]:
    assert not response.HasField("ok_response"), response
    return response.denied_response.status.code, json.loads(response.denied_response.body)


def everything(response: CheckResponse) -> str:
    wire: bytes = response.SerializeToString()
    return wire.decode("latin-1") + json_format.MessageToJson(response)


async def test_an_api_key_in_its_header_is_exchanged_and_never_sent_upstream(h: Harness) -> None:
    key, key_id = await new_key(h, scopes=["reports:read"])
    response = await check(h, api({"x-api-key": key}))
    claims = upstream_jwt(h, response)
    assert claims["auth_method"] == "api_key"
    assert claims["key_id"] == key_id == claims["sid"]
    assert claims["sub"] == "svc-reports"
    assert claims["scope"] == "reports:read"
    assert claims["data"] == {"name": "reports"}
    assert "x-api-key" in response.ok_response.headers_to_remove
    assert metadata(response)["credential"] == "api_key_header"
    assert key not in everything(response)


async def test_an_api_key_as_a_bearer_token_is_replaced_by_the_jwt(h: Harness) -> None:
    key, key_id = await new_key(h)
    response = await check(h, api({"authorization": f"Bearer {key}"}))
    assert upstream_jwt(h, response)["key_id"] == key_id
    assert "x-api-key" not in response.ok_response.headers_to_remove
    assert key not in everything(response)


async def test_the_same_key_in_both_headers_is_allowed_and_both_are_taken_off(h: Harness) -> None:
    key, _ = await new_key(h)
    response = await check(h, api({"authorization": f"Bearer {key}", "x-api-key": key}))
    upstream_jwt(h, response)
    assert "x-api-key" in response.ok_response.headers_to_remove
    assert key not in everything(response)


async def test_a_login_session_has_no_key_id(h: Harness) -> None:
    token, _ = await h.login("alice")
    claims = upstream_jwt(h, await check(h, api({"authorization": f"Bearer {token}"})))
    assert claims["auth_method"] == "session" and "key_id" not in claims


@pytest.mark.parametrize("kind", ["api_key", "oauth"])
async def test_a_bearer_only_token_in_the_session_cookie_is_refused_and_cleared(
    h: Harness, kind: str
) -> None:
    token, _ = await h.sessions.create("alice", kind=kind, lifetime_seconds=3600)
    response = await check(h, api({"cookie": f"{COOKIE}={token}"}))
    status, body = denial(response)
    assert status == 401
    assert body["reason"] == "bearer_only_credential"
    assert body["error"] == "invalid_token"
    assert any(
        k == "set-cookie" and v.startswith(f"{COOKIE}=;") for k, v in response_headers(response)
    )
    # the same token as a bearer credential works
    upstream_jwt(h, await check(h, api({"authorization": f"Bearer {token}"})))


async def test_a_login_cookie_beside_a_bearer_only_cookie_still_works(h: Harness) -> None:
    """Host and parent-domain cookies: a bearer-only token in one of them is not used."""
    token, sid = await h.login("alice")
    key, _ = await new_key(h, sub="alice")
    response = await check(h, api({"cookie": f"{COOKIE}={key}; {COOKIE}={token}"}))
    assert upstream_jwt(h, response)["sid"] == sid


async def test_an_api_key_header_holding_a_login_token_is_refused(h: Harness) -> None:
    token, _ = await h.login("alice")
    status, body = denial(await check(h, api({"x-api-key": token})))
    assert (status, body["reason"]) == (401, "malformed_credential")


async def test_a_route_that_refuses_api_keys_answers_403_with_the_reason(h: Harness) -> None:
    key, _ = await new_key(h)
    for headers in ({"x-api-key": key}, {"authorization": f"Bearer {key}"}):
        response = await check(h, api(headers, credentials="session oauth"))
        status, body = denial(response)
        assert status == 403
        assert body["reason"] == body["error"] == "credential_kind_refused"
        assert metadata(response)["reason"] == "credential_kind_refused"
        assert all(k != "www-authenticate" for k, _ in response_headers(response))
    token, _ = await h.login("alice")
    upstream_jwt(h, await check(h, api({"authorization": f"Bearer {token}"},
                                       credentials="session oauth")))  # fmt: skip


async def test_a_route_for_api_keys_only_refuses_a_login_session(h: Harness) -> None:
    token, _ = await h.login("alice")
    status, body = denial(
        await check(h, api({"authorization": f"Bearer {token}"}, credentials="api_key"))
    )
    assert (status, body["reason"]) == (403, "credential_kind_refused")
    key, _ = await new_key(h)
    upstream_jwt(h, await check(h, api({"x-api-key": key}, credentials="api_key")))


@pytest.mark.parametrize("value", ["bogus", "session,api_key", "API_KEY", "session\u200bapi_key"])
async def test_a_misconfigured_route_refuses_every_kind(h: Harness, value: str) -> None:
    key, _ = await new_key(h)
    token, _ = await h.login("alice")
    for headers in ({"x-api-key": key}, {"authorization": f"Bearer {token}"}):
        status, body = denial(await check(h, api(headers, credentials=value)))
        assert (status, body["reason"]) == (403, "credential_kind_refused")


async def test_a_revoked_key_is_refused_at_once(h: Harness) -> None:
    key, key_id = await new_key(h)
    upstream_jwt(h, await check(h, api({"x-api-key": key})))
    assert await h.store.revoke_sid(key_id) is not None
    status, body = denial(await check(h, api({"x-api-key": key})))
    assert (status, body["reason"]) == (401, "revoked_session")


async def test_an_expired_key_is_refused_and_its_lifetime_never_slides(h: Harness) -> None:
    key, _ = await h.sessions.create("svc", kind="api_key", lifetime_seconds=DAY)
    for _ in range(4):  # used every 6 hours: the expiry stays where it was
        upstream_jwt(h, await check(h, api({"x-api-key": key})))
        h.clock.advance(6 * 3600 - 1)
    h.clock.advance(10)
    status, body = denial(await check(h, api({"x-api-key": key})))
    assert status == 401 and body["reason"] in ("session_expired", "unknown_session")


async def test_the_last_use_is_written_at_first_use_then_at_most_every_interval(
    h: Harness,
) -> None:
    key, key_id = await new_key(h)
    created = (await h.store.get_by_sid(key_id)).last_seen  # type: ignore[union-attr]
    h.clock.advance(10)
    upstream_jwt(h, await check(h, api({"x-api-key": key})))
    first_use = h.clock()
    assert (await h.store.get_by_sid(key_id)).last_seen == first_use != created  # type: ignore[union-attr]
    h.clock.advance(299)
    upstream_jwt(h, await check(h, api({"x-api-key": key})))
    assert (await h.store.get_by_sid(key_id)).last_seen == first_use  # type: ignore[union-attr]
    h.clock.advance(1)
    upstream_jwt(h, await check(h, api({"x-api-key": key})))
    assert (await h.store.get_by_sid(key_id)).last_seen == h.clock()  # type: ignore[union-attr]


async def test_a_burst_of_guessed_api_keys_is_throttled_like_any_token(h: Harness) -> None:
    limiter = MemoryRateLimiter(5, 30, clock=h.clock)
    resolver = SessionResolver(
        h.sessions, h.authorizer.resolver.cookie, throttle=LookupThrottle(limiter, clock=h.clock)
    )
    authorizer = Authorizer(resolver, h.minter, h.denials, store_strategy="sticky", node_id="n")
    statuses = []
    for i in range(8):
        guess = (
            tokens.mint_token(tokens.API_KEY_PREFIX)
            if i % 2
            else "xak_" + secrets.token_hex(25)[:49]
        )
        headers = {"x-api-key": guess} if i % 3 else {"authorization": f"Bearer {guess}"}
        response = await AuthorizationServicer(authorizer).Check(
            api(headers), FakeServicerContext()
        )
        statuses.append(denial(response)[0])
    assert statuses == [401] * 5 + [429] * 3
    key, _ = await new_key(h)
    # blocked means blocked: a valid key from that address is not looked up either
    response = await AuthorizationServicer(authorizer).Check(
        api({"x-api-key": key}), FakeServicerContext()
    )
    assert denial(response)[0] == 429
