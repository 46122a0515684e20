"""The aiohttp adapter of the OAuth 2.0 authorization server (:mod:`extauthz.oauth.server`).

Routes (mounted by :mod:`extauthz.server.http_server`; Envoy routes ``/auth/*`` and
``/.well-known/*`` here without ext_authz): ``GET|POST /auth/oauth/authorize``,
``POST /auth/oauth/token``, ``POST /auth/oauth/revoke``, ``POST /auth/oauth/introspect``,
``GET /.well-known/oauth-authorization-server``.

Parameters come from the query of a ``GET`` and from the form body of a ``POST``, never
merged; a ``client_secret`` in a query string is refused (``invalid_request``), whatever else
the request carries. A store that cannot answer gives 503, never a 401 or another grant.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, urlencode

from aiohttp import web

from extauthz.check.minting import JwtMinter
from extauthz.errors import Denied, StoreUnavailable, TooManyRequests, Unauthenticated
from extauthz.login.csrf import SameSiteCheck, media_type
from extauthz.login.http import AuthHandlers, read_form
from extauthz.login.service import LOGIN_PATH
from extauthz.oauth import consent
from extauthz.oauth.issuer import TokenIssuer
from extauthz.oauth.metadata import INTROSPECT_PATH, METADATA_PATH, REVOKE_PATH, TOKEN_PATH
from extauthz.oauth.server import Answer, Incoming, JwtFor, OAuthServer
from extauthz.store.model import Session

FORM = "application/x-www-form-urlencoded"
_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


def _json(
    status: int, body: Mapping[str, Any], extra: Mapping[str, str] | None = None
) -> web.Response:
    return web.Response(
        status=status, text=json.dumps(dict(body)), content_type="application/json",
        headers={**_NO_STORE, **(extra or {})},
    )


def _oauth_error(status: int, error: str, description: str) -> web.Response:
    return _json(status, {"error": error, "error_description": description})


def _unavailable_json() -> web.Response:
    return _json(
        503, {"error": "temporarily_unavailable", "error_description": "try again shortly"},
        {"Retry-After": "5"},
    )


def _html(status: int, text: str, extra: Mapping[str, str] | None = None) -> web.Response:
    response = web.Response(status=status, text=text, content_type="text/html", charset="utf-8")
    response.headers.update(consent.HTML_HEADERS)
    response.headers.update(extra or {})
    return response


def _params(pairs: Any) -> list[tuple[str, str]]:
    return [(str(k), v) for k, v in pairs.items() if isinstance(v, str)]


class OAuthHandlers:
    """The OAuth routes over ``server``. ``auth`` is the login adapter: its request context
    (trusted proxies), its session resolver (the login session of the consent page).
    ``minter`` mints the introspection's ``application/jwt`` answer."""

    def __init__(
        self,
        server: OAuthServer,
        auth: AuthHandlers,
        minter: JwtMinter,
        *,
        metadata: Mapping[str, Any],
        same_site: SameSiteCheck,
        scope_descriptions: Mapping[str, str],
    ) -> None:
        self.server = server
        self.auth = auth
        self.minter = minter
        self.metadata = dict(metadata)
        self.same_site = same_site
        self.descriptions = dict(scope_descriptions)

    @property
    def issuer(self) -> TokenIssuer:
        """The token issuer: ``revoke_client_tokens(client_id)`` when a client is removed,
        ``revoke_grant(sub, client_id)``."""
        return self.server.issuer

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get(consent.AUTHORIZE_PATH, self.authorize),
            web.post(consent.AUTHORIZE_PATH, self.decide),
            web.post(TOKEN_PATH, self.token),
            web.post(REVOKE_PATH, self.revoke),
            web.post(INTROSPECT_PATH, self.introspect),
            web.get(METADATA_PATH, self.server_metadata),
        ]

    def _incoming(self, request: web.Request, params: list[tuple[str, str]]) -> Incoming:
        ctx = self.auth.context(request)
        accept = request.headers.get("Accept", "").lower()
        return Incoming(
            method=request.method,
            uri=f"{ctx.scheme}://{request.host}{request.path_qs}",
            headers=request.headers,
            params=params,
            wants_jwt=any(media_type(part) == "application/jwt" for part in accept.split(",")),
        )

    def _render(self, answer: Answer) -> web.Response:
        headers = {k: v for k, v in answer.headers if k.lower() != "content-type"}
        if isinstance(answer.body, JwtFor):
            return web.Response(
                status=answer.status, text=self.minter.mint(answer.body.session),
                content_type="application/jwt", headers={**headers, **_NO_STORE},
            )
        if isinstance(answer.body, dict):
            return web.Response(
                status=answer.status, text=json.dumps(answer.body),
                content_type="application/json", headers={**_NO_STORE, **headers},
            )
        return web.Response(status=answer.status, text=str(answer.body or ""), headers=headers)

    # -- token, revocation, introspection ------------------------------------------------

    async def _client_call(self, request: web.Request, endpoint: str | None) -> web.Response:
        if "client_secret" in request.query:
            return _oauth_error(
                400, "invalid_request", "a client secret is never accepted in a URL"
            )
        if media_type(request.content_type) != FORM:
            return _oauth_error(400, "invalid_request", f"send {FORM}")
        incoming = self._incoming(request, _params(await read_form(request)))
        try:
            if endpoint is None:
                answer = await self.server.call(self.server.token_answer, incoming)
            else:
                answer = await self.server.call(self.server.endpoint_answer, endpoint, incoming)
        except StoreUnavailable:
            return _unavailable_json()
        return self._render(answer)

    async def token(self, request: web.Request) -> web.Response:
        return await self._client_call(request, None)

    async def revoke(self, request: web.Request) -> web.Response:
        return await self._client_call(request, "revocation")

    async def introspect(self, request: web.Request) -> web.Response:
        return await self._client_call(request, "introspection")

    async def server_metadata(self, request: web.Request) -> web.Response:
        return web.json_response(self.metadata, headers={"Cache-Control": "public, max-age=300"})

    # -- authorization -------------------------------------------------------------------

    async def _login_session(self, request: web.Request) -> tuple[str, Session] | None:
        """The browser's login session (cookie only, kind ``session``), as ``(token,
        session)``; ``None`` when there is none. :raises StoreUnavailable, TooManyRequests:"""
        ctx = self.auth.context(request)
        headers = {k: v for k, v in ctx.headers.items() if k != "authorization"}
        resolver = self.auth.service.resolver
        try:
            found = await resolver.find(dataclasses.replace(ctx, headers=headers))
        except Unauthenticated:
            return None
        if found.session.kind != "session":
            return None
        return found.token, found.session

    def _to_login(self, params: list[tuple[str, str]]) -> web.Response:
        back = f"{consent.AUTHORIZE_PATH}?{urlencode(params)}"
        location = f"{LOGIN_PATH}?return_to={quote(back, safe='')}"
        return web.Response(status=303, headers={"Location": location, **_NO_STORE})

    def _answered(self, answer: Answer) -> web.Response:
        """An invalid authorization request: to the client when the redirect URI was
        validated (302), else a page for the user (400), never a redirect."""
        location = answer.header("Location")
        if answer.status == 302 and location:
            return web.Response(status=302, headers={"Location": location, **_NO_STORE})
        body = answer.body if isinstance(answer.body, dict) else {}
        message = str(body.get("error_description") or body.get("error") or "invalid request")
        return _html(400, consent.error_page(message))

    async def authorize(self, request: web.Request) -> web.Response:
        return await self._authorize(request, _params(request.query), None)

    async def decide(self, request: web.Request) -> web.Response:
        ctx = self.auth.context(request)
        violation = self.same_site.violation(ctx.scheme, ctx.host, ctx.headers)
        if violation is not None:
            return _html(403, consent.error_page(f"Refused: {violation}."))
        if media_type(request.content_type) != FORM:
            return _html(400, consent.error_page("The consent form was not sent as a form."))
        form = await read_form(request)
        decision = form.get("decision")
        return await self._authorize(
            request, [p for p in _params(form) if p[0] in consent.FORWARDED_PARAMS],
            (decision if isinstance(decision, str) else "", form.get("csrf_token")),
        )

    async def _authorize(
        self, request: web.Request, params: list[tuple[str, str]],
        decided: tuple[str, object] | None,
    ) -> web.Response:
        try:
            return await self._authorize_or_fail(request, params, decided)
        except StoreUnavailable:
            return _html(
                503, consent.error_page("Please try again shortly."), {"Retry-After": "5"}
            )
        except TooManyRequests as denial:
            return _html(429, consent.error_page(denial.detail),
                         {"Retry-After": str(denial.retry_after_seconds)})
        except Denied as denial:
            return _html(403, consent.error_page(denial.detail or "Refused."))

    async def _authorize_or_fail(
        self, request: web.Request, params: list[tuple[str, str]],
        decided: tuple[str, object] | None,
    ) -> web.Response:
        server = self.server
        grant = await server.call(server.consent_grant, self._incoming(request, params))
        if isinstance(grant, Answer):
            return self._answered(grant)
        login = await self._login_session(request)
        if login is None:
            return self._to_login(params)
        session_token, session = login
        client = grant.request.client.client
        scope = grant.request.scope or ""
        scopes = frozenset(scope.split())
        if decided is None:
            # RFC 6749 §10.2: a public client's identity is not proven; always ask
            if client.confidential and await server.issuer.approved(
                session.sub, client.client_id, scopes
            ):
                answer = await server.call(server.authorization_answer, grant, session.sub)
                return self._answered(answer)
            page = consent.consent_page(
                client_name=client.name, scopes=scope.split(), descriptions=self.descriptions,
                redirect_uri=grant.redirect_uri, params=dict(params),
                csrf=consent.csrf_token(session_token, client.client_id, scope),
                user=session.sub,
            )
            return _html(200, page, consent.consent_headers(grant.redirect_uri))
        decision, csrf = decided
        if not consent.csrf_ok(csrf, session_token, client.client_id, scope):
            return _html(403, consent.error_page("The form expired; please start again."))
        if decision not in ("allow", "deny"):
            return _html(400, consent.error_page("Choose Allow or Deny."))
        user = session.sub if decision == "allow" else None
        if user is not None:
            await server.issuer.remember(user, client.client_id, scopes)
        answer = await server.call(server.authorization_answer, grant, user)
        return self._answered(answer)
