"""Per-route requirements, carried by Envoy ``context_extensions``
(``ExtAuthzPerRoute.check_settings.context_extensions`` in the route configuration).

Keys read (others are ignored; they may belong to another filter):

``required_scopes``  space-separated; the session must hold **every** one (403
                     ``insufficient_scope`` otherwise, RFC 6750 §3.1).
``required_roles``   space-separated; the session must hold **at least one** (403).
``client``           ``browser``, ``api`` or ``auto`` (default): how denials look. ``api``
                     never redirects; ``browser`` redirects GET/HEAD to the login page;
                     ``auto`` redirects GET/HEAD navigations that accept ``text/html``.
``same_site``        ``required``: a cookie-authenticated request with an unsafe method
                     (POST, PUT, PATCH, DELETE, ...) must come from the same site
                     (:mod:`extauthz.login.csrf`), else 403 ``cross_site_request``. Anything else
                     (default): no such check.

Routes that need no authentication are configured in Envoy (ext_authz disabled per route),
never guessed here from paths.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from extauthz.errors import Forbidden, Reason
from extauthz.store.model import Session

CLIENT_KINDS = ("auto", "browser", "api")


@dataclass(frozen=True)
class Policy:
    required_scopes: frozenset[str] = frozenset()
    required_roles: frozenset[str] = frozenset()
    client: str = "auto"
    same_site_required: bool = False

    @classmethod
    def from_context_extensions(cls, extensions: Mapping[str, str]) -> Policy:
        """Parse the route's settings. An unknown ``client`` value falls back to ``auto``,
        which changes only how a denial looks, never whether a request is allowed."""
        client = extensions.get("client", "auto").strip().lower()
        return cls(
            required_scopes=frozenset(extensions.get("required_scopes", "").split()),
            required_roles=frozenset(extensions.get("required_roles", "").split()),
            client=client if client in CLIENT_KINDS else "auto",
            same_site_required=extensions.get("same_site", "").strip().lower() == "required",
        )

    def check(self, session: Session) -> None:
        """:raises Forbidden: the session lacks a required scope or every required role."""
        missing = self.required_scopes.difference(session.scopes)
        if missing:
            raise Forbidden(
                Reason.INSUFFICIENT_SCOPE,
                "the session lacks a required scope",
                required_scope=" ".join(sorted(self.required_scopes)),
            )
        if self.required_roles and self.required_roles.isdisjoint(session.roles):
            raise Forbidden(Reason.INSUFFICIENT_ROLE, "the session lacks a required role")
