"""Same-site checks for state-changing requests (cross-site request forgery defence).

Used by the authentication service for ``POST /auth/login`` and ``/auth/logout``, and by the
Check pipeline for routes whose ``context_extensions`` say ``same_site: required`` (there only
for cookie-authenticated requests with an unsafe method). The evidence, in order (``Origin``,
``Sec-Fetch-Site``, ``Referer``, the body type): docs/authentication.md, 'Cross-site
protection'. The answer is ``None`` (same-site) or a short reason that is safe to show to the
client.

Browser evidence is compared exactly: ``Origin`` must be one of the accepted serialized origins
(RFC 6454 §6.2: lower-case scheme and host, the port only when it is not the scheme's default,
nothing else), a ``Referer`` must begin with one followed by ``/``, ``?``, ``#`` or its end, and
``Sec-Fetch-Site`` must be exactly ``same-origin`` or ``none``. A value no browser sends (with
user info, a path, a port with leading zeros, another letter case, surrounding spaces) is not
same-site, even when the right host appears in it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
FORM_CONTENT_TYPES = frozenset(
    {"application/x-www-form-urlencoded", "multipart/form-data", "text/plain"}
)
_DEFAULT_PORTS = {"http": 80, "https": 443}
# the origin part of a Referer as a browser sends it: scheme://authority, then the path
_REFERER_ORIGIN = re.compile(r"(https?://[^/?#]*)(?:[/?#]|\Z)")


def normalize_origin(url: str) -> str | None:
    """``scheme://host[:port]`` of ``url``, lower case, default port dropped; ``None`` when
    ``url`` has no http(s) scheme and host. For the accepted origins (the request's own
    scheme and ``Host``, ``auth.allowed_origins``), never for the evidence a client sends."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if scheme not in _DEFAULT_PORTS or not host:
        return None
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    if port is not None and port != _DEFAULT_PORTS[scheme]:
        return f"{scheme}://{host}:{port}"
    return f"{scheme}://{host}"


def media_type(content_type: str | None) -> str:
    """The bare media type of a ``Content-Type`` value, lower case (``""`` when absent)."""
    return (content_type or "").split(";", 1)[0].strip().lower()


@dataclass(frozen=True)
class SameSiteCheck:
    """Decides whether a request comes from the site it is addressed to.

    ``extra_origins``: further origins that count as the same site (``auth.allowed_origins``).
    """

    extra_origins: frozenset[str] = frozenset()

    @classmethod
    def with_origins(cls, origins: Iterable[str]) -> SameSiteCheck:
        normalized = {normalize_origin(o) for o in origins}
        return cls(frozenset(o for o in normalized if o is not None))

    def violation(self, scheme: str, host: str, headers: Mapping[str, str]) -> str | None:
        """``None`` when the request is same-site, else why not.

        ``scheme`` and ``host`` are the request's own (``:scheme``/``Host`` as the client sent
        them); ``headers`` maps lower-case names to values.
        """
        own = normalize_origin(f"{scheme or 'http'}://{host}") if host else None
        allowed = self.extra_origins | ({own} if own else set())
        origin = headers.get("origin")
        if origin is not None:
            if origin == "null":
                return "opaque origin (Origin: null)"
            return None if origin in allowed else "cross-site origin"
        fetch_site = headers.get("sec-fetch-site")
        if fetch_site is not None:
            if fetch_site in ("same-origin", "none"):
                return None
            return f"Sec-Fetch-Site: {fetch_site.strip()[:20]}"
        referer = headers.get("referer")
        if referer is not None:
            found = _REFERER_ORIGIN.match(referer)
            return None if found and found.group(1) in allowed else "cross-site referer"
        if media_type(headers.get("content-type")) in FORM_CONTENT_TYPES:
            return "form post without Origin or Referer"
        return None
