"""Opaque access tokens: mint, shape check and hash; the hash tag of a session's store keys.

Shapes (ASCII)::

    xat_ <4 base62: tag> <43 random base62: 256 bits> <6 base62: CRC32 of the rest>   57 chars
    xat_ <43 random base62: 256 bits> <6 base62: CRC32 of the rest>                   53 chars

A session's tokens carry its **tag** (:func:`subject_tag`, 4 base62 characters of a hash of its
``sub``; a session id carries it too, :func:`mint_sid`), so that every Redis key of the session
shares one hash tag ``{tag}`` (one Redis Cluster slot; https://redis.io/docs/latest/operate/oss_and_stack/reference/cluster-spec/#hash-tags)
and a lookup computes the key from the token alone. The tag is no secret (the holder of a token
knows its subject) and takes nothing from the 256 random bits. Tokens of the older, untagged
shape (issued before tags, and ``xrt_``/``xpl_`` tokens, which name no session) still pass the
shape check; their hash has no tag (:func:`hash_tag`), and the store keeps their sessions under
the untagged keys.

The prefix says what the token is: ``xat_`` an access token (a login session's, or one issued
to an OAuth client), ``xak_`` an API key, ``xrt_`` an OAuth refresh token, ``xpl_`` a login
waiting for its second factor. A token is only ever
accepted where its prefix belongs (:func:`has_token_shape` takes the expected prefix).

The CRC32 checksum lets the shape check reject typos and guessed tokens without a store
round trip; it adds no secrecy. The token itself is never stored, logged or used as a key:
the store is keyed by :func:`token_hash` (SHA-256), logs use :func:`log_id`.

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
TAG_LENGTH = 4
"""Characters of a tag (62**4 = 14.8 million tags: far more than Redis Cluster's 16,384 slots)."""
TOKEN_LENGTH = len(PREFIX) + _BODY_LEN + _CHECK_LEN
"""The untagged shape's length (53)."""
TAGGED_TOKEN_LENGTH = TOKEN_LENGTH + TAG_LENGTH
"""The tagged shape's length (57): what :func:`mint_token` issues with a tag."""
_BODY = re.compile(rf"[0-9A-Za-z]{{{_BODY_LEN + _CHECK_LEN}}}")
_TAGGED_BODY = re.compile(rf"[0-9A-Za-z]{{{TAG_LENGTH + _BODY_LEN + _CHECK_LEN}}}")
_TAG = re.compile(rf"[0-9A-Za-z]{{{TAG_LENGTH}}}")
_SID_RANDOM_BYTES = 16
SID_SEPARATOR = "-"
"""Between a session id's tag and its random part (``.`` in sids minted before slot indexes:
the store keeps their index entries where they were, store/redis/keys.py)."""
TAG_INDEX_SID_SEPARATOR = "."
"""The separator of sids indexed by tag (``store.session_index = "tag"``: what the version
before slot indexes mints and reads)."""
_TAGGED_SID = re.compile(rf"[0-9A-Za-z]{{{TAG_LENGTH}}}[.-][0-9A-Za-z_-]{{22}}")
_HASH_SEPARATOR = "."
_TAGGED_HASH = re.compile(rf"[0-9A-Za-z]{{{TAG_LENGTH}}}\.[0-9A-Za-z_-]{{43}}")


# a random byte below 248 (4 * 62) names an alphabet character (its value modulo 62, every
# character equally likely); the 8 bytes above are dropped (rejection sampling, so no bias)
_ACCEPTED_BELOW = 256 - 256 % len(_ALPHABET)
_RANDOM_CHARACTER = bytes(
    ord(_ALPHABET[b % len(_ALPHABET)]) if b < _ACCEPTED_BELOW else 0 for b in range(256)
)
_REJECTED = bytes(range(_ACCEPTED_BELOW, 256))
# random bytes drawn per attempt at a body: 43 are needed, 2 of these 64 are dropped on average
_BODY_DRAW = 64


def _random_body() -> str:
    """``_BODY_LEN`` characters, each uniform over the alphabet, from :mod:`secrets`
    (43 × log2 62 = 256.03 bits)."""
    while True:
        kept = secrets.token_bytes(_BODY_DRAW).translate(_RANDOM_CHARACTER, _REJECTED)
        if len(kept) >= _BODY_LEN:  # fails for one draw in about 10^17
            return kept[:_BODY_LEN].decode("ascii")


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


def subject_tag(sub: str) -> str:
    """The tag of every session of ``sub``: 4 base62 characters of SHA-256 of ``sub``
    (UTF-8), so that a subject's sessions share one Redis Cluster slot."""
    digest = hashlib.sha256(b"tag:" + sub.encode("utf-8", "surrogatepass")).digest()
    return _base62(int.from_bytes(digest[:8], "big") % 62**TAG_LENGTH, TAG_LENGTH)


def mint_token(prefix: str = PREFIX, *, tag: str | None = None) -> str:
    """Return a new opaque token carrying 256 bits from :mod:`secrets` (43 characters drawn
    uniformly from the alphabet), with ``prefix`` (one of :data:`PREFIXES`) and, given one,
    ``tag`` (:func:`subject_tag`): 57 characters, else the untagged 53.

    :raises ValueError: an unknown prefix, or a tag that is not 4 base62 characters.
    """
    if prefix not in PREFIXES:
        raise ValueError(f"unknown token prefix {prefix!r}")
    if tag is not None and not _TAG.fullmatch(tag):
        raise ValueError("a tag is 4 base62 characters")
    head = prefix + (tag or "") + _random_body()
    return head + _checksum(head)


def has_token_shape(candidate: str, prefix: str | tuple[str, ...] = PREFIX) -> bool:
    """True when ``candidate`` has ``prefix`` (or one of several), one of the two lengths,
    the alphabet and a matching checksum."""
    if len(candidate) == TOKEN_LENGTH:
        body = _BODY
    elif len(candidate) == TAGGED_TOKEN_LENGTH:
        body = _TAGGED_BODY
    else:
        return False
    if not candidate.startswith(prefix) or not body.fullmatch(candidate, len(PREFIX)):
        return False  # every prefix has four characters
    head, check = candidate[:-_CHECK_LEN], candidate[-_CHECK_LEN:]
    return secrets.compare_digest(_checksum(head), check)


def token_tag(token: str) -> str | None:
    """The tag of a token of the tagged shape (checked: :func:`has_token_shape`), else ``None``."""
    tag = token[len(PREFIX) : len(PREFIX) + TAG_LENGTH]
    # any 57 characters reach token_hash (an OAuth code): never a "{" or ":" into a key
    return tag if len(token) == TAGGED_TOKEN_LENGTH and _TAG.fullmatch(tag) else None


def token_hash(token: str) -> str:
    """The store key part for ``token``, SHA-256 of the token: for a tagged token its tag, a
    dot and the digest in URL-safe base64 without padding (48 characters,
    ``"Ab3d.<43 chars>"``); for an untagged one the digest in hex (64 characters)."""
    # UTF-8 is ASCII's bytes for every token; other text (a hostile OAuth code) hashes too
    digest = hashlib.sha256(token.encode("utf-8", "surrogatepass"))
    tag = token_tag(token)
    if tag is None:
        return digest.hexdigest()
    encoded = base64.urlsafe_b64encode(digest.digest()).rstrip(b"=").decode("ascii")
    return tag + _HASH_SEPARATOR + encoded


def hash_tag(token_hash: str) -> str | None:
    """The tag a :func:`token_hash` carries; ``None`` for the hash of an untagged token (keys
    without a hash tag: on Redis Cluster they land in slots of their own)."""
    return token_hash[:TAG_LENGTH] if _TAGGED_HASH.fullmatch(token_hash) else None


def mint_sid(tag: str | None, *, separator: str = SID_SEPARATOR) -> str:
    """A new session id: ``tag``, ``separator`` (a dash, :data:`SID_SEPARATOR`, or a dot,
    :data:`TAG_INDEX_SID_SEPARATOR`: indexed by tag, as before slot indexes) and 128 random
    bits as URL-safe base64 (27 characters); without a tag only the random part (22, the
    shape of sessions from before tags).

    :raises ValueError: another separator.
    """
    if separator not in (SID_SEPARATOR, TAG_INDEX_SID_SEPARATOR):
        raise ValueError(f"a sid's separator is '-' or '.', not {separator!r}")
    random_part = secrets.token_urlsafe(_SID_RANDOM_BYTES)
    return random_part if tag is None else tag + separator + random_part


def sid_tag(sid: str) -> str | None:
    """The tag a session id from :func:`mint_sid` carries (after it a dash, or a dot in sids
    minted before slot indexes), ``None`` for any other string."""
    return sid[:TAG_LENGTH] if _TAGGED_SID.fullmatch(sid) else None


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
