"""Session lifecycle on top of any :class:`~extauthz.store.model.SessionStore`:
creation, lookup with idle timeout and absolute expiry, sliding, token rotation, revocation."""

from __future__ import annotations

import json
import time
import unicodedata
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from extauthz import tokens
from extauthz.errors import Reason, StoreUnavailable, Unauthenticated
from extauthz.scopes import validate_scope_tokens
from extauthz.store.model import SESSION_KINDS, Session, SessionStore, Successor

MAX_DATA_BYTES = 4096
DEFAULT_ROTATION_GRACE_SECONDS = 5.0
# how many rotations a lookup follows from a presented token to the session's current one
MAX_SUCCESSOR_HOPS = 4
# how often a rotation reads the record again when it changed between read and write
ROTATION_ATTEMPTS = 3
MAX_SUBJECT_CHARS = 256
_UNSAFE_CATEGORIES = frozenset({"Cc", "Cs", "Zl", "Zp"})
_BIDI_CONTROLS = frozenset(
    "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
)


def _is_unsafe_char(c: str) -> bool:
    """Control characters (C0, DEL, C1), line and paragraph separators, lone surrogates and
    bidirectional overrides/isolates: what could break a log line, a header or how a name
    is displayed. None is printable ASCII (validate_subject's one-call common case)."""
    return unicodedata.category(c) in _UNSAFE_CATEGORIES or c in _BIDI_CONTROLS


def validate_subject(sub: str) -> str:
    """A session subject: a string of 1-256 characters with no control characters, line
    separators or bidirectional controls (the subject lands in logs, in the JWT ``sub`` and
    in the admin API's answers).

    :raises ValueError: not such a string.
    """
    if not 1 <= len(sub) <= MAX_SUBJECT_CHARS:
        raise ValueError(f"subject must be 1-{MAX_SUBJECT_CHARS} characters")
    if not (sub.isascii() and sub.isprintable()) and any(_is_unsafe_char(c) for c in sub):
        raise ValueError("subject must not contain control characters")
    return sub


def printable(text: str) -> str:
    """``text`` for a log line: as it is when it holds none of the characters
    :func:`validate_subject` refuses, else its ``repr`` (escapes, not raw control characters).
    For values a client sent that were not validated (e.g. the subject of an admin revocation)."""
    return text if not any(_is_unsafe_char(c) for c in text) else repr(text)


def validate_session_data(data: Mapping[str, Any] | None) -> dict[str, Any]:
    """Session data must be a JSON object of at most 4 KiB when encoded.
    :raises ValueError: not an object, not JSON-serialisable, or too large."""
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise ValueError("session data must be a JSON object")
    try:
        # allow_nan=False: an inf or NaN would be written as Infinity/NaN, which is no JSON
        encoded = json.dumps(dict(data), separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"session data is not JSON: {exc}") from None
    if len(encoded.encode()) > MAX_DATA_BYTES:
        raise ValueError(f"session data exceeds {MAX_DATA_BYTES} bytes")
    return dict(json.loads(encoded))


@dataclass(frozen=True)
class Found:
    """A live session and how the presented ``token`` reached it: directly, or
    (``superseded``) through the successor of a rotated token during its grace; then
    ``current_token`` is the session's current token when the seals let the holder of
    ``token`` learn it (``None`` after a rotation by session id)."""

    token: str
    session: Session
    superseded: bool = False
    current_token: str | None = None


@dataclass(frozen=True)
class _Chain:
    """Where a chain of rotations from a token hash leads: the hash of the first record
    found (or the last hash tried), that record, the token for that hash (``None`` when a
    seal could not be opened) and the grace end of the first rotation (``None``: no rotation
    was followed)."""

    token_hash: str
    session: Session | None
    token: str | None
    grace_until: float | None


@dataclass(frozen=True)
class Rotated:
    """The outcome of :meth:`SessionManager.rotate`.

    ``token``: the session's new opaque token, for the ``Set-Cookie``; ``None`` when an
    earlier rotation made it and this caller cannot learn it (that rotation was made by
    session id, without the old token to seal it for). ``session``: the record stored under
    it (same ``sid``, ``sub``, data and expiry; ``rotated_at`` set). ``created``: this call
    made the rotation; ``False`` when a concurrent or earlier one did (the caller then sends
    that one's token, or nothing). ``grace_until``: the old token is accepted until then
    (Unix seconds), revoked afterwards (``revoked_session``)."""

    token: str | None
    session: Session
    created: bool
    grace_until: float


class SessionManager:
    """Creates and looks up sessions. Durations are seconds.

    The idle deadline slides on use, but the record is rewritten at most once per
    ``touch_interval`` seconds (default: a tenth of the idle timeout, at most 60 s), so a busy
    session does not cost a store write per request. An API key's ``last_seen`` (its last use;
    its lifetime never slides) is written at its first use, then at most once per
    ``api_key_touch_interval`` seconds (``api_keys.touch_interval_seconds``).

    :param check_session: called with every new session before it is stored; raises
        :class:`ValueError` to refuse it (the JWT minter's size bound, ``jwt.max_bytes``).
    :param rotation_grace_seconds: how long a rotated token stays valid
        (``session.rotation_grace_seconds``).
    :param sid_separator: after a new sid's tag (``store.session_index``, tokens.mint_sid)."""

    def __init__(
        self,
        store: SessionStore,
        *,
        idle_timeout: int,
        absolute_timeout: int,
        clock: Callable[[], float] = time.time,
        touch_interval: float | None = None,
        check_session: Callable[[Session], None] | None = None,
        rotation_grace_seconds: float = DEFAULT_ROTATION_GRACE_SECONDS,
        api_key_touch_interval: float = 300.0,
        sid_separator: str = tokens.SID_SEPARATOR,
    ) -> None:
        self.store = store
        self.idle_timeout = idle_timeout
        self.absolute_timeout = absolute_timeout
        self._clock = clock
        self._check_session = check_session
        self.rotation_grace = rotation_grace_seconds
        self._touch_interval = (
            touch_interval if touch_interval is not None else min(60.0, idle_timeout / 10)
        )
        self._api_key_touch_interval, self._sid_separator = api_key_touch_interval, sid_separator

    def _touch_due(self, session: Session, now: float) -> bool:
        if session.kind != "api_key":
            return now - session.last_seen >= self._touch_interval
        return session.last_seen == session.created_at or (  # never used yet
            now - session.last_seen >= self._api_key_touch_interval
        )

    async def create(
        self,
        sub: str,
        *,
        scopes: Iterable[str] = (),
        roles: Iterable[str] = (),
        data: Mapping[str, Any] | None = None,
        kind: str = "session",
        client_id: str | None = None,
        lifetime_seconds: int | None = None,
        amr: Iterable[str] = (),
    ) -> tuple[str, Session]:
        """Create a session for ``sub``; return ``(opaque token, session)``.

        The token is returned here once and never again. ``kind`` (:data:`SESSION_KINDS`)
        and ``client_id``: :class:`Session`. With ``lifetime_seconds`` the session lives
        exactly that long from now and does not slide (idle timeout = lifetime): an OAuth
        access token's ``expires_in`` (RFC 6749 §5.1) or an API key's expiry. ``amr``: how
        the user authenticated (RFC 8176), recorded with ``auth_time`` = now when given. An
        ``"api_key"`` session's token has the API-key prefix (:data:`tokens.API_KEY_PREFIX`).

        :raises ValueError: a subject that :func:`validate_subject` refuses (empty, too long,
            control characters), a scope or role that is not an RFC 6749 §3.3 scope token, bad
            session data, or a session that ``check_session`` refuses (``jwt.max_bytes``).
        :raises StoreUnavailable: the store did not take the write (incl. ``WAIT`` failure).
        """
        validate_subject(sub)
        if kind not in SESSION_KINDS:
            raise ValueError(f"unknown session kind {kind!r}")
        if lifetime_seconds is not None and lifetime_seconds <= 0:
            raise ValueError("lifetime_seconds must be positive")
        now = self._clock()
        tag = tokens.subject_tag(sub)  # every key of the session in one slot: store/redis/keys
        session = Session(
            sid=tokens.mint_sid(tag, separator=self._sid_separator),
            sub=sub,
            created_at=now,
            last_seen=now,
            idle_timeout=lifetime_seconds or self.idle_timeout,
            expires_at=now + (lifetime_seconds or self.absolute_timeout),
            scopes=validate_scope_tokens("scopes", scopes),
            roles=validate_scope_tokens("roles", roles),
            data=validate_session_data(data),
            kind=kind,
            client_id=client_id,
            amr=tuple(amr),
            auth_time=now if amr else None,
        )
        if self._check_session is not None:
            self._check_session(session)
        prefix = tokens.API_KEY_PREFIX if kind == "api_key" else tokens.PREFIX
        token = tokens.mint_token(prefix, tag=tag)
        await self.store.create(tokens.token_hash(token), session)
        return token, session

    async def lookup(self, token: str) -> Session:
        """The live session for ``token`` (also through a rotated token's successor during
        its grace).

        :raises Unauthenticated: ``malformed_credential`` (shape), ``revoked_session``
            (revoked before its absolute expiry, or rotated and its grace over: a stale
            cookie, not a guess), ``session_expired`` (idle timeout or absolute expiry
            passed; the store remembers an idled-out token until the absolute expiry) or
            ``unknown_session`` (never issued, past its absolute expiry, or dropped by the
            store).
        :raises StoreUnavailable: the store could not answer.
        """
        return (await self.find(token)).session

    async def find(self, token: str) -> Found:
        """As :meth:`lookup`, and whether ``token`` was superseded by a rotation (then with
        the session's current token, when the seals let this caller learn it)."""
        if not tokens.has_token_shape(token, tokens.SESSION_PREFIXES):
            raise Unauthenticated(Reason.MALFORMED_CREDENTIAL, "not an access token")
        presented = tokens.token_hash(token)
        chain = await self._current(presented, token)
        session, token_hash = chain.session, chain.token_hash
        if session is None:
            raise await self._missing(token_hash)
        now = self._clock()
        if not session.is_alive(now):
            raise Unauthenticated(Reason.SESSION_EXPIRED, "session expired")
        if self._touch_due(session, now):
            touched = session.touched(now)
            if await self.store.touch(token_hash, touched):
                session = touched
            else:
                # revoked, rotated or changed (a session update) since it was read: read again
                chain = await self._current(presented, token)
                session, token_hash = chain.session, chain.token_hash
                if session is None:
                    raise await self._missing(token_hash)
        if token_hash == presented:
            return Found(token, session)
        return Found(token, session, superseded=True, current_token=chain.token)

    async def _current(self, token_hash: str, token: str | None) -> _Chain:
        """Where the session of ``token_hash`` (whose token is ``token``, if known) is
        stored now: its own record, else :meth:`_follow`."""
        session = await self.store.get(token_hash)
        if session is not None:
            return _Chain(token_hash, session, token, None)
        return await self._follow(token_hash, token)

    async def _follow(
        self, token_hash: str, token: str | None, first: Successor | None = None
    ) -> _Chain:
        """Follow the successors of rotated tokens whose grace lasts from ``token_hash``
        (which has no record; ``first``: its successor, when already read) to the first one
        with a record, at most :data:`MAX_SUCCESSOR_HOPS`, opening each seal with the token
        before it."""
        secret, grace_until, successor = token, None, first
        for _ in range(MAX_SUCCESSOR_HOPS):
            if successor is None or successor.until <= self._clock():
                successor = await self._successor(token_hash)
                if successor is None:
                    break
            grace_until = successor.until if grace_until is None else grace_until
            secret = tokens.open_successor(secret, successor.sealed) if secret else None
            token_hash, successor = successor.token_hash, None
            session = await self.store.get(token_hash)
            if session is not None:
                return _Chain(token_hash, session, secret, grace_until)
        return _Chain(token_hash, None, None, grace_until)

    async def _successor(self, token_hash: str) -> Successor | None:
        successor = await self.store.successor(token_hash)
        return successor if successor is not None and successor.until > self._clock() else None

    async def rotate(self, token: str) -> Rotated:
        """Token rotation: a new opaque token for the session of ``token`` (same ``sid``,
        data and expiry rules); ``token`` stays valid for ``rotation_grace_seconds``, then it
        is revoked (``revoked_session``). Concurrent rotations of one token make exactly
        one new token: every other caller gets that one (``created=False``), sealed in the
        store for holders of ``token`` only (:func:`~extauthz.tokens.seal_successor`). A
        ``token`` that was rotated already (grace not over) is not rotated again: the
        answer is the session's current token.

        :raises Unauthenticated: as :meth:`lookup`: ``token`` names no live session
            (malformed, unknown, revoked, expired, or rotated and its grace over); nothing is
            created.
        :raises StoreUnavailable: the store could not answer, did not take the write
            durably (``StoreWriteNotDurable``; a retry returns the same token), or the
            record changed under each of :data:`ROTATION_ATTEMPTS` attempts.
        """
        if not tokens.has_token_shape(token):
            raise Unauthenticated(Reason.MALFORMED_CREDENTIAL, "not an access token")
        return await self._rotate(tokens.token_hash(token), token)

    async def rotate_sid(self, sid: str) -> Rotated:
        """:meth:`rotate` for the session with id ``sid``, whose current token the caller
        does not hold (an upstream's ``rotate`` action, bound to the ``sid`` of the Check).
        Holders of the old token learn nothing of the new one: they are allowed during the
        grace without a new cookie; only this caller's answer carries it.

        :raises Unauthenticated: ``unknown_session``: no live session has that id.
        :raises StoreUnavailable: as :meth:`rotate`.
        """
        token_hash = await self.store.token_hash_of(sid)
        if token_hash is None:
            raise Unauthenticated(Reason.UNKNOWN_SESSION, "unknown or revoked session")
        return await self._rotate(token_hash, None)

    async def _rotate(self, old_hash: str, token: str | None) -> Rotated:
        for _ in range(ROTATION_ATTEMPTS):
            session = await self.store.get(old_hash)
            if session is None:
                return await self._rotated_earlier(await self._follow(old_hash, token))
            now = self._clock()
            if not session.is_alive(now):
                raise Unauthenticated(Reason.SESSION_EXPIRED, "session expired")
            # the session's tag, from its sid (none for sessions from before tags)
            new_token = tokens.mint_token(tag=tokens.sid_tag(session.sid))
            sealed = tokens.seal_successor(token, new_token) if token is not None else ""
            mine = Successor(tokens.token_hash(new_token), sealed, now + self.rotation_grace)
            rotated = replace(session, last_seen=now, rotated_at=now, version=session.version + 1)
            outcome = await self.store.rotate(old_hash, session.version, rotated, mine)
            if outcome == mine:
                return Rotated(new_token, rotated, created=True, grace_until=mine.until)
            if outcome is not None:  # another rotation won: its successor, already read
                return await self._rotated_earlier(await self._follow(old_hash, token, outcome))
            # the record changed (a touch, an update) or went away since it was read
        raise StoreUnavailable("session record changed under every rotation attempt")

    async def _rotated_earlier(self, chain: _Chain) -> Rotated:
        """The answer to a rotation of a token that an earlier rotation replaced.
        :raises Unauthenticated: no successor leads to a live record (see :meth:`lookup`)."""
        if chain.session is None or chain.grace_until is None:
            raise await self._missing(chain.token_hash)
        if not chain.session.is_alive(self._clock()):
            raise Unauthenticated(Reason.SESSION_EXPIRED, "session expired")
        return Rotated(chain.token, chain.session, created=False, grace_until=chain.grace_until)

    async def _missing(self, token_hash: str) -> Unauthenticated:
        """Why no record answers ``token_hash``: revoked, or issued to a session that ended
        by its idle timeout (the store remembers both until the absolute expiry), or unknown."""
        if await self.store.was_revoked(token_hash):
            return Unauthenticated(Reason.REVOKED_SESSION, "revoked session")
        if await self.store.was_issued(token_hash):
            return Unauthenticated(Reason.SESSION_EXPIRED, "session expired")
        return Unauthenticated(Reason.UNKNOWN_SESSION, "unknown or revoked session")

    async def was_revoked(self, token: str) -> bool:
        """Whether ``token`` names a revoked session (until its absolute expiry).
        :raises StoreUnavailable: the store could not answer."""
        if not tokens.has_token_shape(token, tokens.SESSION_PREFIXES):
            return False
        return await self.store.was_revoked(tokens.token_hash(token))

    async def was_issued(self, token: str) -> bool:
        """Whether the store issued ``token`` (at a login or a rotation) or revoked it, and
        its session's absolute expiry has not passed (a miss on it is a stale cookie, not a
        guess). :raises StoreUnavailable: the store could not answer."""
        if not tokens.has_token_shape(token, tokens.SESSION_PREFIXES):
            return False
        token_hash = tokens.token_hash(token)
        return await self.store.was_revoked(token_hash) or await self.store.was_issued(token_hash)

    async def revoke_token(self, token: str) -> Session | None:
        """Revoke the session of ``token`` (logout), also when ``token`` was rotated and its
        grace lasts. Returns what was revoked, if anything.

        :raises StoreUnavailable: the revocation was not stored (the caller must not report it).
        """
        if not tokens.has_token_shape(token, tokens.SESSION_PREFIXES):
            return None
        # a rotated token (grace not over) ends the session it leads to
        presented = tokens.token_hash(token)
        for _ in range(ROTATION_ATTEMPTS):
            chain = await self._current(presented, token)
            revoked = await self.store.revoke(chain.token_hash)
            if revoked is not None or chain.session is None:
                return revoked
            # the record found went away before the revocation (a rotation): follow it again
        return None
