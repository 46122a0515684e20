"""The family of denial responses, chosen by the kind of client and the reason.

* API clients: 401 with an RFC 6750 §3 ``WWW-Authenticate: Bearer`` challenge and a small
  JSON body ``{"error", "error_description", "reason"}``; 403 ``insufficient_scope``; 400
  ``invalid_request``; 403 ``cross_site_request`` and ``credential_kind_refused`` (no
  challenge: a valid credential of a kind the route refuses; the JSON ``error`` is the reason);
  429 with ``Retry-After`` when throttled.
* Browser navigations: 302 to the login page with a ``return_to`` that is always a path on
  the same host.
* Step-up (``insufficient_user_authentication``, RFC 9470 §3): browser navigations go to the
  step-up page (``step_up_url``, same ``return_to`` rules); API clients get 401 with
  ``WWW-Authenticate: Bearer error="insufficient_user_authentication"`` and the route's
  ``acr_values`` and ``max_age``.
* A denial because the session cookie names no live session (unknown, revoked, expired,
  malformed, or a bearer-only token: an application's or an API key) also clears it, every
  variant (``Max-Age=0``, built by :class:`~extauthz.login.cookies.SessionCookie`, as at
  logout); an ambiguous one is kept.
  The login page itself is never redirected to itself, so a cookie that cannot be cleared
  cannot cause a loop.
"""

from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import dataclass
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

from extauthz import tokens
from extauthz.check.context import RequestContext
from extauthz.check.decisions import Deny
from extauthz.check.policy import Policy
from extauthz.errors import (
    BadRequest,
    Denied,
    Forbidden,
    InsufficientAuthentication,
    Reason,
    TooManyRequests,
)
from extauthz.login.cookies import SessionCookie

_RFC6750_ERROR = {
    Reason.NO_CREDENTIAL: None,  # §3.1: no error code when no credential was presented
    Reason.MALFORMED_REQUEST: "invalid_request",
    Reason.INSUFFICIENT_SCOPE: "insufficient_scope",
    Reason.INSUFFICIENT_ROLE: "insufficient_scope",
}


def _is_quotable(value: str) -> bool:
    """RFC 6750 §3: ``error_description`` and ``scope`` values use only %x20-21 / %x23-5B /
    %x5D-7E (printable ASCII without ``"`` and ``\\``); anything else would break the
    challenge or the header (a scope comes from the route's ``context_extensions``)."""
    return all(0x20 <= ord(c) <= 0x7E and c not in '"\\' for c in value)


_CLEARS_COOKIE = frozenset(
    {
        Reason.UNKNOWN_SESSION,
        Reason.REVOKED_SESSION,
        Reason.SESSION_EXPIRED,
        Reason.MALFORMED_CREDENTIAL,
        Reason.BEARER_ONLY_CREDENTIAL,
    }
)


# Unicode categories refused in a return_to: controls, format controls, surrogates,
# separators (white space that str.isspace() does not already cover)
_SPACE_OR_CONTROL = frozenset({"Cc", "Cf", "Cs", "Zs", "Zl", "Zp"})
# a JWS in compact form: "eyJ" (a JSON header) and base64url up to a dot, base64url, a dot.
# Searched run by run (a maximal run of base64url, a dot, the next run, a dot) and tried only
# where a run starts: searched from every "eyJ" instead, a long run without a dot was read
# again from each of its "eyJ"s (seconds for one 60 KiB query).
_JWS_SEGMENTS = re.compile(r"(?<![A-Za-z0-9_-])([A-Za-z0-9_-]+)\.(?=[A-Za-z0-9_-]+\.)")


def without_credentials(path: str, query: str) -> str:
    """``path?query`` without query parameters that carry a credential: ``access_token``
    (RFC 6750 §2.3, never accepted here) or any value shaped like an access token or a JWT.
    A login redirect must not copy a credential into ``Location``, browser history and the
    login form."""
    if not query:
        return path
    pairs = parse_qsl(query, keep_blank_values=True)
    kept = [
        (name, value)
        for name, value in pairs
        if name.lower() != "access_token"
        and not tokens.has_token_shape(value, tokens.PREFIXES)
        and not _has_jws(value)
    ]
    if len(kept) == len(pairs):
        return f"{path}?{query}"
    return f"{path}?{urlencode(kept)}" if kept else path


def _has_jws(value: str) -> bool:
    """Whether ``value`` contains ``eyJ…``, ``.…``, ``.`` in base64url (a compact JWS), in
    time linear in its length."""
    return any("eyJ" in run.group(1) for run in _JWS_SEGMENTS.finditer(value))


def _is_space_or_control(c: str) -> bool:
    """White space (ASCII and Unicode, line separators included) and control characters
    (C0, DEL, C1, format controls such as bidi overrides, lone surrogates)."""
    return c.isspace() or unicodedata.category(c) in _SPACE_OR_CONTROL


def safe_return_to(path_and_query: str) -> str:
    """A same-host relative reference for ``return_to``: a path beginning with a single
    ``/``; anything else (``//host``, backslashes, schemes, and any white space or control
    character, ASCII or not) becomes ``/``, the caller's fallback.

    The answer is always printable ASCII without spaces, ready for a ``Location`` header:
    every other non-ASCII character is percent-encoded as UTF-8 (RFC 3986 §2.1;
    ``/café`` → ``/caf%C3%A9``), so no raw byte above 0x7E reaches a header or a browser's
    URL parser.
    """
    candidate = path_and_query or "/"
    if (
        not candidate.startswith("/")
        or candidate.startswith("//")
        or "\\" in candidate
        or any(_is_space_or_control(c) for c in candidate)
        or urlsplit(candidate).netloc
    ):
        return "/"
    # "%" and every ASCII character are left as they are: only non-ASCII is encoded, so
    # the checks above (all about ASCII) still hold for the result
    return "".join(c if c.isascii() else quote(c, safe="") for c in candidate)


def bearer_challenge(
    realm: str, error: str | None = None, description: str = "", scope: str = ""
) -> str:
    """A ``WWW-Authenticate`` value (RFC 6750 §3): ``Bearer realm="…"``, then ``error`` and,
    with an error, ``error_description``; then ``scope``. A description or scope that cannot
    be quoted is left out."""
    params = [f'realm="{realm}"']
    if error is not None:
        params.append(f'error="{error}"')
        if description and _is_quotable(description):
            params.append(f'error_description="{description}"')
    if scope and _is_quotable(scope):
        params.append(f'scope="{scope}"')
    return "Bearer " + ", ".join(params)


@dataclass(frozen=True)
class DenialRenderer:
    """Renders denials for the realm ``realm``; browsers go to ``login_url``; ``cookie`` is
    the session cookie (its clearing ``Set-Cookie``)."""

    realm: str
    login_url: str
    cookie: SessionCookie
    step_up_url: str = "/auth/mfa/step-up"

    def _is_login_page(self, ctx: RequestContext) -> bool:
        return urlsplit(self.login_url).path == ctx.path

    @staticmethod
    def _is_navigation(ctx: RequestContext, policy: Policy) -> bool:
        if policy.client == "api" or ctx.method not in ("GET", "HEAD"):
            return False
        if policy.client == "browser":
            return True
        return "text/html" in (ctx.header("accept") or "").lower()

    def render(
        self,
        ctx: RequestContext,
        policy: Policy,
        denial: Denied,
        *,
        saw_cookie: bool,
        metadata: dict[str, str],
    ) -> Deny:
        headers: list[tuple[str, str]] = [("cache-control", "no-store")]
        # only a cookie that names no live session is forgotten. An ambiguous one (several
        # session cookies of different users, too many copies, a bearer that disagrees) is
        # kept: a sibling subdomain that tosses in a cookie of its own must not be able to
        # log the user out, and a throttled or refused request says nothing about the cookie.
        if saw_cookie and denial.reason in _CLEARS_COOKIE:
            headers.extend(("set-cookie", value) for value in self.cookie.clearing())
        if isinstance(denial, BadRequest):
            return self._challenge(400, "invalid_request", denial, headers, metadata)
        if isinstance(denial, InsufficientAuthentication):
            return self._step_up(ctx, policy, denial, headers, metadata)
        if denial.reason in (
            Reason.CROSS_SITE_REQUEST, Reason.CREDENTIAL_KIND_REFUSED, Reason.ROUTE_MISCONFIGURED
        ):
            return self._json(403, str(denial.reason), denial, headers, metadata)
        if isinstance(denial, Forbidden):
            return self._challenge(403, "insufficient_scope", denial, headers, metadata)
        if denial.reason is Reason.RATE_LIMITED:
            if isinstance(denial, TooManyRequests):
                headers.append(("retry-after", str(denial.retry_after_seconds)))
            return self._json(429, "rate_limited", denial, headers, metadata)
        if self._is_navigation(ctx, policy) and not self._is_login_page(ctx):
            return self._redirect(self.login_url, ctx, headers, metadata)
        error = _RFC6750_ERROR.get(denial.reason, "invalid_token")
        return self._challenge(401, error, denial, headers, metadata)

    def _redirect(
        self, url: str, ctx: RequestContext, headers: list[tuple[str, str]],
        metadata: dict[str, str],
    ) -> Deny:
        separator = "&" if "?" in url else "?"
        target = safe_return_to(without_credentials(ctx.path, ctx.query))
        headers.append(("location", f"{url}{separator}return_to={quote(target, safe='')}"))
        return Deny(302, tuple(headers), "", metadata)

    def _step_up(
        self, ctx: RequestContext, policy: Policy, denial: InsufficientAuthentication,
        headers: list[tuple[str, str]], metadata: dict[str, str],
    ) -> Deny:
        """RFC 9470 §3: a browser re-authenticates on the step-up page, an API client is
        told what the route needs (``acr_values``, ``max_age``)."""
        if self._is_navigation(ctx, policy) and urlsplit(self.step_up_url).path != ctx.path:
            return self._redirect(self.step_up_url, ctx, headers, metadata)
        challenge = bearer_challenge(self.realm, str(denial.reason), denial.detail)
        if denial.acr_values and _is_quotable(denial.acr_values):
            challenge += f', acr_values="{denial.acr_values}"'
        if denial.max_age is not None:
            challenge += f', max_age="{denial.max_age}"'
        headers.append(("www-authenticate", challenge))
        return self._json(401, str(denial.reason), denial, headers, metadata)

    def _challenge(
        self,
        status: int,
        error: str | None,
        denial: Denied,
        headers: list[tuple[str, str]],
        metadata: dict[str, str],
    ) -> Deny:
        scope = denial.required_scope if isinstance(denial, Forbidden) else ""
        headers.append(
            ("www-authenticate", bearer_challenge(self.realm, error, denial.detail, scope))
        )
        return self._json(status, error or "unauthenticated", denial, headers, metadata)

    @staticmethod
    def _json(
        status: int,
        error: str,
        denial: Denied,
        headers: list[tuple[str, str]],
        metadata: dict[str, str],
    ) -> Deny:
        headers.append(("content-type", "application/json"))
        body = json.dumps(
            {"error": error, "error_description": denial.detail, "reason": str(denial.reason)},
            separators=(",", ":"),
        )
        return Deny(status, tuple(headers), body, metadata)
