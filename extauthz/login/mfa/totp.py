"""One-time codes from an authenticator app: TOTP (RFC 6238) over HMAC-SHA1 (RFC 4226), six
digits, 30-second steps, one step of clock drift either way. A code is accepted once: the
factor remembers the last time-step used (``data.last_step``) and accepts only later ones,
written by compare-and-set (:meth:`~extauthz.login.mfa.factors.FactorStore.change`).
Enrolment shows the ``otpauth://`` URI as a QR code drawn here as inline SVG (segno), and the
secret in text. segno is imported by :meth:`TotpKind.qr_svg`, on the first enrolment: a node
that enrols nobody does not carry it (about 1 MiB per process).
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import replace

import pyotp

from extauthz.login.mfa.factors import Factor, FactorRejected
from extauthz.login.mfa.kinds import Attempt
from extauthz.login.mfa.sealing import SecretBox

KIND = "totp"
DIGITS = 6
STEP_SECONDS = 30
DRIFT_STEPS = 1


def _context(user: str, factor_id: str) -> str:
    return f"totp:{user}:{factor_id}"


class TotpKind:
    """The ``totp`` factor kind (:class:`~extauthz.login.mfa.kinds.FactorKind`). ``box``
    seals secrets at rest; ``issuer`` names the service in the authenticator app."""

    name = KIND
    amr = ("otp",)

    def __init__(self, box: SecretBox, *, issuer: str = "extauthz") -> None:
        self.box = box
        self.issuer = issuer

    def new_factor(self, user: str, now: float) -> tuple[Factor, str]:
        """An unconfirmed factor with a fresh 160-bit secret, and the secret (base32, to show
        once and put into the QR code)."""
        secret = pyotp.random_base32(32)
        factor_id = secrets.token_urlsafe(12)
        sealed = self.box.seal(secret, context=_context(user, factor_id))
        return Factor(factor_id, KIND, now, False, {"secret": sealed, "last_step": -1}), secret

    def provisioning_uri(self, user: str, secret: str) -> str:
        """The ``otpauth://totp/...`` URI authenticator apps read (Google Authenticator's
        key-URI format)."""
        return pyotp.TOTP(secret, digits=DIGITS, interval=STEP_SECONDS).provisioning_uri(
            name=user, issuer_name=self.issuer
        )

    @staticmethod
    def qr_svg(uri: str) -> str:
        """The URI as an inline ``<svg>`` element (no script, no external image)."""
        import segno  # here only: enrolment is rare (module docstring)

        return str(segno.make(uri, error="m").svg_inline(scale=4, title="QR code"))

    @staticmethod
    def spaced(secret: str) -> str:
        """The secret in groups of four, easier to type."""
        return " ".join(secret[i : i + 4] for i in range(0, len(secret), 4))

    def secret_of(self, user: str, factor: Factor) -> str:
        """:raises ValueError: the stored secret does not open (another key, a corrupt record)."""
        stored = factor.data.get("secret")
        if not isinstance(stored, str):
            raise ValueError("a TOTP factor without a secret")
        return self.box.open(stored, context=_context(user, factor.id))

    def verify(self, factor: Factor, attempt: Attempt) -> Factor:
        code = attempt.response.strip().replace(" ", "")
        if len(code) != DIGITS or not code.isascii() or not code.isdigit():
            raise FactorRejected("not a code")
        last = factor.data.get("last_step", -1)
        last = last if isinstance(last, int) else -1
        now_step = int(attempt.now // STEP_SECONDS)
        try:
            totp = pyotp.TOTP(self.secret_of(attempt.user, factor), digits=DIGITS,
                              interval=STEP_SECONDS)
            for step in range(now_step - DRIFT_STEPS, now_step + DRIFT_STEPS + 1):
                if step > last and hmac.compare_digest(totp.generate_otp(step), code):
                    data = {**factor.data, "last_step": step}
                    return replace(factor, data=data, last_used_at=attempt.now)
        except ValueError:  # a secret that does not open or decode: no code is right
            raise FactorRejected("unreadable factor") from None
        raise FactorRejected("wrong or used code")

