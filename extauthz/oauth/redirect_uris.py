"""Redirect URIs a client may register (RFC 6749 §3.1.2), compared by exact string match.

Rules (:func:`validate_redirect_uri`): absolute, ``https`` (or ``http`` on a loopback host
only: ``127.0.0.0/8``, ``[::1]``, ``localhost``, RFC 8252 §7.3 and §8.3), no fragment (RFC 6749
§3.1.2), no userinfo, no wildcard ``*``, no backslash, space, control or non-ASCII character, a
valid DNS name or IP address as host (no ``127.1`` shorthand, no IPv6 zone id), at most
:data:`REDIRECT_URI_MAX` characters and :data:`REDIRECT_URIS_MAX` URIs per client.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from urllib.parse import urlsplit

from extauthz.addresses import is_loopback_host

REDIRECT_URI_MAX = 2000
REDIRECT_URIS_MAX = 10

# RFC 3986 §2 characters, without '#' (no fragment) and '*' (no wildcard)
_URI_CHARS = re.compile(r"[A-Za-z0-9\-._~:/?\[\]@!$&'()+,;=%]+")
_BAD_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")
_DNS_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")


def _check_host(host: str, bracketed: bool) -> None:
    if bracketed:
        if "%" in host:
            raise ValueError("an IPv6 zone id is not allowed")
        ipaddress.IPv6Address(host)  # ValueError if not an address
        return
    labels = host.split(".")
    if labels[-1].isdigit():  # looks numeric: only a dotted-quad IPv4 address, no "127.1"
        ipaddress.IPv4Address(host)
        return
    if len(host) > 253 or not all(_DNS_LABEL.fullmatch(label) for label in labels):
        raise ValueError(f"invalid host {host!r}")


def validate_redirect_uri(uri: object) -> str:
    """Return ``uri`` if it may be registered as a redirect URI (rules in the module docstring,
    RFC 6749 §3.1.2, RFC 8252 §7.3 and §8.3); raise ``ValueError`` saying why not."""
    if not isinstance(uri, str):
        raise ValueError(f"redirect URI must be a string, not {type(uri).__name__}")
    shown = repr(uri[:120])
    if not 1 <= len(uri) <= REDIRECT_URI_MAX:
        raise ValueError(f"redirect URI {shown} must be 1-{REDIRECT_URI_MAX} characters")
    if "#" in uri:
        raise ValueError(f"redirect URI {shown} must not have a fragment (RFC 6749 §3.1.2)")
    if "*" in uri:
        raise ValueError(f"redirect URI {shown} must not contain a wildcard '*': exact URIs only")
    if not _URI_CHARS.fullmatch(uri) or _BAD_PERCENT.search(uri):
        raise ValueError(
            f"redirect URI {shown} has a character that is not allowed in a URI "
            "(backslash, space, control, non-ASCII or a bad %-escape)"
        )
    try:
        parts = urlsplit(uri)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"redirect URI {shown} does not parse: {exc}") from None
    if parts.scheme not in ("https", "http") or not uri.startswith(parts.scheme + "://"):
        raise ValueError(
            f"redirect URI {shown} must be an absolute https:// URI (http:// on loopback only)"
        )
    authority = parts.netloc
    if "@" in authority:
        raise ValueError(f"redirect URI {shown} must not contain userinfo ('@')")
    host = parts.hostname or ""
    if not host or authority.endswith(":") or (port is not None and port == 0):
        raise ValueError(f"redirect URI {shown} needs a host (and a non-zero port if any)")
    try:
        _check_host(host, authority.startswith("["))
    except ValueError:
        raise ValueError(f"redirect URI {shown} has an invalid host") from None
    if parts.scheme == "http" and not is_loopback_host(host):
        raise ValueError(
            f"redirect URI {shown}: http:// is only allowed on a loopback host "
            "(127.0.0.0/8, [::1], localhost); use https://"
        )
    return uri


def validate_redirect_uris(uris: Iterable[str]) -> tuple[str, ...]:
    """Each URI validated (:func:`validate_redirect_uri`), deduplicated in order, at most
    :data:`REDIRECT_URIS_MAX`; ``ValueError`` otherwise (also for one string instead of a list).
    """
    if isinstance(uris, str):
        raise ValueError("redirect_uris must be a list of strings, not one string")
    out = tuple(dict.fromkeys(validate_redirect_uri(u) for u in uris))
    if len(out) > REDIRECT_URIS_MAX:
        raise ValueError(f"at most {REDIRECT_URIS_MAX} redirect URIs per client")
    return out
