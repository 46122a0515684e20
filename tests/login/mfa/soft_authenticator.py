"""A software WebAuthn authenticator for tests: an ES256 key (``cryptography``) making real
"none" attestations and assertions in the JSON shape browsers send, so py_webauthn verifies
them for real. Every field a test wants to get wrong (origin, rp id, challenge, counter) can
be given."""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

import cbor2
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from webauthn.helpers import base64url_to_bytes, bytes_to_base64url

UP, UV, AT = 0x01, 0x04, 0x40


class SoftAuthenticator:
    """One discoverable credential for ``rp_id``; the browser part reports ``origin`` and
    ``attachment``. ``counter_step`` 0: an authenticator that keeps no counter."""

    def __init__(self, rp_id: str, origin: str, *, attachment: str = "platform",
                 counter_step: int = 1) -> None:
        self.rp_id, self.origin, self.attachment = rp_id, origin, attachment
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.credential_id = os.urandom(16)
        self.counter, self.counter_step = 0, counter_step
        self.user_handle = b""

    @property
    def id(self) -> str:
        return bytes_to_base64url(self.credential_id)

    def _cose_key(self) -> bytes:
        numbers = self.key.public_key().public_numbers()
        return bytes(cbor2.dumps({1: 2, 3: -7, -1: 1, -2: numbers.x.to_bytes(32, "big"),
                                  -3: numbers.y.to_bytes(32, "big")}))

    def _client_data(self, kind: str, challenge: str, origin: str | None) -> bytes:
        return json.dumps({"type": kind, "challenge": challenge,
                           "origin": origin or self.origin, "crossOrigin": False}).encode()

    def _rp_hash(self, rp_id: str | None) -> bytes:
        return hashlib.sha256((rp_id or self.rp_id).encode()).digest()

    def create(self, options: dict[str, Any], *, origin: str | None = None,
               rp_id: str | None = None, flags: int = UP | UV | AT) -> dict[str, Any]:
        """``navigator.credentials.create()``'s answer to ``options`` (the server's JSON)."""
        self.user_handle = base64url_to_bytes(options["user"]["id"])
        client_data = self._client_data("webauthn.create", options["challenge"], origin)
        auth_data = (self._rp_hash(rp_id) + bytes([flags]) + self.counter.to_bytes(4, "big")
                     + bytes(16) + len(self.credential_id).to_bytes(2, "big")
                     + self.credential_id + self._cose_key())
        attestation = cbor2.dumps({"fmt": "none", "attStmt": {}, "authData": auth_data})
        return {
            "id": self.id, "rawId": self.id, "type": "public-key",
            "authenticatorAttachment": self.attachment, "clientExtensionResults": {},
            "response": {"clientDataJSON": bytes_to_base64url(client_data),
                         "attestationObject": bytes_to_base64url(attestation),
                         "transports": ["internal"]},
        }

    def get(self, options: dict[str, Any], *, origin: str | None = None,
            rp_id: str | None = None, counter: int | None = None,
            flags: int = UP | UV) -> dict[str, Any]:
        """``navigator.credentials.get()``'s answer to ``options``; the counter grows by
        ``counter_step`` unless ``counter`` is given."""
        if counter is None:
            self.counter += self.counter_step
            counter = self.counter
        client_data = self._client_data("webauthn.get", options["challenge"], origin)
        auth_data = self._rp_hash(rp_id) + bytes([flags]) + counter.to_bytes(4, "big")
        signed = auth_data + hashlib.sha256(client_data).digest()
        signature = self.key.sign(signed, ec.ECDSA(hashes.SHA256()))
        return {
            "id": self.id, "rawId": self.id, "type": "public-key",
            "authenticatorAttachment": self.attachment, "clientExtensionResults": {},
            "response": {"clientDataJSON": bytes_to_base64url(client_data),
                         "authenticatorData": bytes_to_base64url(auth_data),
                         "signature": bytes_to_base64url(signature),
                         "userHandle": bytes_to_base64url(self.user_handle)},
        }
