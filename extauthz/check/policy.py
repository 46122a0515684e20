"""Per-route requirements, carried by Envoy ``context_extensions``
(``ExtAuthzPerRoute.check_settings.context_extensions`` in the route configuration):
``required_scopes``, ``required_roles``, ``client`` and ``same_site``. What each key means, and
that routes without authentication are configured in Envoy, never guessed here from paths:
README.md, 'Putting it in front of your services'.
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
