"""The consent page (RFC 6749 §4.1.1: the resource owner's decision) and its CSRF token.

The page names the application, lists each requested scope in plain words
(``oauth.scope_descriptions``, else the scope token itself) and the host the browser will be
sent to, and offers Allow and Deny. It posts to ``POST /auth/oauth/authorize`` the fields
``csrf_token``, ``decision`` (``allow`` or ``deny``, the button pressed) and the original
authorization request's parameters as hidden fields. It is served with the login pages'
headers: no script, never framed (``frame-ancestors 'none'``, ``X-Frame-Options: DENY``:
RFC 6749 §10.13).

The CSRF token (RFC 6749 §10.12) is an HMAC under a key derived from the user's session
token, over the client and the scope shown: only a page served to that session, for that
request, carries it; the same-site check of :mod:`extauthz.login.csrf` applies as well.
"""

from __future__ import annotations

import hashlib
import hmac
import html
import re
from collections.abc import Iterable, Mapping
from urllib.parse import urlsplit

from extauthz.login import pages

AUTHORIZE_PATH = "/auth/oauth/authorize"
FORWARDED_PARAMS = (
    "response_type", "client_id", "redirect_uri", "scope", "state",
    "code_challenge", "code_challenge_method",
)
"""The authorization request's parameters the consent form carries as hidden fields."""
HTML_HEADERS = pages.HTML_HEADERS
_ORIGIN = re.compile(r"https?://[A-Za-z0-9.\-\[\]:]+")


def consent_headers(redirect_uri: str) -> dict[str, str]:
    """The consent page's headers: the login pages' (:data:`HTML_HEADERS`), with the
    ``redirect_uri``'s origin added to ``form-action``. The form posts to this origin, but its
    answer is a redirect to the application (RFC 6749 §4.1.2), and browsers hold a form's
    redirects to ``form-action`` too (CSP Level 3): with ``'self'`` alone, Allow and Deny went
    nowhere. ``redirect_uri`` is a registered one (exact match); anything that is not a plain
    origin is left out rather than written into the policy."""
    parts = urlsplit(redirect_uri)
    origin = f"{parts.scheme}://{parts.netloc}"
    if _ORIGIN.fullmatch(origin) and "@" not in parts.netloc:
        return pages.html_headers(form_targets=[origin])
    return dict(HTML_HEADERS)


def csrf_token(session_token: str, client_id: str, scope: str) -> str:
    """The consent form's token for the session of ``session_token`` (64 hex characters)."""
    key = hashlib.sha256(b"oauth-consent:" + session_token.encode("ascii")).digest()
    message = f"{client_id}\x00{scope}".encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def csrf_ok(candidate: object, session_token: str, client_id: str, scope: str) -> bool:
    """Whether ``candidate`` is :func:`csrf_token` for these (constant-time)."""
    if not isinstance(candidate, str) or len(candidate) != 64 or not candidate.isascii():
        return False
    return hmac.compare_digest(candidate, csrf_token(session_token, client_id, scope))


def parse_descriptions(entries: Iterable[str]) -> dict[str, str]:
    """``oauth.scope_descriptions`` entries ``"<scope>=<plain words>"`` as a mapping.

    :raises ValueError: an entry without ``=`` or with an empty side.
    """
    found: dict[str, str] = {}
    for entry in entries:
        scope, sep, words = entry.partition("=")
        if not sep or not scope.strip() or not words.strip():
            raise ValueError(f"expected '<scope>=<description>', got {entry!r}")
        found[scope.strip()] = words.strip()
    return found


def redirect_host(redirect_uri: str) -> str:
    """The host (and a port other than the scheme's) the browser will be sent to."""
    parts = urlsplit(redirect_uri)
    host = parts.hostname or redirect_uri
    return f"{host}:{parts.port}" if parts.port else host


def consent_page(
    *,
    client_name: str,
    scopes: Iterable[str],
    descriptions: Mapping[str, str],
    redirect_uri: str,
    params: Mapping[str, str],
    csrf: str,
    user: str,
) -> str:
    """The consent form (element ids: ``consent``, ``allow``, ``deny``, ``scopes``,
    ``redirect-host``)."""
    e = html.escape
    items = "".join(
        f'<li data-scope="{e(s)}">{e(descriptions.get(s, s))}</li>' for s in scopes
    ) or "<li>No access beyond signing you in</li>"
    hidden = "".join(
        f'<input type="hidden" name="{e(name)}" value="{e(params[name])}">'
        for name in FORWARDED_PARAMS if name in params
    )
    body = (
        f"<h1>Allow {e(client_name)}?</h1>"
        f'<p>Signed in as <strong id="user">{e(user)}</strong>.</p>'
        f'<p><strong id="client-name">{e(client_name)}</strong> asks to:</p>'
        f'<ul id="scopes">{items}</ul>'
        f'<p>You will then be sent to <strong id="redirect-host">'
        f"{e(redirect_host(redirect_uri))}</strong>.</p>"
        f'<form method="post" action="{AUTHORIZE_PATH}" id="consent">'
        f'<input type="hidden" name="csrf_token" value="{e(csrf)}">{hidden}'
        '<button type="submit" name="decision" value="allow" id="allow">Allow</button> '
        '<button type="submit" name="decision" value="deny" id="deny">Deny</button>'
        "</form>"
    )
    return pages._page(f"Allow {client_name}?", body)


def error_page(message: str) -> str:
    """A refused authorization request that is not sent back to the client (an unknown
    client or a redirect URI that is not registered: RFC 6749 §4.1.2.1)."""
    return pages.message_page("Authorization request refused", message)
