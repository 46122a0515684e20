"""The HTTP side (aiohttp): the JWKS, and the authentication service's routes.

``GET /.well-known/jwks.json`` — RFC 7517 §5 JWK Set of every published signing key
(``Content-Type: application/jwk-set+json``), cacheable for five minutes.
"""

from __future__ import annotations

from aiohttp import web

from extauthz.keys import KeyRing

JWKS_PATH = "/.well-known/jwks.json"
KEYRING: web.AppKey[KeyRing] = web.AppKey("keyring", KeyRing)


async def jwks(request: web.Request) -> web.Response:
    keyring = request.app[KEYRING]
    return web.json_response(
        keyring.jwks(),
        content_type="application/jwk-set+json",
        headers={"Cache-Control": "public, max-age=300"},
    )


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def build_http_app(keyring: KeyRing) -> web.Application:
    app = web.Application()
    app[KEYRING] = keyring
    app.router.add_get(JWKS_PATH, jwks)
    app.router.add_get("/healthz", healthz)
    return app
