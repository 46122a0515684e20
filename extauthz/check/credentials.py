"""Credential extraction: the session cookie and ``Authorization: Bearer``.

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
class Credentials:
    """Candidate tokens of one request: ``source`` is ``"bearer"`` or ``"cookie"``."""

    source: str
    tokens: tuple[str, ...]


def extract_credentials(
    ctx: RequestContext, cookies: CookieExtractor, bearer: BearerExtractor
) -> Credentials | None:
    """Run both extractors; ``None`` when neither finds anything.

    :raises Unauthenticated: a malformed credential, or a bearer token and a session cookie
        that name different tokens (``ambiguous_credential``).
    """
    bearer_tokens = bearer.extract(ctx)
    cookie_tokens = cookies.extract(ctx)
    if bearer_tokens is not None:
        if cookie_tokens is not None and set(cookie_tokens) != set(bearer_tokens):
            raise Unauthenticated(
                Reason.AMBIGUOUS_CREDENTIAL, "bearer token and session cookie disagree"
            )
        return Credentials("bearer", bearer_tokens)
    if cookie_tokens is not None:
        return Credentials("cookie", cookie_tokens)
    return None
