"""Forward-auth for proxies other than Envoy (nginx ``auth_request``, Traefik ``ForwardAuth``,
Caddy ``forward_auth``): the request a proxy forwards to ``GET /auth/verify`` in the pipeline's
types, and the pipeline's decision as the answer such a proxy understands. No web framework
here: :mod:`extauthz.server.http_server` is the adapter. The contract for proxies:
docs/forward-auth.md.

What is read from the forwarded request, in the request the proxy sends (``lines``):

* the original method: ``X-Forwarded-Method`` (Traefik, Caddy) or ``X-Original-Method``
  (nginx convention); the original request target (origin-form, ``/path?query``):
  ``X-Forwarded-Uri`` or ``X-Original-URI``. Both are required. When both names of a pair
  are present they must agree, so a client-sent copy that the proxy did not overwrite cannot
  stand in for the proxy's own;
* the original host: ``X-Forwarded-Host``, else ``Host``; the scheme: ``X-Forwarded-Proto``
  (``http`` or ``https``), else the scheme of the connection from the proxy;
* the per-route policy (what ``context_extensions`` carry for Envoy,
  :mod:`extauthz.check.policy`): ``X-Extauthz-Scopes`` → ``required_scopes``,
  ``X-Extauthz-Roles`` → ``required_roles``, ``X-Extauthz-Credentials`` → ``credentials``,
  ``X-Extauthz-Client`` → ``client``, ``X-Extauthz-Same-Site`` → ``same_site``;
* every other header is the original request's (``Cookie``, ``Authorization``, ``Accept``,
  the API-key header, ``Origin``…), as the proxy copied it.

Each of these names may come once: a repeated line, a value over
:data:`MAX_FORWARDED_LENGTH`, a control character, a method that is not an RFC 9110 token, a
target that is not origin-form, a bad host or scheme, each raises
:class:`~extauthz.errors.BadRequest` (400): the request is refused, never guessed at.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from extauthz.check.context import RequestContext, join_headers
from extauthz.check.decisions import Allow, Decision
from extauthz.errors import BadRequest, Reason

VERIFY_PATH = "/auth/verify"
# the header of the answer that carries the Cookie header for upstream (the session cookie
# taken out); empty when nothing is left
COOKIE_FOR_UPSTREAM = "x-extauthz-cookie"
# the request header by which a proxy asks for a login redirect as 401 + Location (nginx's
# auth_request passes 401 and 403 on, any other status is an error)
REDIRECT_AS = "x-extauthz-redirect"
MAX_FORWARDED_LENGTH = 8192

# header → context_extensions key (README, 'Putting it in front of your services')
POLICY_HEADERS = {
    "x-extauthz-scopes": "required_scopes",
    "x-extauthz-roles": "required_roles",
    "x-extauthz-credentials": "credentials",
    "x-extauthz-client": "client",
    "x-extauthz-same-site": "same_site",
}
_PAIRS = {
    "method": ("x-forwarded-method", "x-original-method"),
    "uri": ("x-forwarded-uri", "x-original-uri"),
}
_SINGLE = ("x-forwarded-host", "x-forwarded-proto", "host", REDIRECT_AS)
# every name read here: each must come at most once, none goes on to the pipeline's headers
_READ = frozenset({*POLICY_HEADERS, *_PAIRS["method"], *_PAIRS["uri"], *_SINGLE})
# RFC 9110 §5.6.2 token
_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
# RFC 9110 §7.2 Host: uri-host [":" port]; a reg-name, an IPv4 address or an IP-literal
_HOST = re.compile(r"^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._~%!$&'()*+,;=]+)(?::[0-9]{1,5})?$")


def _malformed(detail: str) -> BadRequest:
    return BadRequest(Reason.MALFORMED_REQUEST, detail)


def _printable(value: str) -> bool:
    return all(0x20 < ord(c) < 0x7F for c in value)


def _single_values(
    lines: Iterable[tuple[str, str]],
) -> tuple[dict[str, str], list[tuple[str, str]]]:
    """The forwarding and policy headers (each at most once, stripped) and the other lines.

    :raises BadRequest: one of them repeated or too long.
    """
    read: dict[str, str] = {}
    rest: list[tuple[str, str]] = []
    for name, value in lines:
        key = name.lower()
        if key not in _READ:
            rest.append((name, value))
            continue
        if key in read:
            raise _malformed(f"{key} sent more than once")
        if len(value) > MAX_FORWARDED_LENGTH:
            raise _malformed(f"{key} is too long")
        read[key] = value.strip()
    return read, rest


def _one_of(read: Mapping[str, str], names: tuple[str, str], *, upper: bool = False) -> str:
    """The value of the pair ``names`` (upper-cased with ``upper``); both present must agree.

    :raises BadRequest: neither is present, or they disagree.
    """
    values = {read[n].upper() if upper else read[n] for n in names if n in read}
    if not values:
        raise _malformed(f"{' or '.join(names)} is required")
    if len(values) > 1:
        raise _malformed(f"{' and '.join(names)} disagree")
    return values.pop()


def forwarded_request(
    lines: Iterable[tuple[str, str]], *, scheme: str, peer_address: str
) -> RequestContext:
    """The original request, read from the header lines of a forward-auth request (module
    docstring). ``scheme`` is the connection's (used without ``X-Forwarded-Proto``);
    ``peer_address`` the client's address as the adapter found it.

    :raises BadRequest: a forwarding or policy header is missing, repeated or malformed.
    """
    read, rest = _single_values(lines)
    method = _one_of(read, _PAIRS["method"], upper=True)
    if not _TOKEN.match(method):
        raise _malformed("the forwarded method is not a token")
    target = _one_of(read, _PAIRS["uri"])
    if not target.startswith("/") or not _printable(target) or "#" in target:
        raise _malformed("the forwarded URI is not a path (origin-form)")
    host = read.get("x-forwarded-host") or read.get("host", "")
    if not _HOST.match(host):
        raise _malformed("the forwarded host is missing or malformed")
    proto = read.get("x-forwarded-proto", scheme).lower()
    if proto not in ("http", "https"):
        raise _malformed("the forwarded scheme is neither http nor https")
    extensions = {}
    for header, key in POLICY_HEADERS.items():
        value = read.get(header)
        if value is None:
            continue
        if not all(0x20 <= ord(c) < 0x7F for c in value):
            raise _malformed(f"{header} has a character that is not printable ASCII")
        extensions[key] = value
    path, _, query = target.partition("?")
    return RequestContext(
        method=method,
        scheme=proto,
        host=host,
        path=path,
        query=query,
        headers=join_headers(rest),
        context_extensions=extensions,
        peer_address=peer_address,
    )


def wants_redirect_as_401(lines: Iterable[tuple[str, str]]) -> bool:
    """Whether the proxy asked, with ``X-Extauthz-Redirect: 401``, for login redirects as
    401 with ``Location`` (nginx)."""
    return any(k.lower() == REDIRECT_AS and v.strip() == "401" for k, v in lines)


@dataclass(frozen=True)
class VerifyAnswer:
    """The answer to ``/auth/verify``: a status, header lines (``Set-Cookie`` may repeat) and
    a body."""

    status: int
    headers: tuple[tuple[str, str], ...]
    body: str = ""


def verify_answer(
    ctx: RequestContext, decision: Decision, *, redirect_as_401: bool = False
) -> VerifyAnswer:
    """The decision on ``ctx`` as a forward-auth answer.

    Allowed: 200 with the JWT header of :class:`~extauthz.check.decisions.Allow`
    (``Authorization: Bearer <JWT>`` or ``jwt.header``), ``X-Extauthz-Cookie`` with the
    ``Cookie`` header for upstream: the original one without the session cookie (empty when
    nothing is left), and a token rotation's ``Set-Cookie`` lines for the client. Denied: the
    denial's status, headers and body; a login redirect (302) becomes 401 with the same
    ``Location`` when ``redirect_as_401``.
    """
    if isinstance(decision, Allow):
        cookie = "" if "cookie" in decision.headers_to_remove else ctx.header("cookie") or ""
        headers: list[tuple[str, str]] = [("cache-control", "no-store")]
        for name, value in decision.headers_to_set:
            if name == "cookie":
                cookie = value
            else:
                headers.append((name, value))
        headers.append((COOKIE_FOR_UPSTREAM, cookie))
        headers.extend(decision.response_headers_to_add)
        return VerifyAnswer(200, tuple(headers))
    status = decision.status
    if status == 302 and redirect_as_401:
        status = 401
    return VerifyAnswer(status, decision.headers, decision.body)

