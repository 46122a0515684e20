"""The token endpoint (RFC 6749 §3.2) through the real aiohttp app: client credentials, the
parameter rules (form body only, no secret in a URL), and the access token through the Check."""

from __future__ import annotations

import logging

import jwt
import pytest

from extauthz import tokens
from extauthz.check.context import RequestContext
from extauthz.check.decisions import Allow
from tests.oauth.harness import Harness


def bearer(token: str) -> RequestContext:
    return RequestContext(
        method="GET", scheme="https", host="api.example", path="/reports",
        headers={"authorization": f"Bearer {token}"}, peer_address="198.51.100.7",
    )


async def jwt_of(h: Harness, token: str) -> dict[str, object]:
    decision = await h.authorizer.authorize(bearer(token))
    assert isinstance(decision, Allow), decision
    raw = dict(decision.headers_to_set)["authorization"].removeprefix("Bearer ")
    jwks = jwt.PyJWKSet.from_dict(h.keyring.jwks())
    kid = jwt.get_unverified_header(raw)["kid"]
    key = next(k for k in jwks.keys if k.key_id == kid)
    claims: dict[str, object] = jwt.decode(raw, key=key, audience="aud", algorithms=["ES256"])
    return claims


async def test_client_credentials_issues_a_bearer_session_with_the_granted_scope(
    h: Harness,
) -> None:
    answer = await h.token({"grant_type": "client_credentials", "scope": "read"}, h.basic())
    body = await answer.json()
    assert answer.status == 200, body
    assert answer.headers["Cache-Control"] == "no-store"
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 600
    assert body["scope"] == "read"
    assert "refresh_token" not in body
    assert tokens.has_token_shape(body["access_token"], tokens.PREFIX)
    session = await h.sessions.lookup(body["access_token"])
    assert session.kind == "oauth"
    assert session.sub == f"client:{h.confidential.client_id}"
    assert session.client_id == h.confidential.client_id
    assert session.scopes == ("read",)
    assert session.expires_at - session.created_at == 600
    claims = await jwt_of(h, body["access_token"])
    assert claims["client_id"] == h.confidential.client_id
    assert claims["scope"] == "read"
    assert claims["sub"] == f"client:{h.confidential.client_id}"
    assert claims["auth_method"] == "oauth"
    assert claims.get("roles") in (None, [])


async def test_client_credentials_with_the_secret_in_the_body(h: Harness) -> None:
    answer = await h.token({
        "grant_type": "client_credentials", "client_id": h.confidential.client_id,
        "client_secret": h.secret,
    })
    body = await answer.json()
    assert answer.status == 200, body
    assert set(body["scope"].split()) == {"read", "write"}  # none asked: the client's scopes


@pytest.mark.parametrize(
    ("data", "headers", "status", "error"),
    [
        ({"grant_type": "client_credentials", "scope": "admin"}, "basic", 400, "invalid_scope"),
        ({"grant_type": "client_credentials"}, "wrong", 401, "invalid_client"),
        ({"grant_type": "client_credentials"}, None, 401, "invalid_client"),
        ({"grant_type": "password", "username": "a", "password": "b"}, "basic", 400,
         "unsupported_grant_type"),
        ({}, "basic", 400, "unsupported_grant_type"),
    ],
)
async def test_client_credentials_refusals(
    h: Harness, data: dict[str, str], headers: str | None, status: int, error: str
) -> None:
    sent = {"basic": h.basic(), "wrong": h.basic(secret="not-the-secret"), None: {}}[headers]
    answer = await h.token(data, sent)
    assert answer.status == status
    if status == 401:  # RFC 6749 §5.2
        assert answer.headers["WWW-Authenticate"].startswith("Basic")
    assert (await answer.json())["error"] == error


async def test_a_public_client_cannot_use_client_credentials(h: Harness) -> None:
    answer = await h.token(
        {"grant_type": "client_credentials", "client_id": h.public.client_id}
    )
    assert answer.status in (400, 401)
    assert (await answer.json())["error"] in ("invalid_client", "unauthorized_client")


async def test_a_secret_in_the_query_string_is_refused(h: Harness) -> None:
    answer = await h.client.post(
        "/auth/oauth/token",
        params={"client_id": h.confidential.client_id, "client_secret": h.secret},
        data={"grant_type": "client_credentials"},
    )
    assert answer.status == 400
    assert (await answer.json())["error"] == "invalid_request"
    assert await h.store.list_subject(f"client:{h.confidential.client_id}") == []


async def test_parameters_in_the_query_are_never_read(h: Harness) -> None:
    answer = await h.client.post(
        "/auth/oauth/token", params={"grant_type": "client_credentials"}, data={},
        headers=h.basic(),
    )
    assert answer.status == 400
    assert (await answer.json())["error"] == "unsupported_grant_type"


async def test_a_json_body_is_refused(h: Harness) -> None:
    answer = await h.client.post(
        "/auth/oauth/token", json={"grant_type": "client_credentials"}, headers=h.basic()
    )
    assert answer.status == 400
    assert (await answer.json())["error"] == "invalid_request"


async def test_metadata_is_valid_rfc8414(h: Harness) -> None:
    from authlib.oauth2.rfc8414 import AuthorizationServerMetadata

    answer = await h.client.get("/.well-known/oauth-authorization-server")
    assert answer.status == 200
    doc = await answer.json()
    AuthorizationServerMetadata(doc).validate()
    assert doc["issuer"] == "https://auth.example"
    assert doc["token_endpoint"] == "https://auth.example/auth/oauth/token"
    assert doc["code_challenge_methods_supported"] == ["S256"]


async def test_https_behind_a_trusted_proxy_and_plain_http_only_on_loopback(h: Harness) -> None:
    data = {"grant_type": "client_credentials"}
    # Envoy terminates TLS and says so (the test client's address is a trusted proxy)
    proxied = await h.token(data, {**h.basic(), "Host": "auth.example",
                                   "X-Forwarded-Proto": "https"})
    assert proxied.status == 200, await proxied.text()
    plain = await h.token(data, {**h.basic(), "Host": "auth.example"})
    assert plain.status == 400
    assert (await plain.json())["error"] == "insecure_transport"


async def test_no_token_reaches_the_logs_even_at_debug(
    h: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG):
        answer = await h.token({"grant_type": "client_credentials"}, h.basic())
        body = await answer.json()
    assert body["access_token"] not in caplog.text
    assert h.secret not in caplog.text
