"""WebAuthn ceremonies waiting for the browser's answer: a registration from the account area
or a sign-in with a passkey alone. Each is a short-lived record under the SHA-256 of its
random challenge (the challenge itself is never stored or logged), taken (read and deleted at
once) when the answer comes, so a challenge serves one ceremony only (WebAuthn §13.4.3). The
second step after a password signs the pending login's challenge instead
(:mod:`extauthz.login.mfa.pending`)."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Protocol

CHALLENGE_SECONDS = 120  # the options' timeout is 60 s; a little slack for the round trip
PURPOSES = ("register", "sign-in", "step-up")


def challenge_key(challenge: str) -> str:
    """The record key of a base64url ``challenge``: its SHA-256, hex."""
    return hashlib.sha256(challenge.encode()).hexdigest()


@dataclass(frozen=True)
class Ceremony:
    """``purpose``: ``"register"`` (``sub`` adds a passkey; ``sid`` is the session it came
    from), ``"step-up"`` (the session ``sid`` of ``sub`` authenticates again) or
    ``"sign-in"`` (``sub`` empty: the user handle tells who); ``expires_at``: Unix seconds."""

    purpose: str
    sub: str
    expires_at: float
    sid: str = ""

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> Ceremony:
        """:raises ValueError: not a ceremony record."""
        try:
            r = json.loads(text)
            if r["purpose"] not in PURPOSES:
                raise ValueError("unknown purpose")
            return cls(str(r["purpose"]), str(r["sub"]), float(r["expires_at"]),
                       str(r.get("sid", "")))
        except (KeyError, TypeError, AttributeError, json.JSONDecodeError) as exc:
            raise ValueError(f"not a ceremony: {exc.__class__.__name__}") from None


class Ceremonies(Protocol):
    """Ceremonies by :func:`challenge_key`. Raise :class:`~extauthz.errors.StoreUnavailable`
    when the store cannot answer."""

    async def put(self, key: str, ceremony: Ceremony) -> None:
        """Store ``ceremony``; it disappears at ``ceremony.expires_at``."""

    async def take(self, key: str) -> Ceremony | None:
        """Read and delete at once: of two concurrent takes, one gets the record."""


class MemoryCeremonies:
    """Ceremonies in this process (tests, the in-memory deployment)."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._records: dict[str, Ceremony] = {}
        self._clock = clock

    async def put(self, key: str, ceremony: Ceremony) -> None:
        now = self._clock()
        for old in [k for k, c in self._records.items() if c.expires_at <= now]:
            del self._records[old]
        self._records[key] = ceremony

    async def take(self, key: str) -> Ceremony | None:
        found = self._records.pop(key, None)
        return found if found is not None and found.expires_at > self._clock() else None
