"""demo/echo_upstream.py: the echo, the HTML view and JWT verification against a JWKS served by
a throw-away aiohttp app with freshly generated keys."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import jwt
import pytest
from aiohttp import test_utils, web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm

from demo import echo_upstream
from demo.echo_upstream import create_app, prefers_html

ISSUER = "http://issuer.test"
AUDIENCE = "echo-test"


@dataclass
class Jwks:
    """Keys published by the fake JWKS endpoint; ``fetches`` counts its requests."""

    published: dict[str, dict[str, Any]] = field(default_factory=dict)
    fetches: int = 0

    def publish(self, kid: str, public_jwk: dict[str, Any]) -> None:
        self.published[kid] = public_jwk | {"kid": kid, "use": "sig"}


@dataclass
class Env:
    jwks: Jwks
    client: test_utils.TestClient[web.Request, web.Application]
    sign: Callable[..., str]
    jwks_url: str = ""


def _ec_jwk(key: ec.EllipticCurvePrivateKey) -> dict[str, Any]:
    return ECAlgorithm.to_jwk(key.public_key(), as_dict=True) | {"alg": "ES256"}


@pytest.fixture
async def env() -> AsyncIterator[Env]:
    jwks = Jwks()
    keys: dict[str, ec.EllipticCurvePrivateKey] = {}

    async def serve_jwks(request: web.Request) -> web.Response:
        jwks.fetches += 1
        return web.json_response({"keys": list(jwks.published.values())})

    jwks_app = web.Application()
    jwks_app.router.add_get("/.well-known/jwks.json", serve_jwks)
    jwks_server = test_utils.TestServer(jwks_app)
    await jwks_server.start_server()

    def sign(kid: str = "key-1", publish: bool = True, **claims: Any) -> str:
        if kid not in keys:
            keys[kid] = ec.generate_private_key(ec.SECP256R1())
            if publish:
                jwks.publish(kid, _ec_jwk(keys[kid]))
        now = int(time.time())
        payload = {"iss": ISSUER, "aud": AUDIENCE, "sub": "alice", "sid": "s-1",
                   "iat": now, "nbf": now, "exp": now + 60} | claims  # fmt: skip
        payload = {k: v for k, v in payload.items() if v is not None}
        return jwt.encode(payload, keys[kid], algorithm="ES256", headers={"kid": kid})

    url = str(jwks_server.make_url("/.well-known/jwks.json"))
    client = test_utils.TestClient(test_utils.TestServer(create_app(url, ISSUER, AUDIENCE)))
    await client.start_server()
    try:
        yield Env(jwks, client, sign, url)
    finally:
        await client.close()
        await jwks_server.close()


async def _echo(env: Env, token: str | None = None, **kwargs: Any) -> dict[str, Any]:
    headers = kwargs.pop("headers", {})
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    resp = await env.client.get("/some/path?q=1", headers=headers, **kwargs)
    assert resp.status == 200
    assert resp.content_type == "application/json"
    body: dict[str, Any] = await resp.json()
    return body


# -- echo ---------------------------------------------------------------------------------------


async def test_echoes_any_method_and_path(env: Env) -> None:
    resp = await env.client.request("PATCH", "/a/b/c?x=1&y=2", data=b"ignored")
    body = await resp.json()
    assert resp.status == 200
    assert body["method"] == "PATCH"
    assert body["path"] == "/a/b/c?x=1&y=2"


async def test_repeated_headers_are_listed(env: Env) -> None:
    resp = await env.client.get("/", headers=[("X-Thing", "one"), ("X-Thing", "two")])
    body = await resp.json()
    assert body["headers"]["x-thing"] == ["one", "two"]


# -- JWT verification ---------------------------------------------------------------------------


async def test_valid_jwt_is_verified(env: Env) -> None:
    body = await _echo(env, env.sign(scope="read"))
    assert body["jwt"]["verified"] is True
    assert body["jwt"]["error"] is None
    assert body["jwt"]["header_count"] == 1
    assert body["jwt"]["claims"]["sub"] == "alice"
    assert body["jwt"]["claims"]["scope"] == "read"


async def test_keys_are_cached(env: Env) -> None:
    token = env.sign()
    for _ in range(3):
        assert (await _echo(env, token))["jwt"]["verified"] is True
    assert env.jwks.fetches == 1


async def test_unknown_kid_refetches_the_jwks(env: Env) -> None:
    assert (await _echo(env, env.sign(kid="old")))["jwt"]["verified"] is True
    # a key rotated in after the first fetch: published before it signs, so one refetch finds it
    assert (await _echo(env, env.sign(kid="new")))["jwt"]["verified"] is True
    assert env.jwks.fetches == 2


async def test_unpublished_kid_is_rejected_and_refetches_are_throttled(env: Env) -> None:
    assert (await _echo(env, env.sign(kid="known")))["jwt"]["verified"] is True
    for i in range(5):
        body = await _echo(env, env.sign(kid=f"forged-{i}", publish=False))
        assert body["jwt"]["verified"] is False
        assert "kid" in body["jwt"]["error"]
    assert env.jwks.fetches <= 2


def _reason(body: dict[str, Any]) -> str:
    assert body["jwt"]["verified"] is False
    assert body["jwt"]["claims"] is None
    error: str = body["jwt"]["error"]
    return error


async def test_wrong_audience_is_rejected(env: Env) -> None:
    assert "audience" in _reason(await _echo(env, env.sign(aud="someone-else"))).lower()


async def test_wrong_issuer_is_rejected(env: Env) -> None:
    assert "issuer" in _reason(await _echo(env, env.sign(iss="http://evil.test"))).lower()


async def test_expired_jwt_is_rejected(env: Env) -> None:
    now = int(time.time())
    token = env.sign(iat=now - 600, nbf=now - 600, exp=now - 300)
    assert "expired" in _reason(await _echo(env, token)).lower()


async def test_missing_exp_is_rejected(env: Env) -> None:
    assert "exp" in _reason(await _echo(env, env.sign(exp=None)))


async def test_tampered_signature_is_rejected(env: Env) -> None:
    header, payload, signature = env.sign().split(".")
    forged_payload = jwt.utils.base64url_encode(
        json.dumps({"iss": ISSUER, "aud": AUDIENCE, "sub": "mallory",
                    "iat": 0, "exp": 2**40}).encode()  # fmt: skip
    ).decode()
    reason = _reason(await _echo(env, f"{header}.{forged_payload}.{signature}"))
    assert "signature" in reason.lower()


async def test_alg_none_is_rejected(env: Env) -> None:
    env.sign()  # publishes key-1
    # PyJWT's "none" algorithm takes no key: None or ""
    token = jwt.encode({"iss": ISSUER, "aud": AUDIENCE, "sub": "mallory"}, "",
                       algorithm="none", headers={"kid": "key-1"})  # fmt: skip
    assert "not allowed" in _reason(await _echo(env, token))


async def test_hs256_with_the_public_key_is_rejected(env: Env) -> None:
    # algorithm confusion: an HMAC "signed" with the published public key as the secret
    env.sign()
    public_pem = json.dumps(env.jwks.published["key-1"]).encode()
    header = jwt.utils.base64url_encode(
        json.dumps({"alg": "HS256", "kid": "key-1", "typ": "JWT"}).encode()
    )
    payload = jwt.utils.base64url_encode(
        json.dumps({"iss": ISSUER, "aud": AUDIENCE, "sub": "mallory", "exp": 2**40}).encode()
    )
    sig = jwt.utils.base64url_encode(
        hmac.new(public_pem, header + b"." + payload, hashlib.sha256).digest()
    )
    token = (header + b"." + payload + b"." + sig).decode()
    assert "not allowed" in _reason(await _echo(env, token))


async def test_token_alg_must_match_the_key(env: Env) -> None:
    # an RS256 token whose kid points at the EC key
    env.sign()
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    token = jwt.encode({"iss": ISSUER, "aud": AUDIENCE, "sub": "mallory", "exp": 2**40},
                       rsa_key, algorithm="RS256", headers={"kid": "key-1"})  # fmt: skip
    assert _reason(await _echo(env, token))


async def test_eddsa_keys_are_accepted(env: Env) -> None:
    key = ed25519.Ed25519PrivateKey.generate()
    public = key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    env.jwks.publish("ed-1", {"kty": "OKP", "crv": "Ed25519", "alg": "EdDSA",
                              "x": jwt.utils.base64url_encode(public).decode()})  # fmt: skip
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": "bob", "iat": now, "exp": now + 60}
    token = jwt.encode(claims, key, algorithm="EdDSA", headers={"kid": "ed-1"})
    body = await _echo(env, token)
    assert body["jwt"]["verified"] is True, body["jwt"]["error"]


async def test_no_authorization_header(env: Env) -> None:
    body = await _echo(env)
    assert body["jwt"] == {"verified": False, "claims": None,
                           "error": "no Authorization header", "header_count": 0}  # fmt: skip


async def test_two_authorization_headers_are_not_verified(env: Env) -> None:
    token = env.sign()
    resp = await env.client.get(
        "/", headers=[("Authorization", f"Bearer {token}"), ("Authorization", f"Bearer {token}")]
    )
    body = await resp.json()
    assert body["jwt"]["header_count"] == 2
    assert body["jwt"]["verified"] is False


async def test_bearer_scheme_is_case_insensitive(env: Env) -> None:
    body = await _echo(env, headers={"Authorization": f"bEaReR {env.sign()}"})
    assert body["jwt"]["verified"] is True


async def test_other_schemes_are_not_verified(env: Env) -> None:
    body = await _echo(env, headers={"Authorization": "Basic YWxpY2U6cGFzcw=="})
    assert "Bearer" in _reason(body)


async def test_unreachable_jwks_is_an_error_not_a_crash(env: Env) -> None:
    app = create_app("http://127.0.0.1:1/jwks.json", ISSUER, AUDIENCE)
    async with test_utils.TestClient(test_utils.TestServer(app)) as client:
        resp = await client.get("/", headers={"Authorization": f"Bearer {env.sign()}"})
        body = await resp.json()
    assert "JWKS" in _reason(body)


# -- HTML ------------------------------------------------------------------------------------------


async def test_browsers_get_an_escaped_html_page_without_the_jwt(env: Env) -> None:
    token = env.sign(sub="<script>alert(1)</script>", note="a&b")
    resp = await env.client.get(
        "/page",
        headers={
            "Authorization": f"Bearer {token}",
            "Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
        },
    )
    page = await resp.text()
    assert resp.status == 200
    assert resp.content_type == "text/html"
    assert "<script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "a&amp;b" in page
    assert token not in page
    assert token.split(".")[2] not in page


@pytest.mark.parametrize(
    ("accept", "html"),
    [
        ("text/html", True),
        ("text/html,application/xhtml+xml,*/*;q=0.8", True),
        ("*/*", False),
        ("", False),
        ("application/json", False),
        ("application/json, text/html;q=0.5", False),
        ("text/html;q=0", False),
        ("TEXT/HTML;Q=0.9, application/json;q=0.1", True),
    ],
)
def test_prefers_html(accept: str, html: bool) -> None:
    assert prefers_html(accept) is html


def test_algorithm_list_is_explicit() -> None:
    assert echo_upstream.ALGORITHMS == ("ES256", "EdDSA", "RS256")


# -- PyJWT's PyJWKClient, as docs/operations.md ('Emergency key removal') describes it -----------


def _pyjwk_client_accepts(client: jwt.PyJWKClient, token: str) -> bool:
    try:
        key = client.get_signing_key_from_jwt(token)
    except jwt.PyJWKClientError:
        return False
    jwt.decode(token, key.key, algorithms=["ES256"], audience=AUDIENCE, issuer=ISSUER)
    return True


async def test_pyjwkclient_drops_a_removed_key_only_after_its_lifespan_and_never_with_cache_keys(
    env: Env,
) -> None:
    """What upstreams using PyJWT (the range pinned in pyproject.toml) must know: the JWK Set
    cache (``lifespan``) forgets a removed key when it expires; ``cache_keys=True`` keeps a key
    it has seen until the process restarts."""
    token = env.sign(kid="compromised")
    default = jwt.PyJWKClient(env.jwks_url, lifespan=0.3)
    keyed = jwt.PyJWKClient(env.jwks_url, lifespan=0.3, cache_keys=True)
    for client in (default, keyed):
        assert await asyncio.to_thread(_pyjwk_client_accepts, client, token)
    env.jwks.published.pop("compromised")
    env.sign(kid="replacement")  # the JWKS now holds only the replacement key
    await asyncio.sleep(0.35)
    assert not await asyncio.to_thread(_pyjwk_client_accepts, default, token)
    assert await asyncio.to_thread(_pyjwk_client_accepts, keyed, token)  # still accepted


# -- session updates ----------------------------------------------------------------------------


async def test_session_routes_answer_with_a_merge_patch(env: Env) -> None:
    headers = {"Authorization": f"Bearer {env.sign(data={'cart': 2})}"}
    resp = await env.client.get("/session/theme/dark", headers=headers)
    assert json.loads(resp.headers[echo_upstream.SESSION_UPDATE_HEADER]) == {"theme": "dark"}
    resp = await env.client.get("/session/cart/add", headers=headers)
    assert json.loads(resp.headers[echo_upstream.SESSION_UPDATE_HEADER]) == {"cart": 3}
    assert (await resp.json())["session_update"] == {"cart": 3}
    for path in ("/session/theme/Dark1", "/session/cart/remove", "/hello"):
        resp = await env.client.get(path, headers=headers)
        assert echo_upstream.SESSION_UPDATE_HEADER not in resp.headers, path
    # without a verified JWT the cart is not known: no update
    resp = await env.client.get("/session/cart/add")
    assert echo_upstream.SESSION_UPDATE_HEADER not in resp.headers
