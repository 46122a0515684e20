"""Passkeys: the ``webauthn`` factor kind (WebAuthn Level 3 over py_webauthn).

A passkey is a discoverable credential (resident key) made with user verification required.
Its factor's ``data``: ``credential_id`` and ``public_key`` (COSE, base64url), ``sign_count``
(the authenticator's counter, WebAuthn §6.1.1), ``name`` (the user's label), ``attachment``
(what the browser reported at registration: ``platform``/``cross-platform``/``""``) and
``transports``; created and last used are the factor's own ``created_at``/``last_used_at``.
The user handle is the user name's UTF-8 bytes (see docs/authentication.md, 'Passkeys').

``amr`` (RFC 8176 §2): ``hwk`` for a roaming authenticator (``cross-platform``: a security
key held apart from the device), else ``swk`` (platform and synced passkeys, or attachment
unknown).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import Any

from webauthn import (
    generate_authentication_options,
    generate_registration_options,
    options_to_json,
    verify_authentication_response,
    verify_registration_response,
)
from webauthn.helpers import base64url_to_bytes, bytes_to_base64url
from webauthn.helpers.exceptions import WebAuthnException
from webauthn.helpers.structs import (
    AttestationConveyancePreference,
    AuthenticatorSelectionCriteria,
    PublicKeyCredentialDescriptor,
    ResidentKeyRequirement,
    UserVerificationRequirement,
)

from extauthz.login.mfa.factors import Factor, FactorRejected
from extauthz.login.mfa.kinds import Attempt

KIND = "webauthn"
TIMEOUT_MS = 60_000
NAME_LIMIT = 64
# what malformed input makes py_webauthn or the JSON parser raise
# RecursionError: JSON nested past the stack (a client's credential or its clientDataJSON)
_BAD_INPUT = (
    WebAuthnException, ValueError, TypeError, KeyError, AttributeError, RecursionError,
)


@dataclass(frozen=True)
class RelyingParty:
    """``id``: the relying party id (a domain, ``mfa.rp_id``); ``name``: shown by the
    authenticator; ``origins``: the page origins accepted, compared exactly."""

    id: str
    name: str
    origins: tuple[str, ...]


@dataclass(frozen=True)
class Answer:
    """What the server reads from a browser's credential JSON before verifying it:
    ``credential_id`` (base64url), ``challenge`` (base64url, from clientDataJSON),
    ``user`` (the user handle as a name; ``""`` if absent or not UTF-8)."""

    credential_id: str
    challenge: str
    user: str


def read_answer(response: str | dict[str, Any]) -> Answer | None:
    """The identifying parts of a ``PublicKeyCredential`` JSON, ``None`` if malformed.
    Nothing here is verified yet."""
    try:
        cred = json.loads(response) if isinstance(response, str) else response
        client_data = json.loads(base64url_to_bytes(cred["response"]["clientDataJSON"]))
        challenge, cred_id = client_data["challenge"], cred["id"]
        handle = cred["response"].get("userHandle") or ""
        user = base64url_to_bytes(handle).decode() if isinstance(handle, str) else ""
    except (*_BAD_INPUT, UnicodeDecodeError):
        return None
    if not isinstance(challenge, str) or not isinstance(cred_id, str):
        return None
    return Answer(cred_id, challenge, user)


def user_handle(user: str) -> bytes:
    return user.encode()


class WebAuthnKind:
    """The ``webauthn`` factor kind (:class:`~extauthz.login.mfa.kinds.FactorKind`)."""

    name = KIND
    amr = ("swk",)  # the usual case; a factor's own: amr_of_factor

    def __init__(self, rp: RelyingParty) -> None:
        self.rp = rp

    @staticmethod
    def amr_of_factor(factor: Factor) -> tuple[str, ...]:
        """``("hwk",)`` for a roaming authenticator, else ``("swk",)`` (RFC 8176 §2)."""
        return ("hwk",) if factor.data.get("attachment") == "cross-platform" else ("swk",)

    # -- registration ------------------------------------------------------------------------

    def registration_options(
        self, user: str, challenge: str, existing: list[Factor]
    ) -> dict[str, Any]:
        """``PublicKeyCredentialCreationOptions`` as JSON (WebAuthn §5.4): a discoverable
        credential, user verification required, no attestation, ``user``'s passkeys
        excluded. ``challenge``: base64url.

        :raises ValueError: ``user`` does not fit a user handle (64 bytes).
        """
        if len(user_handle(user)) > 64:
            raise ValueError("a user name over 64 bytes cannot be a user handle")
        options = generate_registration_options(
            rp_id=self.rp.id, rp_name=self.rp.name, user_name=user, user_id=user_handle(user),
            challenge=base64url_to_bytes(challenge), timeout=TIMEOUT_MS,
            attestation=AttestationConveyancePreference.NONE,
            authenticator_selection=AuthenticatorSelectionCriteria(
                resident_key=ResidentKeyRequirement.REQUIRED,
                user_verification=UserVerificationRequirement.REQUIRED,
            ),
            exclude_credentials=self._descriptors(existing),
        )
        out: dict[str, Any] = json.loads(options_to_json(options))
        return out

    def register(
        self, factor_id: str, response: str | dict[str, Any], challenge: str, name: str,
        now: float,
    ) -> Factor:
        """A confirmed factor from a ``navigator.credentials.create()`` answer (WebAuthn
        §7.1: type, challenge, origin, rp id hash, user present and verified, algorithm).

        :raises FactorRejected: the answer does not verify (never saying why to the client).
        """
        try:
            done = verify_registration_response(
                credential=response, expected_challenge=base64url_to_bytes(challenge),
                expected_rp_id=self.rp.id, expected_origin=list(self.rp.origins),
                require_user_verification=True,
            )
            cred = json.loads(response) if isinstance(response, str) else response
            attachment = cred.get("authenticatorAttachment")
            transports = cred["response"].get("transports") or []
        except _BAD_INPUT:
            raise FactorRejected("registration does not verify") from None
        data = {
            "credential_id": bytes_to_base64url(done.credential_id),
            "public_key": bytes_to_base64url(done.credential_public_key),
            "sign_count": done.sign_count,
            "name": name.strip()[:NAME_LIMIT] or "passkey",
            "attachment": attachment if attachment in ("platform", "cross-platform") else "",
            "transports": [t for t in transports if isinstance(t, str)][:8],
        }
        return Factor(factor_id, KIND, now, True, data)

    # -- authentication ----------------------------------------------------------------------

    @staticmethod
    def _descriptors(factors: list[Factor]) -> list[PublicKeyCredentialDescriptor]:
        out = []
        for f in factors:
            cred_id = f.data.get("credential_id")
            if f.kind == KIND and isinstance(cred_id, str):
                out.append(PublicKeyCredentialDescriptor(id=base64url_to_bytes(cred_id)))
        return out

    def authentication_options(self, challenge: str, allow: list[Factor]) -> dict[str, Any]:
        """``PublicKeyCredentialRequestOptions`` as JSON (WebAuthn §5.5), user verification
        required. ``allow`` empty: any discoverable credential of this relying party (a
        sign-in with a passkey alone); else those passkeys (the second step)."""
        options = generate_authentication_options(
            rp_id=self.rp.id, challenge=base64url_to_bytes(challenge), timeout=TIMEOUT_MS,
            allow_credentials=self._descriptors(allow),
            user_verification=UserVerificationRequirement.REQUIRED,
        )
        out: dict[str, Any] = json.loads(options_to_json(options))
        return out

    def verify(self, factor: Factor, attempt: Attempt) -> Factor:
        """Check an assertion (``attempt.response``: the JSON of ``navigator.credentials
        .get()``) for ``factor`` against ``attempt.challenge`` (WebAuthn §7.2: type,
        challenge, origin, rp id hash, user present and verified, signature). The sign
        count must grow unless the authenticator keeps none (both 0; §6.1.1).

        :raises FactorRejected: another credential, another user's handle, no challenge,
            or the assertion does not verify.
        """
        answer = read_answer(attempt.response)
        stored_id, key = factor.data.get("credential_id"), factor.data.get("public_key")
        count = factor.data.get("sign_count", 0)
        if (answer is None or not attempt.challenge or not isinstance(key, str)
                or answer.credential_id != stored_id or not isinstance(count, int)):
            raise FactorRejected("not an assertion for this passkey")
        if answer.user and answer.user != attempt.user:
            raise FactorRejected("another user's passkey")
        try:
            done = verify_authentication_response(
                credential=attempt.response, expected_challenge=base64url_to_bytes(
                    attempt.challenge), expected_rp_id=self.rp.id,
                expected_origin=list(self.rp.origins), credential_public_key=base64url_to_bytes(
                    key), credential_current_sign_count=count, require_user_verification=True,
            )
        except _BAD_INPUT:
            raise FactorRejected("assertion does not verify") from None
        data = {**factor.data, "sign_count": done.new_sign_count}
        return replace(factor, data=data, last_used_at=attempt.now)
