"""The HTTP side (aiohttp): the JWKS, and the authentication service's routes.

``GET /.well-known/jwks.json`` — RFC 7517 §5 JWK Set of every published signing key
(``Content-Type: application/jwk-set+json``), cacheable for five minutes.
``GET /metrics`` — Prometheus text format (:mod:`extauthz.server.metrics`).
``/auth/*`` — the authentication service's adapter (:mod:`extauthz.login.http`) when one is given.
``/auth/oauth/*``, ``/.well-known/oauth-authorization-server`` — the OAuth 2.0 authorization
server's adapter (:mod:`extauthz.oauth.http`) when one is given (``oauth.enabled``).
"""

from __future__ import annotations

from aiohttp import web

from extauthz.keys.keyring import KeyRing
from extauthz.login.http import AuthHandlers
from extauthz.oauth.http import OAuthHandlers
from extauthz.server.metrics import Metrics

JWKS_PATH = "/.well-known/jwks.json"
KEYRING: web.AppKey[KeyRing] = web.AppKey("keyring", KeyRing)
METRICS: web.AppKey[Metrics] = web.AppKey("metrics", Metrics)


async def jwks(request: web.Request) -> web.Response:
    keyring = request.app[KEYRING]
    return web.json_response(
        keyring.jwks(),
        content_type="application/jwk-set+json",
        headers={"Cache-Control": "public, max-age=300"},
    )


async def metrics(request: web.Request) -> web.Response:
    return web.Response(
        text=request.app[METRICS].render(),
        content_type="text/plain",
        headers={"Cache-Control": "no-store"},
    )


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def build_http_app(
    keyring: KeyRing,
    auth: AuthHandlers | None = None,
    *,
    max_body_bytes: int = 16384,
    metrics_registry: Metrics | None = None,
    oauth: OAuthHandlers | None = None,
) -> web.Application:
    """The app; request bodies over ``max_body_bytes`` are refused with 413."""
    app = web.Application(client_max_size=max_body_bytes)
    app[KEYRING] = keyring
    app.router.add_get(JWKS_PATH, jwks)
    if metrics_registry is not None:
        app[METRICS] = metrics_registry
        app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    if auth is not None:
        app.add_routes(auth.routes())
    if oauth is not None:
        app.add_routes(oauth.routes())
    return app
