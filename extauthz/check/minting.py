"""Minting the JWT that carries the session toward upstream services (RFC 7519).

Claims: ``iss``, ``aud``, ``sub``, ``sid``, ``iat``, ``nbf``, ``exp``, ``jti``,
``auth_time`` (the session's latest authentication, :attr:`Session.authenticated_at`),
``amr`` (RFC 8176 methods, when the session records them), ``scope`` (space-separated, as
in RFC 8693 §4.2), ``roles`` and ``data`` (the session data), ``auth_method`` (the
session's kind), ``client_id`` (an application's token, RFC 9068 §2.2) and ``key_id`` (an
API key's id, its ``sid``). The JOSE header carries ``kid`` (RFC 7515 §4.1.4), the RFC 7638
thumbprint of the signing key.
``iat`` and ``nbf`` are backdated by :data:`~extauthz.clock.JWT_BACKDATE_SECONDS` (the clock
contract, :mod:`extauthz.clock`); ``exp`` is ``lifetime_seconds`` after the node's real time.

A session whose JWT would exceed ``max_bytes`` is refused when it is created
(:meth:`JwtMinter.check_size`): upstream header limits (8 KiB is common) must hold it.

A minted JWT is cached per session and reused while at least
``reuse_min_remaining_fraction`` of its lifetime is left, the signing key is unchanged and
the session's claims are unchanged, so a busy session is not signed per request.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import jwt

from extauthz.clock import JWT_BACKDATE_SECONDS
from extauthz.keys.keyring import KeyRing, SigningKey
from extauthz.store.model import Session


@dataclass(frozen=True)
class _Minted:
    token: str
    exp: int
    fingerprint: str
    kid: str
    version: int


def _fingerprint(session: Session) -> str:
    material = json.dumps(
        [
            session.sub,
            list(session.scopes),
            list(session.roles),
            dict(session.data),
            list(session.amr),
            session.auth_time,
        ],
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(material.encode()).hexdigest()


class JwtTooLarge(ValueError):
    """A session whose JWT would be larger than the configured bound (``jwt.max_bytes``)."""


class JwtMinter:
    """Signs session JWTs with the key ring's newest key. Times are seconds; ``max_bytes``
    bounds the compact JWS (0: no bound)."""

    def __init__(
        self,
        keyring: KeyRing,
        *,
        issuer: str,
        audience: str,
        lifetime_seconds: int = 300,
        reuse_min_remaining_fraction: float = 0.5,
        max_cached: int = 100_000,
        max_bytes: int = 0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.keyring = keyring
        self.issuer = issuer
        self.audience = audience
        self.lifetime = lifetime_seconds
        self._min_remaining = lifetime_seconds * reuse_min_remaining_fraction
        self._max_cached = max_cached
        self.max_bytes = max_bytes
        self._clock = clock
        self._cache: OrderedDict[str, _Minted] = OrderedDict()

    def mint(self, session: Session) -> str:
        """A compact JWS for ``session``, from the cache when still fresh."""
        now = self._clock()
        key = self.keyring.signing_key
        cached = self._cache.get(session.sid)
        fingerprint = ""
        if cached is not None and cached.kid == key.kid and cached.exp - now >= self._min_remaining:
            # the same record version carries the same claims: skip the fingerprint
            if cached.version == session.version:
                self._cache.move_to_end(session.sid)
                return cached.token
            fingerprint = _fingerprint(session)
            if cached.fingerprint == fingerprint:
                self._cache[session.sid] = _Minted(
                    cached.token, cached.exp, fingerprint, cached.kid, session.version
                )
                self._cache.move_to_end(session.sid)
                return cached.token
        token, exp = self._sign(session, now, key)
        self._cache[session.sid] = _Minted(
            token, exp, fingerprint or _fingerprint(session), key.kid, session.version
        )
        self._cache.move_to_end(session.sid)
        while len(self._cache) > self._max_cached:
            self._cache.popitem(last=False)
        return token

    def _sign(self, session: Session, now: float, key: SigningKey) -> tuple[str, int]:
        # a JWT never outlives the session it carries
        exp = min(int(now) + self.lifetime, int(session.expires_at))
        # a verifier whose clock is behind ours by up to the contract's skew accepts it
        issued = int(now) - JWT_BACKDATE_SECONDS
        claims = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": session.sub,
            "sid": session.sid,
            "iat": issued,
            "nbf": issued,
            "exp": exp,
            "jti": secrets.token_urlsafe(16),
            "auth_time": int(session.authenticated_at),
            "scope": " ".join(session.scopes),
            "roles": list(session.roles),
            "data": dict(session.data),
            "auth_method": session.kind,
        }
        if session.amr:
            claims["amr"] = list(session.amr)  # RFC 8176 §1 (OpenID Connect Core §2)
        if session.client_id is not None:
            claims["client_id"] = session.client_id  # RFC 9068 §2.2
        if session.kind == "api_key":
            claims["key_id"] = session.sid  # the key's id in the admin API and the CLI
        token = jwt.encode(
            claims, key.private_key, algorithm=key.algorithm, headers={"kid": key.kid}
        )
        return token, exp

    def size(self, session: Session) -> int:
        """Bytes of the compact JWS this node would mint for ``session`` now (not cached)."""
        return len(self._sign(session, self._clock(), self.keyring.signing_key)[0])

    def check_size(self, session: Session) -> None:
        """Refuse a session whose JWT would exceed ``max_bytes`` (called before it is stored).

        :raises JwtTooLarge: with the size, the bound and what to cut.
        """
        if self.max_bytes <= 0:
            return
        size = self.size(session)
        if size > self.max_bytes:
            raise JwtTooLarge(
                f"the session's JWT would be {size} bytes, over jwt.max_bytes "
                f"({self.max_bytes}): carry fewer roles ({len(session.roles)}), scopes "
                f"({len(session.scopes)}) or less data"
            )

    def forget(self, sid: str) -> None:
        """Drop the cached JWT of session ``sid`` (after revocation or change)."""
        self._cache.pop(sid, None)
