"""Minting the JWT that carries the session toward upstream services (RFC 7519).

Claims: ``iss``, ``aud``, ``sub``, ``sid``, ``iat``, ``nbf``, ``exp``, ``jti``,
``auth_time`` (session creation), ``scope`` (space-separated, as in RFC 8693 §4.2),
``roles`` and ``data`` (the session data). The JOSE header carries ``kid`` (RFC 7515
§4.1.4), the RFC 7638 thumbprint of the signing key.

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

from extauthz.keys.keyring import KeyRing
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
        [session.sub, list(session.scopes), list(session.roles), dict(session.data)],
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(material.encode()).hexdigest()


class JwtMinter:
    """Signs session JWTs with the key ring's newest key. Times are seconds."""

    def __init__(
        self,
        keyring: KeyRing,
        *,
        issuer: str,
        audience: str,
        lifetime_seconds: int = 300,
        reuse_min_remaining_fraction: float = 0.5,
        max_cached: int = 100_000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.keyring = keyring
        self.issuer = issuer
        self.audience = audience
        self.lifetime = lifetime_seconds
        self._min_remaining = lifetime_seconds * reuse_min_remaining_fraction
        self._max_cached = max_cached
        self._clock = clock
        self._cache: OrderedDict[str, _Minted] = OrderedDict()

    def mint(self, session: Session) -> str:
        """A compact JWS for ``session``, from the cache when still fresh."""
        now = self._clock()
        key = self.keyring.signing_key
        cached = self._cache.get(session.sid)
        fingerprint = ""
        if (
            cached is not None
            and cached.kid == key.kid
            and cached.exp - now >= self._min_remaining
        ):
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
        iat = int(now)
        # a JWT never outlives the session it carries
        exp = min(iat + self.lifetime, int(session.expires_at))
        claims = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": session.sub,
            "sid": session.sid,
            "iat": iat,
            "nbf": iat,
            "exp": exp,
            "jti": secrets.token_urlsafe(16),
            "auth_time": int(session.created_at),
            "scope": " ".join(session.scopes),
            "roles": list(session.roles),
            "data": dict(session.data),
        }
        token = jwt.encode(
            claims, key.private_key, algorithm=key.algorithm, headers={"kid": key.kid}
        )
        self._cache[session.sid] = _Minted(
            token, exp, fingerprint or _fingerprint(session), key.kid, session.version
        )
        self._cache.move_to_end(session.sid)
        while len(self._cache) > self._max_cached:
            self._cache.popitem(last=False)
        return token

    def forget(self, sid: str) -> None:
        """Drop the cached JWT of session ``sid`` (after revocation or change)."""
        self._cache.pop(sid, None)
