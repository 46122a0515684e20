"""Credential extraction: the session cookie, ``Authorization: Bearer`` and the API-key
header (``api_keys.header``, default ``x-api-key``).

Each extractor follows one contract: it returns ``None`` when the request carries no
credential of its kind ("not mine"), returns the candidate token strings when it finds some,
and raises :class:`~extauthz.errors.Unauthenticated` when it finds one of its kind that is
malformed or ambiguous ("mine, but invalid"). Credentials never come from the query string.

Shape checks (prefix, checksum) are not done here: see :mod:`extauthz.tokens`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

from extauthz import tokens
from extauthz.check.context import RequestContext
from extauthz.errors import Reason, Unauthenticated

# RFC 6750 §2.1: b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="
_B64TOKEN = re.compile(r"^[A-Za-z0-9\-._~+/]+=*$")
# A header value longer than this is refused before any parsing (Envoy's own limit is 60 KiB
# for all headers by default; this keeps pathological inputs cheap).
MAX_HEADER_LENGTH = 64 * 1024


def iter_cookies(header: str) -> Iterator[tuple[str, str]]:
    """Yield ``(name, value)`` pairs from a ``Cookie`` header (RFC 6265 §5.4 / §4.2.1).

    Lenient by design: pairs are split on ``;`` (and on ``,``, which Envoy may use to join
    repeated headers and which a cookie-octet never contains), surrounding white space is
    dropped, one pair of surrounding double quotes is removed from the value, and pieces
    without ``=`` or with an empty name are skipped, so junk in other cookies (JSON, quotes,
    brackets, spaces) never hides the session cookie.
    """
    for piece in re.split(r"[;,]", header):
        name, sep, value = piece.partition("=")
        name = name.strip()
        if not sep or not name:
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1]
        yield name, value


def _is_pair(piece: str) -> bool:
    name, equals, _ = piece.partition("=")
    return bool(equals and name.strip())


def strip_cookie(header: str, cookie_name: str) -> str | None:
    """Return the ``Cookie`` header without any ``cookie_name`` pair, or ``None`` if empty.

    Pieces are split exactly as :func:`iter_cookies` splits them (so every copy it reads is
    removed); every other piece and the ``;`` before it are kept byte for byte, in order. A
    ``,`` before a ``name=value`` pair is where Envoy joined two ``Cookie`` lines in the
    CheckRequest: it becomes the ``cookie-string`` separator ``; `` (RFC 6265 §4.2.1), or
    the upstream would read the two cookies as one value. Any other ``,`` is inside a value
    and stays.
    """
    parts = re.split(r"([;,])", header)
    pieces, separators = parts[0::2], ["", *parts[1::2]]
    kept = [
        ("; ", piece.lstrip()) if separator == "," and _is_pair(piece) else (separator, piece)
        for separator, piece in zip(separators, pieces, strict=True)
        if piece.partition("=")[0].strip() != cookie_name
    ]
    if len(kept) == len(pieces):
        return header
    if not any(piece.strip() for _, piece in kept):
        return None
    return "".join(sep + piece if i else piece for i, (sep, piece) in enumerate(kept)).strip()


@dataclass(frozen=True)
class CookieExtractor:
    """Finds the session cookie. Several copies (a host cookie and a parent-domain cookie
    with one name) are all returned, in order, deduplicated; more than ``max_candidates``
    distinct values is refused."""

    cookie_name: str
    max_candidates: int = 4

    def extract(self, ctx: RequestContext) -> tuple[str, ...] | None:
        header = ctx.header("cookie")
        if not header:
            return None
        if len(header) > MAX_HEADER_LENGTH:
            raise Unauthenticated(Reason.MALFORMED_CREDENTIAL, "cookie header too large")
        values: list[str] = []
        for name, value in iter_cookies(header):
            if name == self.cookie_name and value not in values:
                values.append(value)
                # at once: comparing thousands of copies with each other is quadratic
                if len(values) > self.max_candidates:
                    raise Unauthenticated(Reason.AMBIGUOUS_CREDENTIAL, "too many session cookies")
        if not values:
            return None
        return tuple(values)


def _is_bearer(piece: str) -> bool:
    return piece.strip().partition(" ")[0].lower() == "bearer"


@dataclass(frozen=True)
class BearerExtractor:
    """Finds ``Authorization: Bearer <token>`` (RFC 6750 §2.1; the scheme is
    case-insensitive, RFC 9110 §11.1). Other schemes are "not mine"."""

    def extract(self, ctx: RequestContext) -> tuple[str, ...] | None:
        header = ctx.header("authorization")
        if header is None:
            return None
        if len(header) > MAX_HEADER_LENGTH:
            raise Unauthenticated(Reason.MALFORMED_CREDENTIAL, "authorization header too large")
        if "," in header:
            # Envoy joins repeated headers with ","; no b64token contains one. Other schemes
            # may use commas between their parameters (RFC 9110 §11.4): "not mine".
            if not any(_is_bearer(piece) for piece in header.split(",")):
                return None
            raise Unauthenticated(
                Reason.AMBIGUOUS_CREDENTIAL, "more than one Authorization header value"
            )
        scheme, _, rest = header.strip().partition(" ")
        if scheme.lower() != "bearer":
            return None
        token = rest.strip()
        if not token:
            raise Unauthenticated(Reason.MALFORMED_CREDENTIAL, "empty bearer token")
        if not _B64TOKEN.match(token):
            raise Unauthenticated(Reason.MALFORMED_CREDENTIAL, "bearer token has invalid syntax")
        return (token,)


@dataclass(frozen=True)
class ApiKeyHeaderExtractor:
    """Finds an API key in its own header (``api_keys.header``): the bare key, ``xak_…``.
    A value without the API-key prefix, empty, or repeated (Envoy joins repeated headers
    with ``,``) is "mine, but invalid"."""

    header: str = "x-api-key"

    def extract(self, ctx: RequestContext) -> tuple[str, ...] | None:
        value = ctx.header(self.header)
        if value is None:
            return None
        if len(value) > MAX_HEADER_LENGTH:
            raise Unauthenticated(Reason.MALFORMED_CREDENTIAL, "API-key header too large")
        if "," in value:
            raise Unauthenticated(Reason.AMBIGUOUS_CREDENTIAL, "more than one API-key header")
        key = value.strip()
        if not key.startswith(tokens.API_KEY_PREFIX) or not _B64TOKEN.match(key):
            raise Unauthenticated(
                Reason.MALFORMED_CREDENTIAL, "the API-key header holds no API key"
            )
        return (key,)


BEARER, COOKIE, API_KEY_HEADER = "bearer", "cookie", "api_key_header"
# the session kinds (Session.kind) each source may carry: an application's access token and
# an API key are bearer credentials, never a cookie; the API-key header carries API keys only
KINDS_BY_SOURCE = {
    BEARER: frozenset({"session", "oauth", "api_key"}),
    COOKIE: frozenset({"session"}),
    API_KEY_HEADER: frozenset({"api_key"}),
}

_NAMES = {BEARER: "bearer token", COOKIE: "session cookie", API_KEY_HEADER: "API-key header"}


@dataclass(frozen=True)
class Credentials:
    """Candidate tokens of one request: ``source`` is ``"bearer"``, ``"cookie"`` or
    ``"api_key_header"`` (:data:`KINDS_BY_SOURCE` says which session kinds each may carry)."""

    source: str
    tokens: tuple[str, ...]


def extract_credentials(
    ctx: RequestContext,
    cookies: CookieExtractor,
    bearer: BearerExtractor,
    api_key: ApiKeyHeaderExtractor | None = None,
) -> Credentials | None:
    """Run the extractors; ``None`` when none finds anything. A bearer token wins over the
    API-key header, which wins over the cookie, when they name the same token.

    :raises Unauthenticated: a malformed credential, or two credentials (bearer token, API-key
        header, session cookie) that name different tokens (``ambiguous_credential``).
    """
    found = [
        (source, extracted)
        for source, extracted in (
            (BEARER, bearer.extract(ctx)),
            (API_KEY_HEADER, api_key.extract(ctx) if api_key is not None else None),
            (COOKIE, cookies.extract(ctx)),
        )
        if extracted is not None
    ]
    if not found:
        return None
    first_source, first = found[0]
    for source, extracted in found[1:]:
        if set(extracted) != set(first):
            raise Unauthenticated(
                Reason.AMBIGUOUS_CREDENTIAL, f"{_NAMES[first_source]} and {_NAMES[source]} disagree"
            )
    return Credentials(first_source, first)
