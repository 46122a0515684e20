"""Opaque access tokens: mint, shape check and hash.

Shape (53 ASCII characters)::

    xat_ <43 base62 characters: 256 random bits> <6 base62 characters: CRC32 of the rest>

The prefix says what the token is: ``xat_`` an access token (a login session's, or one issued
to an OAuth client), ``xak_`` an API key, ``xrt_`` an OAuth refresh token, ``xpl_`` a login
waiting for its second factor. A token is only ever
accepted where its prefix belongs (:func:`has_token_shape` takes the expected prefix).

The CRC32 checksum lets the shape check reject typos and guessed tokens without a store
round trip; it adds no secrecy. The token itself is never stored, logged or used as a key:
the store is keyed by :func:`token_hash` (SHA-256, hex), logs use :func:`log_id`.

A rotated token's successor is kept in the store only sealed (:func:`seal_successor`, AES-256-GCM
under a key derived from the *old* token): whoever presents the old token during the grace can
learn the new one; whoever can read the store cannot.
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
import zlib

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

PREFIX = "xat_"
"""Access tokens: login sessions and the access tokens issued to OAuth clients."""
API_KEY_PREFIX = "xak_"
"""API keys (a distinct prefix so that secret scanners can tell them apart)."""
REFRESH_TOKEN_PREFIX = "xrt_"
"""OAuth refresh tokens (RFC 6749 §1.5): never accepted by the Check."""
PENDING_LOGIN_PREFIX = "xpl_"
"""A login waiting for its second factor (its own cookie): never accepted by the Check."""
PREFIXES = (PREFIX, API_KEY_PREFIX, REFRESH_TOKEN_PREFIX, PENDING_LOGIN_PREFIX)
SESSION_PREFIXES = (PREFIX, API_KEY_PREFIX)
"""The tokens that name a session record: the store may be asked about these only."""
_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_BODY_LEN = 43  # 62**43 > 2**256
_CHECK_LEN = 6  # 62**6 > 2**32
TOKEN_LENGTH = len(PREFIX) + _BODY_LEN + _CHECK_LEN
_BODY = re.compile(rf"[0-9A-Za-z]{{{_BODY_LEN + _CHECK_LEN}}}")


def _base62(value: int, width: int) -> str:
    chars = []
    for _ in range(width):
        value, digit = divmod(value, 62)
        chars.append(_ALPHABET[digit])
    if value:
        raise ValueError("value does not fit the width")
    return "".join(reversed(chars))


def _checksum(head: str) -> str:
    return _base62(zlib.crc32(head.encode("ascii")), _CHECK_LEN)


def mint_token(prefix: str = PREFIX) -> str:
    """Return a new opaque token carrying 256 bits from :mod:`secrets`, with ``prefix`` (one
    of :data:`PREFIXES`; :raises ValueError: another)."""
    if prefix not in PREFIXES:
        raise ValueError(f"unknown token prefix {prefix!r}")
    head = prefix + _base62(int.from_bytes(secrets.token_bytes(32), "big"), _BODY_LEN)
    return head + _checksum(head)


def has_token_shape(candidate: str, prefix: str | tuple[str, ...] = PREFIX) -> bool:
    """True when ``candidate`` has ``prefix`` (or one of several), the length, the alphabet
    and a matching checksum."""
    if (
        len(candidate) != TOKEN_LENGTH
        or not candidate.startswith(prefix)
        or not _BODY.fullmatch(candidate, len(PREFIX))  # every prefix has four characters
    ):
        return False
    head, check = candidate[:-_CHECK_LEN], candidate[-_CHECK_LEN:]
    return secrets.compare_digest(_checksum(head), check)


def token_hash(token: str) -> str:
    """The store key part for ``token``: SHA-256 of the token, 64 hex characters."""
    return hashlib.sha256(token.encode("ascii")).hexdigest()


def log_id(value: str) -> str:
    """A short, non-reversible id for correlating a credential in logs (12 hex characters).

    Derived with a different prefix from :func:`token_hash`, so a log line never reveals
    a store key either.
    """
    return hashlib.sha256(b"log:" + value.encode("utf-8", "replace")).hexdigest()[:12]


_SEAL_CONTEXT = b"extauthz successor v1"
_NONCE_BYTES = 12


def _seal_key(old_token: str) -> bytes:
    # a different derivation from token_hash(): the store key never opens a seal
    return hashlib.sha256(b"seal:" + old_token.encode("ascii")).digest()


def seal_successor(old_token: str, new_token: str) -> str:
    """``new_token`` encrypted (AES-256-GCM, random 96-bit nonce, ``old_token``'s derived key,
    bound to a fixed context) as URL-safe base64 without padding, 108 characters.

    Only a holder of ``old_token`` can open it (:func:`open_successor`).
    """
    nonce = secrets.token_bytes(_NONCE_BYTES)
    sealed = AESGCM(_seal_key(old_token)).encrypt(nonce, new_token.encode("ascii"), _SEAL_CONTEXT)
    return base64.urlsafe_b64encode(nonce + sealed).rstrip(b"=").decode("ascii")


def open_successor(old_token: str, sealed: str) -> str | None:
    """The token :func:`seal_successor` sealed for ``old_token``; ``None`` when ``sealed`` is
    empty, malformed, was sealed for another token, or does not hold a token of the product's
    shape. Never raises."""
    if not sealed:
        return None
    try:
        raw = base64.urlsafe_b64decode(sealed + "=" * (-len(sealed) % 4))
        plain = AESGCM(_seal_key(old_token)).decrypt(
            raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], _SEAL_CONTEXT
        )
        token = plain.decode("ascii")
    except (ValueError, InvalidTag, UnicodeError):
        return None
    return token if has_token_shape(token) else None
