"""Factor secrets at rest: sealed with AES-256-GCM when a key is configured
(``mfa.secret_key_file``), else kept as they are, marked so (docs/authentication.md, 'Second
factors and step-up'). The associated data binds a sealed secret to its user and factor id: a
sealed value copied into another record does not open.
"""

from __future__ import annotations

import base64
import binascii
import os
import secrets

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

KEY_BYTES = 32
_SEALED = "aesgcm:"
_PLAIN = "plain:"


class SecretBox:
    """Seals and opens factor secrets. ``key``: 32 random bytes, or ``None`` (secrets are
    stored as they are, prefixed ``plain:``). A box with a key still opens ``plain:`` values
    (records written before the key was configured); a box without one cannot open sealed
    values (``ValueError``)."""

    def __init__(self, key: bytes | None = None) -> None:
        if key is not None and len(key) != KEY_BYTES:
            raise ValueError(f"the factor secret key must be {KEY_BYTES} bytes")
        self._aead = AESGCM(key) if key is not None else None

    @property
    def seals(self) -> bool:
        return self._aead is not None

    def seal(self, secret: str, *, context: str) -> str:
        if self._aead is None:
            return _PLAIN + secret
        nonce = secrets.token_bytes(12)
        sealed = self._aead.encrypt(nonce, secret.encode(), context.encode())
        return _SEALED + base64.urlsafe_b64encode(nonce + sealed).decode()

    def open(self, stored: str, *, context: str) -> str:
        """:raises ValueError: not a value this box wrote (never says more)."""
        if stored.startswith(_PLAIN):
            return stored[len(_PLAIN):]
        if not stored.startswith(_SEALED) or self._aead is None:
            raise ValueError("a sealed factor secret and no key to open it")
        try:
            raw = base64.urlsafe_b64decode(stored[len(_SEALED):])
            return self._aead.decrypt(raw[:12], raw[12:], context.encode()).decode()
        except (binascii.Error, InvalidTag, UnicodeDecodeError):
            raise ValueError("a factor secret that does not open with this key") from None


def load_key(path: str) -> bytes:
    """The key in ``path``: 64 hex digits or the base64 of 32 bytes (surrounding white space
    ignored). :raises ValueError: a file that holds no such key (``OSError`` propagates)."""
    with open(path, encoding="ascii") as f:
        text = f.read().strip()
    for decode in (bytes.fromhex, base64.b64decode, base64.urlsafe_b64decode):
        try:
            key = decode(text)
        except (ValueError, binascii.Error):
            continue
        if len(key) == KEY_BYTES:
            return key
    raise ValueError(f"{path}: expected {KEY_BYTES} bytes as hex or base64")


def new_key() -> str:
    """A fresh key as hex, for ``mfa.secret_key_file``."""
    return os.urandom(KEY_BYTES).hex()
