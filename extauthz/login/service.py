"""The authentication service: where a browser or an API client gets (and ends) a session.

Routes (mounted on the HTTP app, :mod:`extauthz.server.http_server`; Envoy routes ``/auth/*`` here with
ext_authz disabled):

``GET  /auth/login``    the login form (HTML, no JavaScript); ``?return_to=/path``
``POST /auth/login``    form (``username``, ``password``, ``return_to``) or JSON
                        (``{"username", "password"}``). Success: a **new** session, its opaque
                        token in the session cookie (:mod:`extauthz.login.cookies`), and 303 to the
                        validated same-host ``return_to`` (forms) or 200 with the session
                        summary (JSON). Any token presented with the request is revoked first
                        (session fixation). Failure: 401, the same answer and the same cost
                        (one argon2 verify) for an unknown user and a wrong password.
``GET  /auth/logout``   a page with the logout buttons
``POST /auth/logout``   revoke the presented session (``everywhere=1`` in the query or the
                        form: every session of its user) **first**, then clear the cookie.
                        A revocation the store did not take is a 503 without ``Set-Cookie``.
``GET  /auth/session``  the caller's own session summary (JSON, or HTML for browsers); never
                        the token. 401 with ``WWW-Authenticate: Bearer`` without a session.

Both POSTs refuse cross-site requests (:mod:`extauthz.login.csrf`, 403). Login attempts are
counted per user name and per client address (:class:`LoginLimits`) **before** the password is
checked, with an atomic increment, so parallel attempts cannot all slip under a limit; over a
limit a login is answered 429 with ``Retry-After`` and no password is checked, the right one
included. Only failed attempts keep their count (see :meth:`LoginLimits.reserve`).

Token lookups (``/auth/session``, ``/auth/logout``, the session-fixation revocation at login)
count their failures in the same per-address :class:`~extauthz.check.throttle.LookupThrottle` as
``Check``; a blocked address gets 429 from ``/auth/session`` and ``/auth/logout`` without a
lookup.

A store that cannot answer (sessions, users or rate-limit counters) is a 503, never a 401.
Passwords, tokens and cookie values are never logged. A name typed into a login (a failed or
throttled attempt: it may be anyone's name, or a password typed into the wrong field) appears
only as its :func:`extauthz.tokens.log_id` hash; the subject of a session that was created or
ended (``sub``, a user name of ``[A-Za-z0-9._@-]``, the same value as the JWT ``sub``) is logged
as it is, because an audit log must say who signed in and out.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from aiohttp import web
from redis.exceptions import RedisError

from extauthz import tokens
from extauthz.check.context import RequestContext
from extauthz.check.credentials import BearerExtractor, CookieExtractor
from extauthz.check.denials import safe_return_to
from extauthz.check.throttle import LookupThrottle
from extauthz.errors import Denied, Reason, StoreUnavailable, Unauthenticated
from extauthz.login import pages as auth_pages
from extauthz.login.cookies import SessionCookie
from extauthz.login.csrf import SameSiteCheck, media_type
from extauthz.login.ratelimit import LOGIN_ADDR, LOGIN_USER, RateKey, RateLimiter
from extauthz.login.users import PasswordVerifier, UserStoreError
from extauthz.store.manager import SessionManager
from extauthz.store.model import Session

log = logging.getLogger("extauthz.auth")

LOGIN_PATH = "/auth/login"
LOGOUT_PATH = "/auth/logout"
SESSION_PATH = "/auth/session"
FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")
INVALID_LOGIN = "Invalid user name or password."
# errors of the stores behind a login: users (file or Redis), counters (Redis), sessions
_BACKEND_ERRORS = (StoreUnavailable, UserStoreError, RedisError, OSError)
# failed token lookups that count toward the ``check:addr`` throttle (as at ``Check``)
_LOOKUP_MISSES = (Reason.UNKNOWN_SESSION, Reason.MALFORMED_CREDENTIAL)


class _Unavailable(Exception):
    """A backend needed to answer did not; the answer is 503."""


@dataclass(frozen=True)
class LoginLimits:
    """Failed-login budgets: ``per_user`` (``login:user``) and ``per_address``
    (``login:addr``). An :class:`AuthService` without limits counts nothing."""

    per_user: RateLimiter
    per_address: RateLimiter

    def _keys(self, name: str, address: str) -> list[tuple[RateLimiter, RateKey]]:
        keys = [(self.per_user, RateKey(LOGIN_USER, name))]
        if address:
            keys.append((self.per_address, RateKey.for_address(LOGIN_ADDR, address)))
        return keys

    async def retry_after(self, name: str, address: str) -> int:
        """Seconds to wait when either budget is spent, else 0 (counts nothing; a login uses
        :meth:`reserve`). Backend errors propagate."""
        wait = 0
        for limiter, key in self._keys(name, address):
            verdict = await limiter.blocked(key)
            if verdict.blocked:
                wait = max(wait, verdict.retry_after_seconds)
        return wait

    async def reserve(self, name: str, address: str) -> int:
        """Count one attempt against both budgets *before* the password is checked; the
        seconds to wait when either budget was already spent (the attempt is refused), else 0.

        Each count is an atomic increment, so of N attempts in flight at once at most
        ``limit`` get through, whatever their timing. A refused attempt is not a guess: its
        count is taken back from the budget that still had room (the one over its limit keeps
        it, which changes nothing in a fixed window). After the password check the caller
        settles the attempt: a failure keeps both counts, :meth:`succeeded` or
        :meth:`release` take them back. Backend errors propagate (after taking back what was
        already counted).
        """
        taken: list[tuple[RateLimiter, RateKey]] = []
        wait = 0
        try:
            for limiter, key in self._keys(name, address):
                verdict = await limiter.hit(key)
                if verdict.blocked:
                    wait = max(wait, verdict.retry_after_seconds)
                else:
                    taken.append((limiter, key))
        except BaseException:
            await _refund_quietly(taken)
            raise
        if wait:
            await _refund_quietly(taken)
        return wait

    async def succeeded(self, name: str, address: str = "") -> None:
        """A reserved attempt with the right password: forget the user's failures, and take
        this attempt back from the address's budget (only this one: one known account must
        not buy an address more guesses at others)."""
        await self.per_user.reset(RateKey(LOGIN_USER, name))
        if address:
            await self.per_address.refund(RateKey.for_address(LOGIN_ADDR, address))

    async def release(self, name: str, address: str) -> None:
        """Take a reserved attempt back from both budgets (no answer about the password was
        given: a backend failed)."""
        for limiter, key in self._keys(name, address):
            await limiter.refund(key)


async def _refund_quietly(taken: Iterable[tuple[RateLimiter, RateKey]]) -> None:
    for limiter, key in taken:
        try:
            await limiter.refund(key)
        except Exception:
            log.warning("login: cannot take back a rate-limit count", exc_info=True)


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


def session_summary(session: Session) -> dict[str, Any]:
    """What a user may see of their own session: never the token."""
    return {
        "sub": session.sub,
        "sid": session.sid,
        "roles": list(session.roles),
        "scopes": list(session.scopes),
        "created_at": int(session.created_at),
        "expires_at": int(session.expires_at),
        "idle_timeout_seconds": session.idle_timeout,
    }


def _request_context(request: web.Request) -> RequestContext:
    headers: dict[str, str] = {}
    for name, value in request.headers.items():
        key = name.lower()
        headers[key] = f"{headers[key]},{value}" if key in headers else value
    return RequestContext(
        method=request.method,
        scheme=request.scheme,
        host=request.host,
        path=request.path,
        query=request.query_string,
        headers=headers,
    )


def _flag(value: object) -> bool:
    return str(value).strip().lower() in ("1", "true", "yes", "on")


class AuthService:
    """The ``/auth/*`` handlers. Every dependency is given; nothing here reads settings."""

    def __init__(
        self,
        sessions: SessionManager,
        verifier: PasswordVerifier,
        cookie: SessionCookie,
        *,
        realm: str,
        limits: LoginLimits | None = None,
        throttle: LookupThrottle | None = None,
        same_site: SameSiteCheck | None = None,
        trusted_proxies: Iterable[str] = ("127.0.0.1/32", "::1/128"),
        default_return_to: str = "/",
    ) -> None:
        self.sessions = sessions
        self.verifier = verifier
        self.cookie = cookie
        self.realm = realm
        self.limits = limits
        self.throttle = throttle
        self.same_site = same_site or SameSiteCheck()
        self.trusted_proxies = tuple(ipaddress.ip_network(p, strict=False) for p in trusted_proxies)
        self.default_return_to = default_return_to
        self._cookies = CookieExtractor(cookie.name)
        self._bearer = BearerExtractor()

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get(LOGIN_PATH, self.login_page),
            web.post(LOGIN_PATH, self.login),
            web.get(LOGOUT_PATH, self.logout_page),
            web.post(LOGOUT_PATH, self.logout),
            web.get(SESSION_PATH, self.session),
        ]

    # -- helpers ---------------------------------------------------------------------------

    def _return_to(self, candidate: object) -> str:
        target = safe_return_to(candidate if isinstance(candidate, str) else "")
        if target == "/" or target.startswith(("/auth/login", "/auth/logout")):
            return self.default_return_to
        return target

    def _presented_tokens(self, request: web.Request) -> list[str]:
        """Every token the request carries (session cookies and a bearer token)."""
        ctx = _request_context(request)
        found: list[str] = []
        for extractor in (self._cookies, self._bearer):
            try:
                found.extend(extractor.extract(ctx) or ())
            except Denied:
                continue
        return list(dict.fromkeys(found))

    def _lookup_blocked(self, address: str, presented: list[str]) -> int:
        """Seconds a request carrying ``presented`` tokens from ``address`` must wait before
        any of them is looked up (the ``check:addr`` throttle shared with ``Check``), else 0."""
        if self.throttle is None or not presented:
            return 0
        return self.throttle.retry_after(address)

    async def _count_misses(self, address: str, misses: int) -> int:
        """Count failed token lookups; the seconds to wait if the address is now blocked."""
        if self.throttle is None or not misses:
            return 0
        return await self.throttle.failed(address, misses)

    def _lookups_throttled(self, html: bool, wait: int) -> web.Response:
        log.warning("token lookup refused: too many failed lookups from this address")
        return self._error(
            html, 429, "rate_limited",
            "Too many failed token lookups from this address; please wait and try again.",
            {"Retry-After": str(wait)},
        )

    def _cross_site(self, request: web.Request) -> str | None:
        headers = {k.lower(): v for k, v in request.headers.items()}
        return self.same_site.violation(self._scheme(request), request.host, headers)

    def _scheme(self, request: web.Request) -> str:
        """The scheme the client used: Envoy's ``X-Forwarded-Proto`` from a trusted proxy."""
        proto = request.headers.get("X-Forwarded-Proto", "").strip().lower()
        if proto in ("http", "https") and request.remote:
            try:
                if any(ipaddress.ip_address(request.remote) in n for n in self.trusted_proxies):
                    return proto
            except ValueError:
                pass
        return request.scheme

    @staticmethod
    def _is_form(request: web.Request) -> bool:
        return media_type(request.content_type) in FORM_TYPES

    @staticmethod
    def _wants_html(request: web.Request) -> bool:
        accept = request.headers.get("Accept", "").lower()
        return "text/html" in accept and "application/json" not in accept

    def _html(self, status: int, text: str, headers: Mapping[str, str] | None = None) -> web.Response:
        response = web.Response(
            status=status, text=text, content_type="text/html", charset="utf-8"
        )
        response.headers.update(auth_pages.HTML_HEADERS)
        response.headers.update(headers or {})
        return response

    @staticmethod
    def _json(status: int, body: Mapping[str, Any], headers: Mapping[str, str] | None = None) -> web.Response:
        response = web.json_response(dict(body), status=status)
        response.headers["Cache-Control"] = "no-store"
        response.headers.update(headers or {})
        return response

    def _error(
        self, html: bool, status: int, error: str, message: str, headers: Mapping[str, str] | None = None
    ) -> web.Response:
        if html:
            title = {403: "Forbidden", 429: "Too many attempts", 503: "Try again later"}.get(
                status, "Error"
            )
            return self._html(status, auth_pages.message_page(title, message), headers)
        return self._json(status, {"error": error, "error_description": message}, headers)

    def _challenge(self, error: str | None) -> dict[str, str]:
        params = f'realm="{self.realm}"' + (f', error="{error}"' if error else "")
        return {"WWW-Authenticate": f"Bearer {params}"}

    # -- GET /auth/login -------------------------------------------------------------------

    async def login_page(self, request: web.Request) -> web.Response:
        notice = "You are signed out." if _flag(request.query.get("logged_out", "")) else ""
        page = auth_pages.login_page(
            action=LOGIN_PATH,
            return_to=self._return_to(request.query.get("return_to", "")),
            notice=notice,
        )
        return self._html(200, page)

    # -- POST /auth/login ------------------------------------------------------------------

    async def _read_login(self, request: web.Request) -> tuple[str, str, str]:
        """``(username, password, return_to)``. :raises web.HTTPException: 400 / 415."""
        kind = media_type(request.content_type)
        fields: Mapping[str, Any]
        if kind in FORM_TYPES:
            fields = await request.post()
        elif kind == "application/json" or kind.endswith("+json"):
            try:
                fields = json.loads(await request.text())
            except (ValueError, UnicodeDecodeError):
                raise self._bad_request("the body is not JSON") from None
            if not isinstance(fields, dict):
                raise self._bad_request("the body must be a JSON object")
        else:
            raise web.HTTPUnsupportedMediaType(
                text=json.dumps({"error": "invalid_request",
                                 "error_description": "send a form or JSON"}),
                content_type="application/json",
            )
        username, password = fields.get("username"), fields.get("password")
        if not isinstance(username, str) or not isinstance(password, str):
            raise self._bad_request("username and password are required strings")
        return_to = fields.get("return_to", "")
        return username, password, return_to if isinstance(return_to, str) else ""

    @staticmethod
    def _bad_request(message: str) -> web.HTTPBadRequest:
        return web.HTTPBadRequest(
            text=json.dumps({"error": "invalid_request", "error_description": message}),
            content_type="application/json",
            headers={"Cache-Control": "no-store"},
        )

    async def login(self, request: web.Request) -> web.Response:
        html = self._is_form(request)
        violation = self._cross_site(request)
        if violation is not None:
            log.warning("login refused: cross-site request (%s)", violation)
            return self._error(html, 403, "cross_site_request", "Cross-site login refused.")
        username, password, raw_return_to = await self._read_login(request)
        return_to = self._return_to(raw_return_to)
        address = client_address(request, self.trusted_proxies)
        try:
            return await self._login(request, html, username, password, return_to, address)
        except _Unavailable:
            return self._error(
                html, 503, "temporarily_unavailable",
                "Signing in is not possible right now; please try again shortly.",
                {"Retry-After": "5"},
            )

    async def _login(
        self, request: web.Request, html: bool, username: str, password: str,
        return_to: str, address: str,
    ) -> web.Response:
        user_id = tokens.log_id(username)
        try:
            # reserved before the verify: concurrent attempts cannot all pass a check
            wait = await self.limits.reserve(username, address) if self.limits else 0
        except _BACKEND_ERRORS:
            log.error("login: rate-limit counters unavailable", exc_info=True)
            raise _Unavailable from None
        if wait:
            log.warning("login throttled user_id=%s addr=%s retry_after=%d", user_id, address, wait)
            return self._error(
                html, 429, "rate_limited",
                "Too many failed sign-in attempts; please wait and try again.",
                {"Retry-After": str(wait)},
            )
        try:
            user = await self.verifier.verify(username, password)
        except _BACKEND_ERRORS:
            log.error("login: user store unavailable", exc_info=True)
            await self._release(username, address)  # no password was checked
            raise _Unavailable from None
        if user is None:
            # the reservation stays: this was a failed attempt
            log.info("login failed user_id=%s addr=%s", user_id, address)
            return self._login_failed(html, username, return_to)
        try:
            # session fixation: nothing presented before the login survives it. The answer
            # does not depend on these revocations, but a miss is still a failed lookup.
            misses = 0
            for token in self._presented_tokens(request):
                if await self.sessions.revoke_token(token) is None:
                    misses += 1
            token, session = await self.sessions.create(
                user.name, scopes=user.scopes, roles=user.roles
            )
        except StoreUnavailable:
            log.error("login: session store unavailable", exc_info=True)
            await self._release(username, address)  # the password was right: not a failure
            raise _Unavailable from None
        await self._count_misses(address, misses)
        if self.limits:
            try:
                await self.limits.succeeded(username, address)
            except _BACKEND_ERRORS:
                log.warning("login: cannot reset the user's failure count", exc_info=True)
        log.info("login sub=%s sid=%s addr=%s", session.sub, session.sid, address)
        set_cookie = self.cookie.set(token, session.expires_at - time.time())
        if html:
            response = web.Response(status=303, headers={"Location": return_to})
            response.headers["Cache-Control"] = "no-store"
        else:
            response = self._json(200, session_summary(session))
        response.headers["Set-Cookie"] = set_cookie
        return response

    async def _release(self, username: str, address: str) -> None:
        if self.limits is None:
            return
        try:
            await self.limits.release(username, address)
        except _BACKEND_ERRORS:
            log.warning("login: cannot take back a rate-limit count", exc_info=True)

    def _login_failed(self, html: bool, username: str, return_to: str) -> web.Response:
        challenge = self._challenge(None)
        if html:
            page = auth_pages.login_page(
                action=LOGIN_PATH, return_to=return_to, username=username, error=INVALID_LOGIN
            )
            return self._html(401, page, challenge)
        return self._json(
            401,
            {"error": "invalid_credentials", "error_description": INVALID_LOGIN},
            challenge,
        )

    # -- /auth/logout ----------------------------------------------------------------------

    async def logout_page(self, request: web.Request) -> web.Response:
        return self._html(200, auth_pages.logout_page(LOGOUT_PATH))

    async def logout(self, request: web.Request) -> web.Response:
        html = self._is_form(request) or self._wants_html(request)
        violation = self._cross_site(request)
        if violation is not None:
            log.warning("logout refused: cross-site request (%s)", violation)
            return self._error(html, 403, "cross_site_request", "Cross-site logout refused.")
        everywhere = _flag(request.query.get("everywhere", ""))
        if self._is_form(request):
            everywhere = everywhere or _flag((await request.post()).get("everywhere", ""))
        presented = self._presented_tokens(request)
        address = client_address(request, self.trusted_proxies)
        wait = self._lookup_blocked(address, presented)
        if wait:
            return self._lookups_throttled(html, wait)
        missed: set[str] = set()
        try:
            revoked = await self._revoke(presented, everywhere, missed)
        except StoreUnavailable:
            # the session still works: do not clear the cookie, do not claim success
            log.error("logout failed: the revocation was not stored", exc_info=True)
            return self._error(
                False, 503, "temporarily_unavailable",
                "The session could not be ended; it is still active. Please try again.",
                {"Retry-After": "5"},
            )
        finally:
            wait = await self._count_misses(address, len(missed))
        if wait and not revoked:
            # this request used up the budget and ended nothing: it learns nothing (as at
            # Check). A request that did end a session is told so, truthfully.
            return self._lookups_throttled(html, wait)
        if html:
            response = web.Response(
                status=303, headers={"Location": f"{LOGIN_PATH}?logged_out=1"}
            )
            response.headers["Cache-Control"] = "no-store"
        else:
            response = self._json(200, {"logged_out": True, "revoked": revoked})
        response.headers["Set-Cookie"] = self.cookie.clear()
        return response

    async def _revoke(self, presented: list[str], everywhere: bool, missed: set[str]) -> int:
        """Revoke the presented sessions (or every session of their users); how many.
        Tokens that matched no session are added to ``missed``.

        :raises StoreUnavailable: a revocation was not stored.
        """
        revoked = 0
        if everywhere:
            subjects: dict[str, None] = {}
            for token in presented:
                try:
                    subjects[(await self.sessions.lookup(token)).sub] = None
                except Unauthenticated as failure:
                    if failure.reason in _LOOKUP_MISSES:
                        missed.add(token)
                    continue
            for sub in subjects:
                count = await self.sessions.store.revoke_subject(sub)
                log.info("logout everywhere sub=%s revoked=%d", sub, count)
                revoked += count
        for token in presented:
            gone = await self.sessions.revoke_token(token)
            if gone is not None:
                log.info("logout sub=%s sid=%s", gone.sub, gone.sid)
                revoked += 1
            elif not everywhere:
                missed.add(token)  # (with ``everywhere`` the lookup above already counted)
        return revoked

    # -- GET /auth/session -----------------------------------------------------------------

    async def session(self, request: web.Request) -> web.Response:
        html = self._wants_html(request)
        presented = self._presented_tokens(request)
        address = client_address(request, self.trusted_proxies)
        wait = self._lookup_blocked(address, presented)
        if wait:
            return self._lookups_throttled(html, wait)
        found: Session | None = None
        misses = 0
        try:
            for token in presented:
                try:
                    found = await self.sessions.lookup(token)
                    break
                except Unauthenticated as failure:
                    misses += failure.reason in _LOOKUP_MISSES
                    continue
        except StoreUnavailable:
            return self._error(html, 503, "temporarily_unavailable", "Please try again shortly.",
                               {"Retry-After": "5"})
        finally:
            wait = await self._count_misses(address, misses)
        if wait:  # this request used up the budget: it learns nothing more (as at Check)
            return self._lookups_throttled(html, wait)
        if found is None:
            if html:
                target = f"{LOGIN_PATH}?return_to={quote(SESSION_PATH, safe='')}"
                return web.Response(status=303, headers={"Location": target,
                                                         "Cache-Control": "no-store"})
            return self._json(
                401,
                {"error": "invalid_token" if presented else "unauthenticated",
                 "error_description": "no valid session"},
                self._challenge("invalid_token" if presented else None),
            )
        summary = session_summary(found)
        if html:
            return self._html(200, auth_pages.session_page(summary, logout_action=LOGOUT_PATH))
        return self._json(200, summary)
