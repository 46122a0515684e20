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

_SECURE_PREFIXES = ("__Host-", "__Secure-")


@dataclass(frozen=True)
class SessionCookie:
    """Builds ``Set-Cookie`` header values for the session cookie ``name``: the one builder
    behind the login's cookie, the logout's clearing and the clearing by Check's denials.

    ``secure``: add ``Secure`` (always added for a ``__Host-``/``__Secure-`` name);
    ``domain``: the ``Domain`` attribute, ``""`` for a host-only cookie (never sent for a
    ``__Host-`` name, RFC 6265bis §4.1.3.2, or the browser would refuse the clearing too).
    """

    name: str
    secure: bool = True
    domain: str = ""

    @property
    def is_secure(self) -> bool:
        return self.secure or self.name.startswith(_SECURE_PREFIXES)

    def _attributes(self, max_age: int) -> list[str]:
        parts = [f"Max-Age={max_age}", "Path=/", "HttpOnly", "SameSite=Lax"]
        if self.is_secure:
            parts.append("Secure")
        if self.domain and not self.name.startswith("__Host-"):
            parts.append(f"Domain={self.domain}")
        return parts

    def set(self, token: str, max_age_seconds: float) -> str:
        """A ``Set-Cookie`` value carrying ``token`` for ``max_age_seconds`` (rounded up,
        at least 1).

        :raises ValueError: ``token`` contains characters a cookie value cannot hold.
        """
        if not token or any(c in token for c in ' ;,"\\') or not token.isascii():
            raise ValueError("token is not a valid cookie value")
        max_age = max(1, math.ceil(max_age_seconds))
        return "; ".join([f"{self.name}={token}", *self._attributes(max_age)])

    def clear(self) -> str:
        """A ``Set-Cookie`` value that deletes the cookie (empty value, ``Max-Age=0``)."""
        return "; ".join([f"{self.name}=", *self._attributes(0)])
