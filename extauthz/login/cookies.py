"""The session cookie: ``Set-Cookie`` values that set and clear it (RFC 6265 §4.1,
prefixes from RFC 6265bis §4.1.3).

Every session cookie is ``HttpOnly`` (no script can read the token), ``SameSite=Lax`` (not
sent on cross-site sub-requests and form posts) and ``Path=/``. It is ``Secure`` unless
``session.cookie_secure = false`` for plain-HTTP local use; a ``__Host-`` or ``__Secure-``
name is always ``Secure`` (settings refuse the combination anyway), and a ``__Host-`` cookie
never carries a ``Domain``.

``Max-Age`` is the time left until the session's absolute expiry, so the cookie lives exactly
as long as the session can; the idle timeout is enforced server-side.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


def has_host_prefix(name: str) -> bool:
    """Whether ``name`` starts with ``__Host-`` in any letter case: browsers apply the
    prefix rules case-insensitively (RFC 6265bis §5.7, the storage model: a
    "case-insensitive match"; Chromium drops ``__host-s`` with a ``Domain``)."""
    return name[:7].lower() == "__host-"


def has_secure_prefix(name: str) -> bool:
    """Whether ``name`` starts with ``__Host-`` or ``__Secure-`` in any letter case (both
    require ``Secure``, RFC 6265bis §4.1.3)."""
    return has_host_prefix(name) or name[:9].lower() == "__secure-"


@dataclass(frozen=True)
class SessionCookie:
    """Builds ``Set-Cookie`` header values for the session cookie ``name``: the one builder
    behind the login's cookie, the logout's clearing and the clearing by Check's denials.

    ``secure``: add ``Secure`` (always added for a ``__Host-``/``__Secure-`` name, in any
    letter case); ``domain``: the ``Domain`` attribute, ``""`` for a host-only cookie (never
    sent for a ``__Host-`` name, RFC 6265bis §4.1.3.2, or the browser would refuse the
    clearing too).

    A browser may hold two cookies of this name: a host-only one and one with ``Domain``
    (a ``cookie_domain`` added or removed, or a host equal to the domain set both ways).
    Clearing therefore covers every variant (:meth:`clearing`), and a login clears the
    variant it does not set (:meth:`setting`).
    """

    name: str
    secure: bool = True
    domain: str = ""

    @property
    def is_secure(self) -> bool:
        return self.secure or has_secure_prefix(self.name)

    @property
    def _domains(self) -> tuple[str, ...]:
        """Every ``Domain`` a cookie of this name can carry (``""``: host-only); the one
        :meth:`set` uses last."""
        if self.domain and not has_host_prefix(self.name):
            return ("", self.domain)
        return ("",)

    def _attributes(self, max_age: int, domain: str) -> list[str]:
        parts = [f"Max-Age={max_age}", "Path=/", "HttpOnly", "SameSite=Lax"]
        if self.is_secure:
            parts.append("Secure")
        if domain:
            parts.append(f"Domain={domain}")
        return parts

    def set(self, token: str, max_age_seconds: float) -> str:
        """A ``Set-Cookie`` value carrying ``token`` for ``max_age_seconds`` (rounded up,
        at least 1).

        :raises ValueError: ``token`` contains characters a cookie value cannot hold.
        """
        if not token or any(c in token for c in ' ;,"\\') or not token.isascii():
            raise ValueError("token is not a valid cookie value")
        max_age = max(1, math.ceil(max_age_seconds))
        return "; ".join([f"{self.name}={token}", *self._attributes(max_age, self._domains[-1])])

    def setting(self, token: str, max_age_seconds: float) -> tuple[str, ...]:
        """The ``Set-Cookie`` values of a login, in order: every other variant cleared, then
        :meth:`set` (a browser applies them in order, RFC 6265 §5.3).

        :raises ValueError: see :meth:`set`.
        """
        return (*self.clearing()[:-1], self.set(token, max_age_seconds))

    def clearing(self) -> tuple[str, ...]:
        """``Set-Cookie`` values that delete every variant of the cookie (empty value,
        ``Max-Age=0``): host-only, then with the configured ``Domain``."""
        return tuple(
            "; ".join([f"{self.name}=", *self._attributes(0, domain)]) for domain in self._domains
        )
