"""Opaque access tokens: mint, shape check and hash.

Shape (53 ASCII characters)::

    xat_ <43 base62 characters: 256 random bits> <6 base62 characters: CRC32 of the rest>

The CRC32 checksum lets the shape check reject typos and guessed tokens without a store
round trip; it adds no secrecy. The token itself is never stored, logged or used as a key:
the store is keyed by :func:`token_hash` (SHA-256, hex), logs use :func:`log_id`.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import zlib

PREFIX = "xat_"
_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_BODY_LEN = 43  # 62**43 > 2**256
_CHECK_LEN = 6  # 62**6 > 2**32
TOKEN_LENGTH = len(PREFIX) + _BODY_LEN + _CHECK_LEN
_SHAPE = re.compile(rf"^{PREFIX}[0-9A-Za-z]{{{_BODY_LEN + _CHECK_LEN}}}$")


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


def mint_token() -> str:
    """Return a new opaque access token carrying 256 bits from :mod:`secrets`."""
    head = PREFIX + _base62(int.from_bytes(secrets.token_bytes(32), "big"), _BODY_LEN)
    return head + _checksum(head)


def has_token_shape(candidate: str) -> bool:
    """True when ``candidate`` has the prefix, length, alphabet and a matching checksum."""
    if len(candidate) != TOKEN_LENGTH or not _SHAPE.match(candidate):
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
