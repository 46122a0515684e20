"""The aiohttp adapter of the authentication service: parses requests for
:class:`~extauthz.login.service.LoginService` and renders what it returns or raises, HTML for
forms and browsers, JSON for other clients. The routes ``/auth/login``, ``/auth/logout``,
``/auth/session`` and ``/auth/session/end`` (mounted by :mod:`extauthz.server.http_server`;
Envoy routes ``/auth/*`` here with ext_authz disabled) and their answers:
docs/authentication.md, 'Endpoints'.
"""

from __future__ import annotations

import ipaddress
import json
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any
from urllib.parse import quote

from aiohttp import web

from extauthz.check.context import RequestContext, join_headers
from extauthz.check.denials import bearer_challenge
from extauthz.errors import Denied, Reason, StoreUnavailable, TooManyRequests, Unauthenticated
from extauthz.login import pages
from extauthz.login.account import (
    SESSION_END_PATH,
    AccountService,
    GrantRevoker,
    NoSuchSession,
    NotALogin,
    overview_summary,
)
from extauthz.login.csrf import media_type
from extauthz.login.service import (
    INVALID_LOGIN,
    LOGIN_PATH,
    LOGOUT_PATH,
    SESSION_PATH,
    LoginFailed,
    LoginForm,
    LoginService,
    SecondStepNeeded,
    session_summary,
)

FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")
_Networks = tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]
_TITLES = {403: "Forbidden", 404: "Not found", 429: "Too many attempts", 503: "Try again later"}


def client_address(
    request: web.Request, trusted_proxies: Iterable[ipaddress.IPv4Network | ipaddress.IPv6Network]
) -> str:
    """The client's address: the peer's, or, when the peer is a trusted proxy (Envoy with
    ``use_remote_address: true``, which appends the address it saw), the right-most
    ``X-Forwarded-For`` entry. Entries further left are the client's own claims and are
    never believed."""
    peer = request.remote or ""
    try:
        peer_ip = ipaddress.ip_address(peer)
    except ValueError:
        return peer
    if not any(peer_ip in net for net in trusted_proxies):
        return peer
    forwarded = request.headers.getall("X-Forwarded-For", [])
    hops = [h.strip() for h in ",".join(forwarded).split(",") if h.strip()]
    if not hops:
        return peer
    try:
        return str(ipaddress.ip_address(hops[-1]))
    except ValueError:
        return peer


def _client_scheme(request: web.Request, trusted_proxies: _Networks) -> str:
    """The scheme the client used: Envoy's ``X-Forwarded-Proto`` from a trusted proxy."""
    proto = request.headers.get("X-Forwarded-Proto", "").strip().lower()
    if proto in ("http", "https") and request.remote:
        try:
            if any(ipaddress.ip_address(request.remote) in n for n in trusted_proxies):
                return proto
        except ValueError:
            pass
    return request.scheme


def _flag(value: object) -> bool:
    return str(value).strip().lower() in ("1", "true", "yes", "on")


def _is_form(request: web.Request) -> bool:
    return media_type(request.content_type) in FORM_TYPES


def _wants_html(request: web.Request) -> bool:
    accept = request.headers.get("Accept", "").lower()
    return "text/html" in accept and "application/json" not in accept


def _bad_request(message: str) -> web.HTTPBadRequest:
    return web.HTTPBadRequest(
        text=json.dumps({"error": "invalid_request", "error_description": message}),
        content_type="application/json",
        headers={"Cache-Control": "no-store"},
    )


async def read_form(request: web.Request) -> Mapping[str, Any]:
    """The fields of a form body (``request.post()``).

    :raises web.HTTPException: 400 (an OAuth-shaped ``invalid_request``) for a body that is
        not UTF-8, which aiohttp raises as ``UnicodeDecodeError``; 413 over the size limit.
    """
    try:
        return await request.post()
    except (UnicodeDecodeError, ValueError):
        raise _bad_request("the form is not UTF-8 form data") from None


async def _read_fields(request: web.Request) -> Mapping[str, Any]:
    """A form or a JSON object's fields. :raises web.HTTPException: 400 / 413 / 415."""
    kind = media_type(request.content_type)
    if kind in FORM_TYPES:
        return await read_form(request)
    if kind == "application/json" or kind.endswith("+json"):
        try:
            fields = json.loads(await request.text())
        except (ValueError, UnicodeDecodeError, RecursionError):  # nesting past the stack
            raise _bad_request("the body is not JSON") from None
        if not isinstance(fields, dict):
            raise _bad_request("the body must be a JSON object")
        return fields
    raise web.HTTPUnsupportedMediaType(
        text=json.dumps({"error": "invalid_request", "error_description": "send a form or JSON"}),
        content_type="application/json",
    )


async def read_login(request: web.Request) -> LoginForm:
    """The login form or JSON body. :raises web.HTTPException: 400 / 413 / 415."""
    fields = await _read_fields(request)
    username, password = fields.get("username"), fields.get("password")
    if not isinstance(username, str) or not isinstance(password, str):
        raise _bad_request("username and password are required strings")
    return_to = fields.get("return_to", "")
    return LoginForm(username, password, return_to if isinstance(return_to, str) else "")


async def read_sid(request: web.Request) -> str:
    """The ``sid`` of ``POST /auth/session/end`` (form or JSON).

    :raises web.HTTPException: 400 / 413 / 415."""
    sid = (await _read_fields(request)).get("sid")
    if not isinstance(sid, str) or not 0 < len(sid) <= 128:
        raise _bad_request("sid is a required string")
    return sid


def _html(status: int, text: str, headers: Mapping[str, str] | None = None) -> web.Response:
    response = web.Response(status=status, text=text, content_type="text/html", charset="utf-8")
    response.headers.update(pages.HTML_HEADERS)
    response.headers.update(headers or {})
    return response


def _json(
    status: int, body: Mapping[str, Any], headers: Mapping[str, str] | None = None
) -> web.Response:
    response = web.json_response(dict(body), status=status)
    response.headers["Cache-Control"] = "no-store"
    response.headers.update(headers or {})
    return response


def _redirect(location: str) -> web.Response:
    """303 See Other (RFC 9110 §15.4.4): the browser follows with a GET."""
    return web.Response(status=303, headers={"Location": location, "Cache-Control": "no-store"})


def _add_cookies(response: web.Response, set_cookies: Iterable[str]) -> None:
    """One ``Set-Cookie`` header per value, in order (RFC 6265 §3: never folded)."""
    for value in set_cookies:
        response.headers.add("Set-Cookie", value)


def _error(
    html: bool, status: int, error: str, message: str, headers: Mapping[str, str] | None = None
) -> web.Response:
    if html:
        return _html(status, pages.message_page(_TITLES.get(status, "Error"), message), headers)
    return _json(status, {"error": error, "error_description": message}, headers)


def _unavailable(html: bool, message: str) -> web.Response:
    return _error(html, 503, "temporarily_unavailable", message, {"Retry-After": "5"})


def _refused(html: bool, denial: Denied) -> web.Response:
    """429 with ``Retry-After`` for a throttled request; 403 for any other refusal (a
    cross-site request: ``cross_site_request``)."""
    if isinstance(denial, TooManyRequests):
        retry = {"Retry-After": str(denial.retry_after_seconds)}
        return _error(html, 429, "rate_limited", denial.detail, retry)
    return _error(html, 403, str(denial.reason), denial.detail)


class AuthHandlers:
    """The ``/auth/*`` handlers over ``service``. ``realm`` goes into ``WWW-Authenticate``;
    ``trusted_proxies`` (CIDR strings) may set ``X-Forwarded-For`` and ``X-Forwarded-Proto``;
    ``clock`` (Unix seconds) is the session manager's, to list only live sessions;
    ``grants`` ends an application's whole grant when the user ends its access token
    (:class:`~extauthz.login.account.AccountService`)."""

    def __init__(
        self,
        service: LoginService,
        *,
        realm: str,
        trusted_proxies: Iterable[str] = ("127.0.0.1/32", "::1/128"),
        clock: Callable[[], float] = time.time,
        grants: GrantRevoker | None = None,
    ) -> None:
        self.service = service
        self.account = AccountService(service, clock=clock, grants=grants)
        self.realm = realm
        self.trusted_proxies: _Networks = tuple(
            ipaddress.ip_network(p, strict=False) for p in trusted_proxies
        )
        self._extra_routes: list[web.RouteDef] = []
        self.passkey_sign_in = ""  # the passkey sign-in page, when passkeys are on

    def mount(self, routes: Iterable[web.RouteDef]) -> None:
        """Serve ``routes`` beside these (the second-factor pages)."""
        self._extra_routes.extend(routes)

    def routes(self) -> list[web.RouteDef]:
        return [
            *self._extra_routes,
            web.get(LOGIN_PATH, self.login_page),
            web.post(LOGIN_PATH, self.login),
            web.get(LOGOUT_PATH, self.logout_page),
            web.post(LOGOUT_PATH, self.logout),
            web.get(SESSION_PATH, self.session),
            web.post(SESSION_END_PATH, self.end_session),
        ]

    def context(self, request: web.Request) -> RequestContext:
        """The request in the pipeline's types: lower-case header names (repeated headers
        joined by :func:`~extauthz.check.context.join_headers`), the client's scheme and
        address."""
        headers = join_headers(request.headers.items())
        return RequestContext(
            method=request.method,
            scheme=_client_scheme(request, self.trusted_proxies),
            host=request.host,
            path=request.path,
            query=request.query_string,
            headers=headers,
            peer_address=client_address(request, self.trusted_proxies),
        )

    def _challenge(self, error: str | None) -> dict[str, str]:
        return {"WWW-Authenticate": bearer_challenge(self.realm, error)}

    # -- /auth/login -----------------------------------------------------------------------

    async def login_page(self, request: web.Request) -> web.Response:
        notice = "You are signed out." if _flag(request.query.get("logged_out", "")) else ""
        return_to = self.service.return_to(request.query.get("return_to", ""))
        passkey = self.passkey_sign_in
        page = pages.login_page(
            action=LOGIN_PATH, return_to=return_to, notice=notice,
            passkey_href=f"{passkey}?return_to={quote(return_to, safe='')}" if passkey else "",
        )
        return _html(200, page)

    async def login(self, request: web.Request) -> web.Response:
        html = _is_form(request)
        try:
            outcome = await self.service.login(self.context(request), lambda: read_login(request))
        except StoreUnavailable:
            return _unavailable(
                html, "Signing in is not possible right now; please try again shortly."
            )
        except Denied as denial:
            return _refused(html, denial)
        if isinstance(outcome, LoginFailed):
            return self._login_failed(html, outcome)
        if isinstance(outcome, SecondStepNeeded):
            # no session yet: the pending login's own cookie, and where its step is
            body = {"second_step": outcome.purpose, "location": outcome.location}
            step = _redirect(outcome.location) if html else _json(200, body)
            _add_cookies(step, outcome.set_cookies)
            return step
        response = _redirect(outcome.return_to) if html else _json(
            200, session_summary(outcome.session)
        )
        _add_cookies(response, outcome.set_cookies)
        return response

    def _login_failed(self, html: bool, failed: LoginFailed) -> web.Response:
        challenge = self._challenge(None)
        if html:
            page = pages.login_page(
                action=LOGIN_PATH, return_to=failed.return_to, username=failed.username,
                error=INVALID_LOGIN,
            )
            return _html(401, page, challenge)
        body = {"error": "invalid_credentials", "error_description": INVALID_LOGIN}
        return _json(401, body, challenge)

    # -- /auth/logout ----------------------------------------------------------------------

    async def logout_page(self, request: web.Request) -> web.Response:
        return _html(200, pages.logout_page(LOGOUT_PATH))

    async def logout(self, request: web.Request) -> web.Response:
        html = _is_form(request) or _wants_html(request)

        async def everywhere() -> bool:
            flag = _flag(request.query.get("everywhere", ""))
            if _is_form(request):
                flag = flag or _flag((await read_form(request)).get("everywhere", ""))
            return flag

        try:
            outcome = await self.service.logout(self.context(request), everywhere)
        except StoreUnavailable:
            # the session still works: no Set-Cookie, no claim of success
            return _unavailable(
                False, "The session could not be ended; it is still active. Please try again."
            )
        except Denied as denial:
            return _refused(html, denial)
        if html:
            response = _redirect(f"{LOGIN_PATH}?logged_out=1")
        else:
            response = _json(200, {"logged_out": True, "revoked": outcome.revoked})
        _add_cookies(response, outcome.set_cookies)
        return response

    # -- /auth/session ---------------------------------------------------------------------

    def _unauthenticated(self, html: bool, denial: Unauthenticated) -> web.Response:
        """A browser goes to the login form (back to the session page after it); any other
        client gets 401 with ``WWW-Authenticate`` (RFC 6750 §3)."""
        if html:
            return _redirect(f"{LOGIN_PATH}?return_to={quote(SESSION_PATH, safe='')}")
        error = None if denial.reason is Reason.NO_CREDENTIAL else "invalid_token"
        body = {"error": error or "unauthenticated", "error_description": "no valid session"}
        return _json(401, body, self._challenge(error))

    async def session(self, request: web.Request) -> web.Response:
        html = _wants_html(request)
        try:
            overview = await self.account.overview(self.context(request))
        except StoreUnavailable:
            return _unavailable(html, "Please try again shortly.")
        except Unauthenticated as denial:
            return self._unauthenticated(html, denial)
        except Denied as denial:
            return _refused(html, denial)
        summary = overview_summary(overview)
        if html:
            page = pages.session_page(
                summary, logout_action=LOGOUT_PATH, end_action=SESSION_END_PATH
            )
            return _html(200, page)
        return _json(200, summary)

    async def end_session(self, request: web.Request) -> web.Response:
        """``POST /auth/session/end``: end one of the caller's sessions by ``sid``."""
        html = _is_form(request) or _wants_html(request)
        try:
            ended = await self.account.end(self.context(request), lambda: read_sid(request))
        except StoreUnavailable:
            return _unavailable(
                html, "The session could not be ended; it may still be active. Please try again."
            )
        except Unauthenticated as denial:
            return self._unauthenticated(html, denial)
        except Denied as denial:
            return _refused(html, denial)
        except NotALogin as refused:
            return _error(html, 403, "credential_kind_refused", str(refused))
        except NoSuchSession as missing:
            return _error(html, 404, "not_found", str(missing))
        if html:
            response = _redirect(f"{LOGIN_PATH}?logged_out=1" if ended.current else SESSION_PATH)
        else:
            body = {"ended": ended.sid, "kind": ended.kind, "logged_out": ended.current}
            response = _json(200, body)
        _add_cookies(response, ended.set_cookies)
        return response
