"""Pending logins: a correct password whose second step (a code, or enrolment when policy
requires a factor) is still to come. A pending login is not a session: it lives in its own
short-lived record under the hash of its own token (prefix ``xpl_``, its own cookie), which
the Check never accepts, and it is taken (read and deleted at once) when the step succeeds,
so it serves one sign-in only.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Protocol

PENDING_SECONDS = 300
PURPOSES = ("login", "enrol")


@dataclass(frozen=True)
class PendingLogin:
    """``sub`` signed in with a password at ``created_at`` (Unix seconds) and has until
    ``expires_at`` for the next step; ``purpose``: ``"login"`` (enter a code) or ``"enrol"``
    (policy requires a factor the user does not have yet; ``factor_id`` names the unconfirmed
    one being set up); ``return_to``: a validated same-host path; ``challenge``: a random
    nonce for kinds that sign one (passkeys)."""

    sub: str
    purpose: str
    return_to: str
    created_at: float
    expires_at: float
    challenge: str
    factor_id: str = ""

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> PendingLogin:
        """:raises ValueError: not a pending-login record."""
        try:
            r = json.loads(text)
            if r["purpose"] not in PURPOSES:
                raise ValueError("unknown purpose")
            return cls(str(r["sub"]), str(r["purpose"]), str(r["return_to"]),
                       float(r["created_at"]), float(r["expires_at"]), str(r["challenge"]),
                       str(r.get("factor_id", "")))
        except (KeyError, TypeError, AttributeError, json.JSONDecodeError) as exc:
            raise ValueError(f"not a pending login: {exc.__class__.__name__}") from None


class PendingLogins(Protocol):
    """Pending logins by token hash. Raise :class:`~extauthz.errors.StoreUnavailable` when
    the store cannot answer."""

    async def put(self, token_hash: str, pending: PendingLogin) -> None:
        """Store ``pending``; it disappears at ``pending.expires_at``."""

    async def get(self, token_hash: str) -> PendingLogin | None:
        """The live pending login, or ``None``."""

    async def replace(self, token_hash: str, pending: PendingLogin) -> bool:
        """Overwrite an existing pending login (same expiry); ``False`` if it is gone."""

    async def take(self, token_hash: str) -> PendingLogin | None:
        """Read and delete at once: of two concurrent takes, one gets the record."""


class MemoryPendingLogins:
    """Pending logins in this process (tests, the in-memory deployment)."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._records: dict[str, PendingLogin] = {}
        self._clock = clock

    def _sweep(self) -> None:
        now = self._clock()
        for key in [k for k, p in self._records.items() if p.expires_at <= now]:
            del self._records[key]

    async def put(self, token_hash: str, pending: PendingLogin) -> None:
        self._sweep()
        self._records[token_hash] = pending

    async def get(self, token_hash: str) -> PendingLogin | None:
        self._sweep()
        return self._records.get(token_hash)

    async def replace(self, token_hash: str, pending: PendingLogin) -> bool:
        self._sweep()
        if token_hash not in self._records:
            return False
        self._records[token_hash] = pending
        return True

    async def take(self, token_hash: str) -> PendingLogin | None:
        self._sweep()
        return self._records.pop(token_hash, None)
