"""Exceptions and stable reason codes.

The hierarchy::

    ExtauthzError
    ├── SettingsError        bad configuration; start-up stops with one line naming the key
    ├── KeyLoadError         signing keys missing, unreadable or of an unsupported type
    ├── StoreUnavailable     the session store cannot answer; Check fails with gRPC UNAVAILABLE
    │                        (Envoy's status_on_error applies), never a denial
    ├── StoreWriteNotDurable a write reached the primary but not the replicas the strategy
    │                        relies on (WAIT fell short); the caller must not report success
    └── Denied               the request is refused; carries a :class:`Reason`
        ├── Unauthenticated  no valid session: 401 (API) or 302 to login (browser)
        ├── Forbidden        a valid session that the route's policy refuses: 403
        ├── BadRequest       the request itself is malformed: 400
        └── TooManyRequests  the client is throttled: 429 with ``Retry-After``

:class:`Reason` values are stable identifiers: they appear in logs, in metrics, in the
``reason`` field of Envoy dynamic metadata and in the JSON body of denials.
"""

from __future__ import annotations

import enum


class Reason(enum.StrEnum):
    SESSION_VALID = "session_valid"
    NO_CREDENTIAL = "no_credential"
    MALFORMED_CREDENTIAL = "malformed_credential"
    AMBIGUOUS_CREDENTIAL = "ambiguous_credential"
    UNKNOWN_SESSION = "unknown_session"
    REVOKED_SESSION = "revoked_session"
    SESSION_EXPIRED = "session_expired"
    INSUFFICIENT_SCOPE = "insufficient_scope"
    INSUFFICIENT_ROLE = "insufficient_role"
    MALFORMED_REQUEST = "malformed_request"
    RATE_LIMITED = "rate_limited"
    CROSS_SITE_REQUEST = "cross_site_request"
    SESSION_TOO_LARGE = "session_too_large"
    # the route's context_extensions ``credentials`` refuses the kind of the session (or is
    # itself invalid: fail closed): 403
    CREDENTIAL_KIND_REFUSED = "credential_kind_refused"
    # an application's access token or an API key in the session cookie: Bearer (or the API-key
    # header) only, never a cookie: 401, and the cookie is cleared
    BEARER_ONLY_CREDENTIAL = "bearer_only_credential"
    # the route's required_amr / max_auth_age is not met: authenticate again (step-up,
    # RFC 9470): 401 with the challenge, browsers to the step-up page
    INSUFFICIENT_USER_AUTHENTICATION = "insufficient_user_authentication"
    # the route's context_extensions hold a value that cannot be read (fail closed): 403
    ROUTE_MISCONFIGURED = "route_misconfigured"


class ExtauthzError(Exception):
    """Base class of every error extauthz raises on purpose."""


class SettingsError(ExtauthzError):
    """A setting is missing or has a bad value. The message is one line naming the key."""


class KeyLoadError(ExtauthzError):
    """Signing keys could not be loaded."""


class StoreUnavailable(ExtauthzError):
    """The session store did not answer (connection refused, timeout, no primary)."""


class StoreWriteNotDurable(StoreUnavailable):
    """A write was not acknowledged by the replicas the strategy relies on (``WAIT``)."""


class Denied(ExtauthzError):
    """The request is refused for ``reason``; ``detail`` is safe to show to the client."""

    def __init__(self, reason: Reason, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else str(reason))
        self.reason = reason
        self.detail = detail


class Unauthenticated(Denied):
    """No valid session (RFC 6750 §3.1 ``invalid_token`` or no credential at all)."""


class Forbidden(Denied):
    """The session is valid but the route requires more (RFC 6750 §3.1 ``insufficient_scope``)."""

    def __init__(self, reason: Reason, detail: str = "", required_scope: str = "") -> None:
        super().__init__(reason, detail)
        self.required_scope = required_scope


class InsufficientAuthentication(Denied):
    """The session is valid but its authentication is too weak or too old for the route
    (RFC 9470 §3): ``acr_values`` (space-separated, our values are RFC 8176 ``amr`` names)
    and ``max_age`` (seconds, ``None`` when the route sets none) go into the challenge."""

    def __init__(self, detail: str, *, acr_values: str = "", max_age: int | None = None) -> None:
        super().__init__(Reason.INSUFFICIENT_USER_AUTHENTICATION, detail)
        self.acr_values = acr_values
        self.max_age = max_age


class BadRequest(Denied):
    """The request is malformed (RFC 6750 §3.1 ``invalid_request``)."""


class TooManyRequests(Denied):
    """The client is over a rate limit (RFC 6585 §4); ``retry_after_seconds`` >= 1 goes
    into ``Retry-After`` (RFC 9110 §10.2.3)."""

    def __init__(self, retry_after_seconds: int, detail: str = "too many requests") -> None:
        super().__init__(Reason.RATE_LIMITED, detail)
        self.retry_after_seconds = max(1, int(retry_after_seconds))
