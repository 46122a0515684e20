"""Who must have a second factor (``[mfa] mode``, ``required_roles``) and the amr values a
sign-in earns (RFC 8176 §2)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from extauthz.login.users import User

MODES = ("optional", "required", "roles")
FRESH_AUTH_SECONDS = 600


@dataclass(frozen=True)
class MfaPolicy:
    """``mode``: ``"optional"`` (users may enrol; who has a factor must use it),
    ``"required"`` (every user), ``"roles"`` (users holding one of ``required_roles``).
    ``fresh_auth_seconds``: how recent the latest authentication must be to change one's own
    factors (enrolment, new recovery codes)."""

    mode: str = "optional"
    required_roles: frozenset[str] = frozenset()
    fresh_auth_seconds: int = FRESH_AUTH_SECONDS

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mfa mode must be one of {', '.join(MODES)}")

    def requires(self, user: User) -> bool:
        """Whether ``user`` must sign in with a second factor (and enrol one first)."""
        if self.mode == "required":
            return True
        return self.mode == "roles" and not self.required_roles.isdisjoint(user.roles)


def amr_with(kinds_amr: Iterable[str], earlier: Iterable[str] = ("pwd",)) -> tuple[str, ...]:
    """``earlier`` plus a factor's values plus ``mfa`` (RFC 8176 §2: more than one factor),
    in order, without repeats."""
    return tuple(dict.fromkeys([*earlier, *kinds_amr, "mfa"]))
