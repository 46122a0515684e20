"""Recovery codes: ten single-use codes shown once at enrolment, for a user without their
authenticator. Each code is 16 characters of Crockford's base32 (80 random bits), shown as
``XXXX-XXXX-XXXX-XXXX``; the factor keeps only HMAC-SHA256 digests keyed by the user and the
factor id. A fast hash suffices (unlike passwords): 80 random bits cannot be searched from a
stolen digest, and the key makes every digest specific to its record. A used code's digest is
removed by compare-and-set, so a code works once.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import replace

from extauthz.login.mfa.factors import Factor, FactorRejected
from extauthz.login.mfa.kinds import Attempt

KIND = "recovery"
COUNT = 10
_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # Crockford: no I, L, O, U
_LENGTH = 16
_READ_AS = str.maketrans({"I": "1", "L": "1", "O": "0"})


def _normalised(code: str) -> str | None:
    text = code.strip().upper().replace("-", "").replace(" ", "").translate(_READ_AS)
    if len(text) != _LENGTH or any(c not in _ALPHABET for c in text):
        return None
    return text


def _digest(user: str, factor_id: str, code: str) -> str:
    key = f"recovery:{user}:{factor_id}".encode()
    return hmac.new(key, code.encode(), hashlib.sha256).hexdigest()


class RecoveryKind:
    """The ``recovery`` factor kind (:class:`~extauthz.login.mfa.kinds.FactorKind`)."""

    name = KIND
    amr = ("otp",)  # RFC 8176 has no value of its own for a printed one-time code

    def new_factor(self, user: str, now: float) -> tuple[Factor, list[str]]:
        """A confirmed factor with :data:`COUNT` fresh codes, and the codes (to show once)."""
        factor_id = secrets.token_urlsafe(12)
        raw = ["".join(secrets.choice(_ALPHABET) for _ in range(_LENGTH)) for _ in range(COUNT)]
        digests = [_digest(user, factor_id, code) for code in raw]
        shown = ["-".join(code[i : i + 4] for i in range(0, _LENGTH, 4)) for code in raw]
        return Factor(factor_id, KIND, now, True, {"digests": digests}), shown

    @staticmethod
    def remaining(factor: Factor) -> int:
        digests = factor.data.get("digests")
        return len(digests) if isinstance(digests, list) else 0

    def verify(self, factor: Factor, attempt: Attempt) -> Factor:
        code = _normalised(attempt.response)
        digests = factor.data.get("digests")
        if code is None or not isinstance(digests, list):
            raise FactorRejected("not a recovery code")
        mine = _digest(attempt.user, factor.id, code)
        left = [d for d in digests if not (isinstance(d, str) and hmac.compare_digest(d, mine))]
        if len(left) == len(digests):
            raise FactorRejected("wrong or used recovery code")
        return replace(factor, data={**factor.data, "digests": left}, last_used_at=attempt.now)
