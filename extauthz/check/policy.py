"""Per-route requirements, carried by Envoy ``context_extensions``
(``ExtAuthzPerRoute.check_settings.context_extensions`` in the route configuration):
``required_scopes``, ``required_roles``, ``credentials``, ``client``, ``same_site``, and the
step-up pair ``required_amr`` (RFC 8176 values the session's ``amr`` must all hold, e.g.
``mfa``) and ``max_auth_age`` (seconds since the session's latest authentication). What each
key means, and that routes without authentication are configured in Envoy, never guessed here
from paths: README.md, 'Putting it in front of your services'.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache

from extauthz.errors import Forbidden, InsufficientAuthentication, Reason
from extauthz.store.model import SESSION_KINDS, Session

CLIENT_KINDS = ("auto", "browser", "api")
ALL_KINDS = frozenset(SESSION_KINDS)
# a route's credentials value is logged once per distinct bad value, in this many at most
_MAX_REPORTED = 64
_reported: set[str] = set()
# distinct route settings remembered parsed (routes are few; any more are parsed again)
_ROUTE_CACHE_SIZE = 256
log = logging.getLogger("extauthz.check.policy")


def parse_credential_kinds(value: str | None) -> frozenset[str] | None:
    """The session kinds a route's ``credentials`` value accepts: space-separated names among
    :data:`~extauthz.store.model.SESSION_KINDS` (``session``, ``oauth``, ``api_key``); absent
    or blank: all of them. ``None`` when the value names anything else: such a route refuses
    every request (fail closed), it never falls back to "all"."""
    if value is None or not value.strip():
        return ALL_KINDS
    names = frozenset(value.split())
    return names if names <= ALL_KINDS else None


def _report_bad_credentials(value: str) -> None:
    if value in _reported or len(_reported) >= _MAX_REPORTED:
        return
    _reported.add(value)
    log.error(
        "route configuration error: context_extensions credentials=%r names no known kind "
        "(expected space-separated %s); the route refuses every request",
        value[:200],
        ", ".join(SESSION_KINDS),
    )


@dataclass(frozen=True)
class Policy:
    required_scopes: frozenset[str] = frozenset()
    required_roles: frozenset[str] = frozenset()
    client: str = "auto"
    same_site_required: bool = False
    # the session kinds the route accepts; None: the route's value was invalid (refuse all)
    credential_kinds: frozenset[str] | None = ALL_KINDS
    required_amr: tuple[str, ...] = ()
    # seconds; None: no bound; -1: the route's value was invalid (refuse all)
    max_auth_age: int | None = None

    @classmethod
    def from_context_extensions(cls, extensions: Mapping[str, str]) -> Policy:
        """Parse the route's settings. An unknown ``client`` value falls back to ``auto``,
        which changes only how a denial looks, never whether a request is allowed; an invalid
        ``credentials`` value refuses every request (and is logged once as a configuration
        error)."""
        client = extensions.get("client", "auto").strip().lower()
        kinds = parse_credential_kinds(extensions.get("credentials"))
        if kinds is None:
            _report_bad_credentials(extensions["credentials"])
        max_auth_age = _max_auth_age(extensions.get("max_auth_age"))
        return cls(
            required_scopes=frozenset(extensions.get("required_scopes", "").split()),
            required_roles=frozenset(extensions.get("required_roles", "").split()),
            client=client if client in CLIENT_KINDS else "auto",
            same_site_required=extensions.get("same_site", "").strip().lower() == "required",
            credential_kinds=kinds,
            required_amr=tuple(dict.fromkeys(extensions.get("required_amr", "").split())),
            max_auth_age=max_auth_age,
        )

    def check(self, session: Session, now: float | None = None) -> None:
        """``now``: Unix seconds (default: the time now).

        :raises Forbidden: the route refuses the session's kind (``credential_kind_refused``;
            also when its ``credentials`` value is invalid), a route value cannot be read
            (``route_misconfigured``), or the session lacks a required scope or every
            required role.
        :raises InsufficientAuthentication: the session's ``amr`` lacks a ``required_amr``
            value, or its latest authentication is older than ``max_auth_age``
            (RFC 9470: the client authenticates again).
        """
        if self.max_auth_age == -1:
            raise Forbidden(Reason.ROUTE_MISCONFIGURED, "the route's max_auth_age is invalid")
        if self.credential_kinds is None:
            raise Forbidden(
                Reason.CREDENTIAL_KIND_REFUSED, "the route's credentials are misconfigured"
            )
        if session.kind not in self.credential_kinds:
            raise Forbidden(
                Reason.CREDENTIAL_KIND_REFUSED,
                f"this route does not accept {session.kind} credentials",
            )
        missing = self.required_scopes.difference(session.scopes)
        if missing:
            raise Forbidden(
                Reason.INSUFFICIENT_SCOPE,
                "the session lacks a required scope",
                required_scope=" ".join(sorted(self.required_scopes)),
            )
        if self.required_roles and self.required_roles.isdisjoint(session.roles):
            raise Forbidden(Reason.INSUFFICIENT_ROLE, "the session lacks a required role")
        self._check_authentication(session, time.time() if now is None else now)

    def _check_authentication(self, session: Session, now: float) -> None:
        missing = [value for value in self.required_amr if value not in session.amr]
        too_old = self.max_auth_age is not None and (
            now - session.authenticated_at > self.max_auth_age
        )
        if missing or too_old:
            raise InsufficientAuthentication(
                "a stronger authentication is required" if missing
                else "a more recent authentication is required",
                acr_values=" ".join(self.required_amr),
                max_age=self.max_auth_age,
            )


def route_policy(extensions: Mapping[str, str]) -> Policy:
    """:meth:`Policy.from_context_extensions`, parsed once per distinct set of route settings
    (a :class:`Policy` is immutable: every Check of a route shares one)."""
    return _parsed(tuple(extensions.items()))


@lru_cache(maxsize=_ROUTE_CACHE_SIZE)
def _parsed(items: tuple[tuple[str, str], ...]) -> Policy:
    return Policy.from_context_extensions(dict(items))


def _max_auth_age(value: str | None) -> int | None:
    """The route's ``max_auth_age``: decimal seconds (0-31536000); absent or blank: no bound;
    anything else: -1 (the route refuses every request, logged once)."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    # the length first: int() refuses strings of over 4300 digits with a ValueError
    short = text.isascii() and text.isdigit() and len(text.lstrip("0")) <= 8
    if short and int(text) <= 31_536_000:
        return int(text)
    if text not in _reported and len(_reported) < _MAX_REPORTED:
        _reported.add(text)
        log.error("route configuration error: context_extensions max_auth_age=%r is not a "
                  "number of seconds; the route refuses every request", text[:200])
    return -1
