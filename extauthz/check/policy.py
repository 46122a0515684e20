"""Per-route requirements, carried by Envoy ``context_extensions``
(``ExtAuthzPerRoute.check_settings.context_extensions`` in the route configuration):
``required_scopes``, ``required_roles``, ``credentials``, ``client`` and ``same_site``. What each
key means, and that routes without authentication are configured in Envoy, never guessed here
from paths: README.md, 'Putting it in front of your services'.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

from extauthz.errors import Forbidden, Reason
from extauthz.store.model import SESSION_KINDS, Session

CLIENT_KINDS = ("auto", "browser", "api")
ALL_KINDS = frozenset(SESSION_KINDS)
# a route's credentials value is logged once per distinct bad value, in this many at most
_MAX_REPORTED = 64
_reported: set[str] = set()
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
        return cls(
            required_scopes=frozenset(extensions.get("required_scopes", "").split()),
            required_roles=frozenset(extensions.get("required_roles", "").split()),
            client=client if client in CLIENT_KINDS else "auto",
            same_site_required=extensions.get("same_site", "").strip().lower() == "required",
            credential_kinds=kinds,
        )

    def check(self, session: Session) -> None:
        """:raises Forbidden: the route refuses the session's kind (``credential_kind_refused``;
        also when its ``credentials`` value is invalid), or the session lacks a required scope
        or every required role."""
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
