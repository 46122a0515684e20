"""Step-up through the real Check: a route's ``required_amr`` and ``max_auth_age``
(context_extensions) against sessions made by the authentication service with second factors
(tests/login/mfa/harness.py), on one fake clock. RFC 9470 for API clients, the step-up page
for browsers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import jwt
import pytest

from extauthz.check.authorizer import Authorizer
from extauthz.check.denials import DenialRenderer
from extauthz.check.minting import JwtMinter
from extauthz.check.resolver import SessionResolver
from extauthz.keys.keyring import KeyRing
from extauthz.login.cookies import SessionCookie
from extauthz.server.grpc_server import AuthorizationServicer
from tests.fixtures.core import (
    AUDIENCE,
    ISSUER,
    FakeServicerContext,
    http_request,
    key_dir,
    metadata,
    ok_headers,
    response_headers,
)
from tests.login.mfa.harness import COOKIE, Mfa, cookie_of, mfa_harness

ROUTE = {"required_amr": "mfa", "max_auth_age": "300"}


@pytest.fixture
async def h(tmp_path: Path) -> AsyncIterator[Mfa]:
    async with mfa_harness(tmp_path) as harness:
        yield harness


def authorizer(h: Mfa, tmp_path: Path) -> Authorizer:
    cookie = SessionCookie(COOKIE, secure=False)
    minter = JwtMinter(KeyRing.from_directory(key_dir(tmp_path)), issuer=ISSUER,
                       audience=AUDIENCE, clock=h.clock)
    denials = DenialRenderer(realm="test", login_url="/auth/login", cookie=cookie)
    return Authorizer(SessionResolver(h.sessions, cookie), minter, denials,
                      store_strategy="sticky", node_id="n1", clock=h.clock)


async def check(a: Authorizer, token: str, *, browser: bool,
                route: dict[str, str] | None = None) -> tuple[int, dict[str, str], object]:
    """(status: 200 allowed, else the denial's; headers; the response)."""
    if browser:
        headers = {"cookie": f"{COOKIE}={token}", "accept": "text/html"}
    else:
        headers = {"authorization": f"Bearer {token}", "accept": "application/json"}
    route = ROUTE if route is None else route
    request = http_request(headers, path="/admin/items", context_extensions=route)
    response = await AuthorizationServicer(a).Check(request, FakeServicerContext())
    if response.HasField("ok_response"):
        return 200, {k: v for k, v, _ in ok_headers(response)}, response
    return (response.denied_response.status.code, dict(response_headers(response)), response)


def claims(headers: dict[str, str]) -> dict[str, object]:
    token = headers["authorization"].removeprefix("Bearer ")
    return dict(jwt.decode(token, options={"verify_signature": False}))


async def test_a_password_only_session_is_sent_to_step_up(h: Mfa, tmp_path: Path) -> None:
    a = authorizer(h, tmp_path)
    token = await h.login("alice")
    status, headers, _ = await check(a, token, browser=True)
    assert status == 302
    assert headers["location"] == "/auth/mfa/step-up?return_to=%2Fadmin%2Fitems"
    status, headers, response = await check(a, token, browser=False)
    assert status == 401
    assert headers["www-authenticate"] == (
        'Bearer realm="test", error="insufficient_user_authentication", '
        'error_description="a stronger authentication is required", acr_values="mfa", '
        'max_age="300"'
    )
    assert metadata(response)["reason"] == "insufficient_user_authentication"
    # the same session is fine where the route asks for nothing more
    assert (await check(a, token, browser=False, route={}))[0] == 200


async def test_step_up_lets_the_session_in_until_max_auth_age_then_again(
    h: Mfa, tmp_path: Path
) -> None:
    a = authorizer(h, tmp_path)
    secret, _, token = await h.enrol("alice", await h.login("alice"))
    enrolled_at = h.clock()
    status, headers, _ = await check(a, token, browser=True)
    assert status == 200
    jwt_claims = claims(headers)
    assert jwt_claims["amr"] == ["pwd", "otp", "mfa"]
    assert jwt_claims["auth_time"] == int(enrolled_at)

    h.clock.advance(301)  # max_auth_age passed
    status, headers, _ = await check(a, token, browser=True)
    assert status == 302 and headers["location"].startswith("/auth/mfa/step-up?")
    status, headers, _ = await check(a, token, browser=False)
    assert status == 401 and 'max_age="300"' in headers["www-authenticate"]
    assert "a more recent authentication is required" in headers["www-authenticate"]

    stepped = await h.post("/auth/mfa/step-up", {"kind": "totp", "response": h.code(secret),
                                                 "return_to": "/admin/items"}, session=token)
    assert stepped.status == 200, await stepped.text()
    new_token = cookie_of(stepped, COOKIE)
    assert new_token and new_token != token  # the token was rotated
    status, headers, _ = await check(a, new_token, browser=True)
    assert status == 200 and claims(headers)["auth_time"] == int(h.clock())
    # the old token lives for the rotation grace only
    h.clock.advance(6)
    assert (await check(a, token, browser=False, route={}))[0] == 401
    assert (await check(a, new_token, browser=False))[0] == 200


async def test_a_misconfigured_max_auth_age_refuses_every_request(
    h: Mfa, tmp_path: Path
) -> None:
    a = authorizer(h, tmp_path)
    _, _, token = await h.enrol("alice", await h.login("alice"))
    # "9" * 5000: past int()'s 4300-digit limit, which raised out of the Check
    for value in ("five minutes", "-1", "1e3", "99999999999", "9" * 5000):
        status, _, response = await check(a, token, browser=False,
                                          route={"max_auth_age": value})
        assert status == 403 and metadata(response)["reason"] == "route_misconfigured"
