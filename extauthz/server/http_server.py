"""The HTTP side (aiohttp): the JWKS, and the authentication service's routes.

``GET /.well-known/jwks.json`` — RFC 7517 §5 JWK Set of every published signing key
(``Content-Type: application/jwk-set+json``), cacheable for five minutes.
``GET /metrics`` — Prometheus text format by ``prometheus_client`` (:mod:`.metrics`).
``/auth/*`` — the authentication service's adapter (:mod:`extauthz.login.http`) when one is given.
``/auth/oauth/*``, ``/.well-known/oauth-authorization-server`` — the OAuth 2.0 authorization
server's adapter (:mod:`extauthz.oauth.http`) when one is given (``oauth.enabled``).
``GET /auth/verify`` — forward-auth for nginx, Traefik and Caddy (:mod:`extauthz.check.forwarded`,
docs/forward-auth.md) when ``auth.forward_auth`` is on: the Check pipeline on the forwarded
request, answered 200 (+ JWT), 401, 403 or 302; 503 when the session store cannot answer.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING

from aiohttp import web

from extauthz.check.authorizer import Authorizer
from extauthz.check.context import RequestContext
from extauthz.check.forwarded import (
    VERIFY_PATH,
    VerifyAnswer,
    forwarded_request,
    verify_answer,
    wants_redirect_as_401,
)
from extauthz.errors import BadRequest, Reason, StoreUnavailable
from extauthz.keys.keyring import KeyRing
from extauthz.login.http import AuthHandlers, client_address
from extauthz.server.metrics import CONTENT_TYPE, Metrics

if TYPE_CHECKING:  # loaded only when oauth.enabled (extauthz.server.oauth_wiring)
    from extauthz.oauth.http import OAuthHandlers

JWKS_PATH = "/.well-known/jwks.json"
KEYRING: web.AppKey[KeyRing] = web.AppKey("keyring", KeyRing)
METRICS: web.AppKey[Metrics] = web.AppKey("metrics", Metrics)
log = logging.getLogger("extauthz.forward_auth")
_Networks = tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]
_UNAVAILABLE = '{"error":"temporarily_unavailable","reason":"store_unavailable"}'


async def jwks(request: web.Request) -> web.Response:
    keyring = request.app[KEYRING]
    return web.json_response(
        keyring.jwks(),
        content_type="application/jwk-set+json",
        headers={"Cache-Control": "public, max-age=300"},
    )


async def metrics(request: web.Request) -> web.Response:
    return web.Response(
        body=request.app[METRICS].render().encode(),
        headers={"Content-Type": CONTENT_TYPE, "Cache-Control": "no-store"},
    )


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


class ForwardAuth:
    """``GET /auth/verify``: the Check pipeline (``authorizer``) on the request a proxy
    forwards. Only peers in ``trusted_proxies`` are believed (their forwarding headers drive
    the decision); any other peer gets 400. The client's address is the right-most
    ``X-Forwarded-For`` entry the proxy added (:func:`~extauthz.login.http.client_address`)."""

    def __init__(
        self,
        authorizer: Authorizer,
        trusted_proxies: Iterable[ipaddress.IPv4Network | ipaddress.IPv6Network],
    ) -> None:
        self.authorizer = authorizer
        self.trusted_proxies: _Networks = tuple(trusted_proxies)

    def _trusted(self, request: web.Request) -> bool:
        try:
            peer = ipaddress.ip_address(request.remote or "")
        except ValueError:
            return False
        return any(peer in net for net in self.trusted_proxies)

    async def verify(self, request: web.Request) -> web.Response:
        lines = list(request.headers.items())
        if not self._trusted(request):
            log.info("forward-auth request from %s, not in auth.trusted_proxies", request.remote)
            denial = BadRequest(Reason.MALFORMED_REQUEST, "not a trusted proxy")
            return _respond(verify_answer(_EMPTY, self.authorizer.reject(denial)))
        try:
            ctx = forwarded_request(
                lines,
                scheme=request.scheme,
                peer_address=client_address(request, self.trusted_proxies),
            )
        except BadRequest as denial:
            log.info("forward-auth request refused: %s", denial.detail)
            return _respond(verify_answer(_EMPTY, self.authorizer.reject(denial)))
        try:
            decision = await self.authorizer.authorize(ctx)
        except StoreUnavailable:
            # never a 401: an unreachable store is not a logout
            return web.Response(
                status=503,
                text=_UNAVAILABLE,
                content_type="application/json",
                headers={"Cache-Control": "no-store", "Retry-After": "1"},
            )
        redirect_as_401 = wants_redirect_as_401(lines)
        return _respond(verify_answer(ctx, decision, redirect_as_401=redirect_as_401))


_EMPTY = RequestContext(method="", scheme="", host="", path="")


def _respond(answer: VerifyAnswer) -> web.Response:
    response = web.Response(status=answer.status, body=answer.body.encode())
    for name, value in answer.headers:  # Set-Cookie lines stay separate
        response.headers.add(name, value)
    return response


def build_http_app(
    keyring: KeyRing,
    auth: AuthHandlers | None = None,
    *,
    max_body_bytes: int = 16384,
    metrics_registry: Metrics | None = None,
    oauth: OAuthHandlers | None = None,
    forward_auth: ForwardAuth | None = None,
) -> web.Application:
    """The app; request bodies over ``max_body_bytes`` are refused with 413."""
    app = web.Application(client_max_size=max_body_bytes)
    app[KEYRING] = keyring
    app.router.add_get(JWKS_PATH, jwks)
    if metrics_registry is not None:
        app[METRICS] = metrics_registry
        app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    if forward_auth is not None:
        app.router.add_get(VERIFY_PATH, forward_auth.verify)
    if auth is not None:
        app.add_routes(auth.routes())
    if oauth is not None:
        app.add_routes(oauth.routes())
    return app
