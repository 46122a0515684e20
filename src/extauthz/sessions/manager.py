"""Session lifecycle on top of any :class:`~extauthz.sessions.model.SessionStore`:
creation, lookup with idle timeout and absolute expiry, sliding, revocation."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from extauthz import tokens
from extauthz.errors import Reason, Unauthenticated
from extauthz.sessions.model import Session, SessionStore

MAX_DATA_BYTES = 4096


def validate_session_data(data: Mapping[str, Any] | None) -> dict[str, Any]:
    """Session data must be a JSON object of at most 4 KiB when encoded.

    :raises ValueError: not an object, not JSON-serialisable, or too large.
    """
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise ValueError("session data must be a JSON object")
    try:
        encoded = json.dumps(dict(data), separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"session data is not JSON: {exc}") from None
    if len(encoded.encode()) > MAX_DATA_BYTES:
        raise ValueError(f"session data exceeds {MAX_DATA_BYTES} bytes")
    return dict(json.loads(encoded))


class SessionManager:
    """Creates and looks up sessions. Durations are seconds.

    The idle deadline slides on use, but the record is rewritten at most once per
    ``touch_interval`` seconds (default: a tenth of the idle timeout, at most 60 s), so a busy
    session does not cost a store write per request.
    """

    def __init__(
        self,
        store: SessionStore,
        *,
        idle_timeout: int,
        absolute_timeout: int,
        clock: Callable[[], float] = time.time,
        touch_interval: float | None = None,
    ) -> None:
        self.store = store
        self.idle_timeout = idle_timeout
        self.absolute_timeout = absolute_timeout
        self._clock = clock
        self._touch_interval = (
            touch_interval if touch_interval is not None else min(60.0, idle_timeout / 10)
        )

    async def create(
        self,
        sub: str,
        *,
        scopes: Iterable[str] = (),
        roles: Iterable[str] = (),
        data: Mapping[str, Any] | None = None,
    ) -> tuple[str, Session]:
        """Create a session for ``sub``; return ``(opaque token, session)``.

        The token is returned here once and never again.

        :raises ValueError: empty subject or bad session data.
        :raises StoreUnavailable: the store did not take the write (incl. ``WAIT`` failure).
        """
        if not sub or len(sub) > 256:
            raise ValueError("subject must be 1-256 characters")
        now = self._clock()
        session = Session(
            sid=secrets.token_urlsafe(16),
            sub=sub,
            created_at=now,
            last_seen=now,
            idle_timeout=self.idle_timeout,
            expires_at=now + self.absolute_timeout,
            scopes=tuple(dict.fromkeys(scopes)),
            roles=tuple(dict.fromkeys(roles)),
            data=validate_session_data(data),
        )
        token = tokens.mint_token()
        await self.store.create(tokens.token_hash(token), session)
        return token, session

    async def lookup(self, token: str) -> Session:
        """The live session for ``token``.

        :raises Unauthenticated: ``malformed_credential`` (shape), ``unknown_session`` (never
            existed, revoked, or dropped by the store) or ``session_expired``.
        :raises StoreUnavailable: the store could not answer.
        """
        if not tokens.has_token_shape(token):
            raise Unauthenticated(Reason.MALFORMED_CREDENTIAL, "not an access token")
        token_hash = tokens.token_hash(token)
        session = await self.store.get(token_hash)
        if session is None:
            raise Unauthenticated(Reason.UNKNOWN_SESSION, "unknown or revoked session")
        now = self._clock()
        if not session.is_alive(now):
            raise Unauthenticated(Reason.SESSION_EXPIRED, "session expired")
        if now - session.last_seen >= self._touch_interval:
            touched = session.touched(now)
            if not await self.store.touch(token_hash, touched):
                raise Unauthenticated(Reason.UNKNOWN_SESSION, "unknown or revoked session")
            session = touched
        return session

    async def revoke_token(self, token: str) -> Session | None:
        """Revoke the session of ``token`` (logout). Returns what was revoked, if anything.

        :raises StoreUnavailable: the revocation was not stored (the caller must not report
            success).
        """
        if not tokens.has_token_shape(token):
            return None
        return await self.store.revoke(tokens.token_hash(token))
