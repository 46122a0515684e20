"""Session lifecycle on top of any :class:`~extauthz.store.model.SessionStore`:
creation, lookup with idle timeout and absolute expiry, sliding, revocation."""

from __future__ import annotations

import json
import secrets
import time
import unicodedata
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from extauthz import tokens
from extauthz.errors import Reason, Unauthenticated
from extauthz.scopes import validate_scope_tokens
from extauthz.store.model import Session, SessionStore

MAX_DATA_BYTES = 4096
MAX_SUBJECT_CHARS = 256
_UNSAFE_CATEGORIES = frozenset({"Cc", "Cs", "Zl", "Zp"})
_BIDI_CONTROLS = frozenset(
    "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
)


def _is_unsafe_char(c: str) -> bool:
    """Control characters (C0, DEL, C1), line and paragraph separators, lone surrogates and
    bidirectional overrides/isolates: what could break a log line, a header or how a name
    is displayed."""
    return unicodedata.category(c) in _UNSAFE_CATEGORIES or c in _BIDI_CONTROLS


def validate_subject(sub: str) -> str:
    """A session subject: a string of 1-256 characters with no control characters, line
    separators or bidirectional controls (the subject lands in logs, in the JWT ``sub`` and
    in the admin API's answers).

    :raises ValueError: not such a string.
    """
    if not 1 <= len(sub) <= MAX_SUBJECT_CHARS:
        raise ValueError(f"subject must be 1-{MAX_SUBJECT_CHARS} characters")
    if any(_is_unsafe_char(c) for c in sub):
        raise ValueError("subject must not contain control characters")
    return sub


def printable(text: str) -> str:
    """``text`` for a log line: as it is when it holds none of the characters
    :func:`validate_subject` refuses, else its ``repr`` (escapes, not raw control characters).
    For values a client sent that were not validated (e.g. the subject of an admin revocation)."""
    return text if not any(_is_unsafe_char(c) for c in text) else repr(text)


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

    :param check_session: called with every new session before it is stored; raises
        :class:`ValueError` to refuse it (the JWT minter's size bound, ``jwt.max_bytes``).
    """

    def __init__(
        self,
        store: SessionStore,
        *,
        idle_timeout: int,
        absolute_timeout: int,
        clock: Callable[[], float] = time.time,
        touch_interval: float | None = None,
        check_session: Callable[[Session], None] | None = None,
    ) -> None:
        self.store = store
        self.idle_timeout = idle_timeout
        self.absolute_timeout = absolute_timeout
        self._clock = clock
        self._check_session = check_session
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

        :raises ValueError: a subject that :func:`validate_subject` refuses (empty, too long,
            control characters), a scope or role that is not an RFC 6749 §3.3
            scope token, bad session data, or a session that ``check_session`` refuses (its
            JWT would exceed ``jwt.max_bytes``).
        :raises StoreUnavailable: the store did not take the write (incl. ``WAIT`` failure).
        """
        validate_subject(sub)
        now = self._clock()
        session = Session(
            sid=secrets.token_urlsafe(16),
            sub=sub,
            created_at=now,
            last_seen=now,
            idle_timeout=self.idle_timeout,
            expires_at=now + self.absolute_timeout,
            scopes=validate_scope_tokens("scopes", scopes),
            roles=validate_scope_tokens("roles", roles),
            data=validate_session_data(data),
        )
        if self._check_session is not None:
            self._check_session(session)
        token = tokens.mint_token()
        await self.store.create(tokens.token_hash(token), session)
        return token, session

    async def lookup(self, token: str) -> Session:
        """The live session for ``token``.

        :raises Unauthenticated: ``malformed_credential`` (shape), ``revoked_session``
            (revoked before its absolute expiry: a stale cookie, not a guess),
            ``unknown_session`` (never existed, or dropped by the store) or
            ``session_expired``.
        :raises StoreUnavailable: the store could not answer.
        """
        if not tokens.has_token_shape(token):
            raise Unauthenticated(Reason.MALFORMED_CREDENTIAL, "not an access token")
        token_hash = tokens.token_hash(token)
        session = await self.store.get(token_hash)
        if session is None:
            raise await self._missing(token_hash)
        now = self._clock()
        if not session.is_alive(now):
            raise Unauthenticated(Reason.SESSION_EXPIRED, "session expired")
        if now - session.last_seen >= self._touch_interval:
            touched = session.touched(now)
            if await self.store.touch(token_hash, touched):
                session = touched
            else:
                # revoked, or changed (a session update) since it was read: read it again
                current = await self.store.get(token_hash)
                if current is None:
                    raise await self._missing(token_hash)
                session = current
        return session

    async def _missing(self, token_hash: str) -> Unauthenticated:
        """Why no record answers ``token_hash``: revoked (the store remembers it), or
        unknown."""
        if await self.store.was_revoked(token_hash):
            return Unauthenticated(Reason.REVOKED_SESSION, "revoked session")
        return Unauthenticated(Reason.UNKNOWN_SESSION, "unknown or revoked session")

    async def was_revoked(self, token: str) -> bool:
        """Whether ``token`` names a revoked session (until its absolute expiry).

        :raises StoreUnavailable: the store could not answer.
        """
        if not tokens.has_token_shape(token):
            return False
        return await self.store.was_revoked(tokens.token_hash(token))

    async def revoke_token(self, token: str) -> Session | None:
        """Revoke the session of ``token`` (logout). Returns what was revoked, if anything.

        :raises StoreUnavailable: the revocation was not stored (the caller must not report
            success).
        """
        if not tokens.has_token_shape(token):
            return None
        return await self.store.revoke(tokens.token_hash(token))
