"""The Check pipeline through the servicer's ``Check`` (no socket): allow mutations, duplicate
session cookies, credentials that disagree, denial rendering and policy."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from envoy.config.core.v3.base_pb2 import HeaderValueOption
from envoy.service.auth.v3.external_auth_pb2 import CheckRequest, CheckResponse
from google.protobuf import json_format
from google.rpc import code_pb2

from extauthz.clock import JWT_BACKDATE_SECONDS
from extauthz.keys.keyring import jwk_thumbprint
from extauthz.server.grpc_server import AuthorizationServicer
from tests.fixtures.core import (
    COOKIE,
    LOGIN_URL,
    NODE_ID,
    REALM,
    STRATEGY,
    FakeServicerContext,
    Harness,
    build_harness,
    http_request,
    load_check_request,
    metadata,
    ok_headers,
    response_headers,
)

OVERWRITE = HeaderValueOption.HeaderAppendAction.OVERWRITE_IF_EXISTS_OR_ADD
APPEND = HeaderValueOption.HeaderAppendAction.APPEND_IF_EXISTS_OR_ADD
CLEAR_COOKIE = f"{COOKIE}=; Max-Age=0; Path=/; HttpOnly; SameSite=Lax; Secure"
NO_CREDENTIAL_CHALLENGE = f'Bearer realm="{REALM}"'


def invalid_token_challenge(description: str) -> str:
    return f'Bearer realm="{REALM}", error="invalid_token", error_description="{description}"'


@pytest.fixture
def h(tmp_path: Path) -> Harness:
    return build_harness(tmp_path)


async def check(h: Harness, request: CheckRequest) -> CheckResponse:
    return await AuthorizationServicer(h.authorizer).Check(request, FakeServicerContext())


def everything(response: CheckResponse) -> str:
    """Every byte of the response, as text and as JSON, for "appears nowhere" checks."""
    wire: bytes = response.SerializeToString()
    return wire.decode("latin-1") + json_format.MessageToJson(response)


def assert_allowed(response: CheckResponse) -> None:
    assert response.status.code == code_pb2.OK, response
    assert response.HasField("ok_response") and not response.HasField("denied_response")


def jwt_of(response: CheckResponse) -> str:
    values = [v for k, v, _ in ok_headers(response) if k == "authorization"]
    assert len(values) == 1
    scheme, _, token = values[0].partition(" ")
    assert scheme == "Bearer"
    return token


def assert_denied(
    response: CheckResponse,
    status: int,
    headers: list[tuple[str, str]],
    body: dict[str, Any] | None,
) -> None:
    assert not response.HasField("ok_response")
    assert response.denied_response.status.code == status
    assert response.status.code != code_pb2.OK
    assert response_headers(response) == headers
    if body is None:
        assert response.denied_response.body == ""
    else:
        assert json.loads(response.denied_response.body) == body
    for h in response.denied_response.headers:
        assert h.append_action == APPEND
    assert metadata(response)["decision"] == "deny"


def assert_metadata(response: CheckResponse, decision: str, reason: str, sid: str) -> None:
    """The documented dynamic_metadata fields (docs/architecture.md); others may be added."""
    fields = ("decision", "reason", "sid", "store_strategy", "node_id")
    found = metadata(response)
    assert {f: found.get(f) for f in fields} == {
        "decision": decision,
        "reason": reason,
        "sid": sid,
        "store_strategy": STRATEGY,
        "node_id": NODE_ID,
    }
    assert all(isinstance(v, str) for v in found.values())


def json_401(error: str, description: str, reason: str) -> dict[str, str]:
    return {"error": error, "error_description": description, "reason": reason}


# -- allow mutations -------------------------------------------------------------------------------


async def test_bearer_allow_sets_exactly_one_authorization_header_with_a_verifiable_jwt(
    h: Harness,
) -> None:
    token, sid = await h.login("alice", scopes=["read"], roles=["user"], data={"tenant": "t1"})
    response = await check(h, load_check_request("api_bearer", TOKEN=token))
    assert_allowed(response)
    headers = ok_headers(response)
    assert [(k, a) for k, _, a in headers] == [("authorization", OVERWRITE)]
    assert list(response.ok_response.headers_to_remove) == []
    assert list(response.ok_response.response_headers_to_add) == []
    value = jwt_of(response)
    header = jwt.get_unverified_header(value)
    assert header["kid"] == jwk_thumbprint(h.keyring.jwks()["keys"][0]) == h.keyring.signing_key.kid
    claims = h.verify(value)
    assert (claims["sub"], claims["sid"], claims["scope"], claims["roles"]) == (
        "alice", sid, "read", ["user"],
    )  # fmt: skip
    assert claims["data"] == {"tenant": "t1"}
    assert token not in everything(response)
    assert_metadata(response, "allow", "session_valid", sid)


async def test_cookie_allow_rewrites_the_cookie_header_without_the_session_cookie(
    h: Harness,
) -> None:
    token, sid = await h.login()
    response = await check(h, load_check_request("browser_cookie", TOKEN=token))
    assert_allowed(response)
    headers = ok_headers(response)
    assert [(k, a) for k, _, a in headers] == [("authorization", OVERWRITE), ("cookie", OVERWRITE)]
    assert headers[1][1] == "theme=dark; lang=en"
    assert list(response.ok_response.headers_to_remove) == []
    assert h.verify(jwt_of(response))["sid"] == sid
    assert token not in everything(response)


async def test_junk_cookies_are_forwarded_byte_for_byte(h: Harness) -> None:
    token, _ = await h.login()
    request = load_check_request("junk_cookies", TOKEN=token)
    original = request.attributes.request.http.headers["cookie"]
    response = await check(h, request)
    assert_allowed(response)
    cookie = [v for k, v, _ in ok_headers(response) if k == "cookie"]
    # the comma-joined second Cookie header is rebuilt with "; "
    without = original.replace(f"; extauthz_session={token}", "")
    assert cookie == [without.replace("tail=1,other=2", "tail=1; other=2")]
    assert token not in everything(response)


async def test_cookie_header_is_removed_when_only_the_session_cookie_was_there(h: Harness) -> None:
    token, _ = await h.login()
    response = await check(h, http_request({"cookie": f"{COOKIE}={token}"}))
    assert_allowed(response)
    assert [k for k, _, _ in ok_headers(response)] == ["authorization"]
    assert list(response.ok_response.headers_to_remove) == ["cookie"]
    assert token not in everything(response)


async def test_cookie_header_without_other_changes_is_not_rewritten_for_bearer(h: Harness) -> None:
    token, _ = await h.login()
    response = await check(
        h, http_request({"authorization": f"Bearer {token}", "cookie": "a=1;b=2"})
    )
    assert_allowed(response)
    assert [k for k, _, _ in ok_headers(response)] == ["authorization"]
    assert list(response.ok_response.headers_to_remove) == []


async def test_client_supplied_jwt_header_is_overwritten_and_bearer_removed(tmp_path: Path) -> None:
    h = build_harness(tmp_path, jwt_header="x-session-jwt")
    token, sid = await h.login()
    response = await check(
        h, http_request({"authorization": f"Bearer {token}", "x-session-jwt": "forged"})
    )
    assert_allowed(response)
    headers = ok_headers(response)
    assert [(k, a) for k, _, a in headers] == [("x-session-jwt", OVERWRITE)]
    assert h.verify(headers[0][1])["sid"] == sid  # the bare JWT, no scheme
    assert list(response.ok_response.headers_to_remove) == ["authorization"]
    assert token not in everything(response)


async def test_jwt_is_reused_while_fresh_and_reminted_when_little_lifetime_is_left(
    h: Harness,
) -> None:
    token, sid = await h.login()
    request = load_check_request("api_bearer", TOKEN=token)
    first = jwt_of(await check(h, request))
    h.clock.advance(100)
    assert jwt_of(await check(h, request)) == first
    h.clock.advance(60)  # 140 s of 300 left: below half
    second = jwt_of(await check(h, request))
    assert second != first
    claims = h.verify(second)
    assert claims["sid"] == sid and claims["iat"] == int(h.clock()) - JWT_BACKDATE_SECONDS
    other, _ = await h.login("bob")
    bobs = jwt_of(await check(h, load_check_request("api_bearer", TOKEN=other)))
    assert h.verify(bobs)["sub"] == "bob"


# -- duplicate session cookies (host + parent-domain cookie) ---------------------------------------


@pytest.mark.parametrize("stale_first", [True, False])
@pytest.mark.parametrize("stale_kind", ["revoked", "expired", "bad_checksum", "unknown"])
async def test_stale_and_live_session_cookie_allow_the_live_one(
    tmp_path: Path, stale_first: bool, stale_kind: str
) -> None:
    h = build_harness(tmp_path)
    stale, _ = await h.login("alice")
    if stale_kind == "revoked":
        await h.sessions.revoke_token(stale)
    elif stale_kind == "expired":
        h.clock.advance(601)
    elif stale_kind == "bad_checksum":
        stale = stale[:-1] + ("A" if stale[-1] != "A" else "B")
    else:
        from extauthz.tokens import mint_token

        stale = mint_token()
    live, live_sid = await h.login("alice")
    pair = [stale, live] if stale_first else [live, stale]
    cookie = f"{COOKIE}={pair[0]}; other=1; {COOKIE}={pair[1]}"
    response = await check(h, http_request({"cookie": cookie}))
    assert_allowed(response)
    assert h.verify(jwt_of(response))["sid"] == live_sid
    assert metadata(response)["sid"] == live_sid
    assert [v for k, v, _ in ok_headers(response) if k == "cookie"] == ["other=1"]
    assert stale not in everything(response) and live not in everything(response)


async def test_two_live_session_cookies_of_different_users_are_denied(h: Harness) -> None:
    alice, _ = await h.login("alice")
    bob, _ = await h.login("bob")
    for first, second in ((alice, bob), (bob, alice)):
        response = await check(h, http_request({"cookie": f"{COOKIE}={first}; {COOKIE}={second}"}))
        description = "session cookies of different users"
        assert_denied(
            response,
            401,
            [
                ("cache-control", "no-store"),
                # an ambiguous cookie is not cleared: see test_advisory's cookie-tossing test
                ("www-authenticate", invalid_token_challenge(description)),
                ("content-type", "application/json"),
            ],
            json_401("invalid_token", description, "ambiguous_credential"),
        )
        assert alice not in everything(response) and bob not in everything(response)


async def test_two_live_session_cookies_of_one_user_allow_the_first(h: Harness) -> None:
    one, sid_one = await h.login("alice")
    two, _ = await h.login("alice")
    response = await check(h, http_request({"cookie": f"{COOKIE}={one}; {COOKIE}={two}"}))
    assert_allowed(response)
    assert metadata(response)["sid"] == sid_one


async def test_browser_navigation_with_a_dead_cookie_is_redirected_and_the_cookie_cleared(
    h: Harness,
) -> None:
    token, _ = await h.login()
    await h.sessions.revoke_token(token)
    response = await check(h, load_check_request("browser_cookie", TOKEN=token))
    assert_denied(
        response,
        302,
        [
            ("cache-control", "no-store"),
            ("set-cookie", CLEAR_COOKIE),
            ("location", f"{LOGIN_URL}?return_to=%2Fdashboard%3Ftab%3D1"),
        ],
        None,
    )
    assert response.status.code == code_pb2.PERMISSION_DENIED
    assert metadata(response)["reason"] == "revoked_session"


async def test_the_login_page_is_never_redirected_to_itself(h: Harness) -> None:
    token, _ = await h.login()
    await h.sessions.revoke_token(token)
    request = http_request(
        {"accept": "text/html", "cookie": f"{COOKIE}={token}"},
        path=f"{LOGIN_URL}?return_to=%2F",
        context_extensions={"client": "browser"},
    )
    response = await check(h, request)
    assert response.denied_response.status.code == 401
    names = [k for k, _ in response_headers(response)]
    assert "location" not in names
    assert ("set-cookie", CLEAR_COOKIE) in response_headers(response)


async def test_cookie_domain_goes_into_the_clearing_cookie(tmp_path: Path) -> None:
    h = build_harness(tmp_path, cookie_domain="example.test")
    response = await check(h, http_request({"cookie": f"{COOKIE}=junk"}))
    assert ("set-cookie", CLEAR_COOKIE + "; Domain=example.test") in response_headers(response)


# -- credentials that disagree -------------------------------------------------------------------


async def test_cookie_and_a_different_bearer_are_denied(h: Harness) -> None:
    alice, _ = await h.login("alice")
    bob, _ = await h.login("bob")
    response = await check(
        h, http_request({"authorization": f"Bearer {bob}", "cookie": f"{COOKIE}={alice}"})
    )
    description = "bearer token and session cookie disagree"
    assert_denied(
        response,
        401,
        [
            ("cache-control", "no-store"),  # the cookie is kept: the request is ambiguous
            ("www-authenticate", invalid_token_challenge(description)),
            ("content-type", "application/json"),
        ],
        json_401("invalid_token", description, "ambiguous_credential"),
    )


async def test_cookie_and_the_same_bearer_are_allowed(h: Harness) -> None:
    token, sid = await h.login()
    response = await check(
        h, http_request({"authorization": f"Bearer {token}", "cookie": f"x=1; {COOKIE}={token}"})
    )
    assert_allowed(response)
    assert metadata(response)["sid"] == sid
    assert token not in everything(response)


@pytest.mark.parametrize("same", [True, False])
async def test_two_bearer_tokens_are_denied(h: Harness, same: bool) -> None:
    one, _ = await h.login("alice")
    two = one if same else (await h.login("bob"))[0]
    response = await check(h, load_check_request("two_authorization", TOKEN=one, OTHER=two))
    description = "more than one Authorization header value"
    assert_denied(
        response,
        401,
        [
            ("cache-control", "no-store"),
            ("www-authenticate", invalid_token_challenge(description)),
            ("content-type", "application/json"),
        ],
        json_401("invalid_token", description, "ambiguous_credential"),
    )


# -- plain denials and policy ---------------------------------------------------------------------


async def test_no_credential_challenge_has_no_error_code(h: Harness) -> None:
    response = await check(h, http_request({"accept": "application/json"}))
    assert_denied(
        response,
        401,
        [
            ("cache-control", "no-store"),
            ("www-authenticate", NO_CREDENTIAL_CHALLENGE),
            ("content-type", "application/json"),
        ],
        json_401("unauthenticated", "", "no_credential"),
    )
    assert response.status.code == code_pb2.UNAUTHENTICATED
    assert_metadata(response, "deny", "no_credential", "")


async def test_unknown_token_is_invalid_token(h: Harness) -> None:
    from extauthz.tokens import mint_token

    response = await check(h, http_request({"authorization": f"Bearer {mint_token()}"}))
    description = "unknown or revoked session"
    assert_denied(
        response,
        401,
        [
            ("cache-control", "no-store"),
            ("www-authenticate", invalid_token_challenge(description)),
            ("content-type", "application/json"),
        ],
        json_401("invalid_token", description, "unknown_session"),
    )


async def test_expired_session_is_invalid_token(tmp_path: Path) -> None:
    h = build_harness(tmp_path, idle_timeout=60, absolute_timeout=600)
    token, _ = await h.login()
    h.clock.advance(61)
    response = await check(h, http_request({"authorization": f"Bearer {token}"}))
    assert response.denied_response.status.code == 401
    assert metadata(response)["reason"] in ("session_expired", "unknown_session")
    headers = response_headers(response)
    assert any(
        ("www-authenticate", invalid_token_challenge(why)) in headers
        for why in ("session expired", "unknown or revoked session")
    )


async def test_missing_scope_is_403_insufficient_scope(h: Harness) -> None:
    token, sid = await h.login("alice", scopes=["read"])
    request = http_request(
        {"authorization": f"Bearer {token}", "cookie": f"{COOKIE}={token}"},
        context_extensions={"required_scopes": "read write"},
    )
    response = await check(h, request)
    assert_denied(
        response,
        403,
        [
            ("cache-control", "no-store"),
            (
                "www-authenticate",
                f'Bearer realm="{REALM}", error="insufficient_scope", '
                'error_description="the session lacks a required scope", scope="read write"',
            ),
            ("content-type", "application/json"),
        ],
        json_401("insufficient_scope", "the session lacks a required scope", "insufficient_scope"),
    )
    assert response.status.code == code_pb2.PERMISSION_DENIED
    # the session is fine: its cookie is kept
    assert token not in everything(response)
    granted = http_request(
        {"authorization": f"Bearer {token}"}, context_extensions={"required_scopes": "read"}
    )
    assert_allowed(await check(h, granted))
    assert sid


async def test_roles_need_one_of(h: Harness) -> None:
    token, _ = await h.login("alice", roles=["editor"])
    for roles, allowed in (("admin editor", True), ("admin", False)):
        request = http_request(
            {"authorization": f"Bearer {token}"}, context_extensions={"required_roles": roles}
        )
        response = await check(h, request)
        assert response.HasField("ok_response") is allowed
        if not allowed:
            assert response.denied_response.status.code == 403
            assert metadata(response)["reason"] == "insufficient_role"


@pytest.mark.parametrize(
    ("method", "accept", "client", "status"),
    [
        ("GET", "text/html", "auto", 302),
        ("HEAD", "text/html", "auto", 302),
        ("GET", "application/json", "auto", 401),
        ("GET", "*/*", "auto", 401),
        ("POST", "text/html", "auto", 401),
        ("GET", "text/html", "api", 401),
        ("GET", "application/json", "browser", 302),
        ("POST", "text/html", "browser", 401),
        ("GET", "text/html", "nonsense", 302),
    ],
)
async def test_browser_or_api_denial(
    h: Harness, method: str, accept: str, client: str, status: int
) -> None:
    request = http_request(
        {"accept": accept}, method=method, path="/app", context_extensions={"client": client}
    )
    response = await check(h, request)
    assert response.denied_response.status.code == status
    names = [k for k, _ in response_headers(response)]
    assert ("location" in names) is (status == 302)
    assert ("www-authenticate" in names) is (status == 401)
    assert "set-cookie" not in names


@pytest.mark.parametrize("scopes", ['a"b', "a\\b", "\x08", "é"])
async def test_a_scope_that_cannot_be_quoted_is_left_out_of_the_challenge(
    h: Harness, scopes: str
) -> None:
    token, _ = await h.login()
    request = http_request(
        {"authorization": f"Bearer {token}"}, context_extensions={"required_scopes": scopes}
    )
    response = await check(h, request)
    assert response.denied_response.status.code == 403
    (challenge,) = [v for k, v in response_headers(response) if k == "www-authenticate"]
    assert challenge == (
        f'Bearer realm="{REALM}", error="insufficient_scope", '
        'error_description="the session lacks a required scope"'
    )


@pytest.mark.parametrize(
    "query", ["q=" + "eyJ" * 19_000, "q=" + "eyJ" * 9_500 + ".." + "a" * 28_000]
)
async def test_a_login_redirect_for_a_long_query_takes_no_time(h: Harness, query: str) -> None:
    """A navigation without a session is redirected with its path and query, minus anything
    shaped like a credential. The search for a JWS in the query read the rest of the value
    again from every "eyJ": a 57 KB query (Envoy passes up to 60 KiB of headers) held the
    event loop, every Check of the node with it, for seconds, with no credential at all."""
    request = http_request(
        {"accept": "text/html"}, path=f"/search?{query}", context_extensions={"client": "browser"}
    )
    started = time.monotonic()
    response = await check(h, request)
    assert time.monotonic() - started < 0.5
    assert response.denied_response.status.code == 302
