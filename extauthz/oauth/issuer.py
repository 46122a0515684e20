"""Issuing and revoking what the authorization server hands out (async, on the event loop).

Access tokens are sessions (``SessionManager.create(kind="oauth", client_id=...,
lifetime_seconds=...)``: ``xat_`` tokens the unchanged Check serves, Bearer only). Refresh
tokens are ``xrt_`` records of their own (:class:`~extauthz.oauth.records.RefreshRecord`),
never sessions. Every token joins a family (:mod:`extauthz.oauth.records`), so one call
revokes a code's, a refresh chain's, a grant's or a client's tokens; revoking a session goes
through the session store, which tells every node (the push invalidation).
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from extauthz import tokens
from extauthz.oauth.records import CodeRecord, OAuthRecords, RefreshRecord, Taken
from extauthz.store.manager import SessionManager

log = logging.getLogger("extauthz.oauth")

CODE_REPLAY_MEMORY_SECONDS = 600
"""A code's record outlives the code by this much, so that a late second use is still
recognised (and what the first use issued revoked)."""
CLIENT_SUBJECT_PREFIX = "client:"
"""``sub`` of a client-credentials token: ``client:<client_id>``."""


@dataclass(frozen=True)
class Lifetimes:
    """Seconds: access token (``expires_in``), refresh family (absolute), code."""

    access: int = 600
    refresh: int = 30 * 86400
    code: int = 60
    consent: int = 365 * 86400


@dataclass(frozen=True)
class Issued:
    """An RFC 6749 §5.1 token response's values."""

    access_token: str
    expires_in: int
    scope: str
    refresh_token: str | None = None


class FamilyRevoked(Exception):
    """The family was revoked while a token was being issued into it (a replayed code or
    refresh token): what was issued is revoked again, nothing is handed out."""


def new_family() -> str:
    return secrets.token_urlsafe(16)


class TokenIssuer:
    """Tokens, codes and families over ``sessions`` and ``records``."""

    def __init__(
        self,
        sessions: SessionManager,
        records: OAuthRecords,
        lifetimes: Lifetimes,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.sessions = sessions
        self.records = records
        self.lifetimes = lifetimes
        self._clock = clock

    # -- codes ---------------------------------------------------------------------------

    async def save_code(
        self, code: str, *, client_id: str, sub: str, redirect_uri: str, scope: str,
        code_challenge: str,
    ) -> None:
        """Store ``code`` (hashed) for ``lifetimes.code`` seconds."""
        record = CodeRecord(
            client_id=client_id, sub=sub, redirect_uri=redirect_uri, scope=scope,
            code_challenge=code_challenge, family=new_family(),
            expires_at=self._clock() + self.lifetimes.code,
        )
        await self.records.put_code(
            tokens.token_hash(code), record, self.lifetimes.code + CODE_REPLAY_MEMORY_SECONDS
        )

    async def take_code(self, code: str, client_id: str) -> CodeRecord | None:
        """The code's record for its one use by ``client_id``; ``None`` when unknown, expired,
        another client's, or used before (then what its first use issued is revoked,
        RFC 6749 §4.1.2)."""
        if not code or len(code) > 512:
            return None
        taken = await self.records.take_code(tokens.token_hash(code))
        if taken is None or not isinstance(taken.record, CodeRecord):
            return None
        record = taken.record
        if not taken.first:
            count = await self.revoke_family(record.family)
            log.warning(
                "authorization code used twice (client %s): revoked %d token(s) it issued",
                record.client_id, count,
            )
            return None
        if record.client_id != client_id or self._clock() >= record.expires_at:
            return None
        return record

    # -- refresh tokens ------------------------------------------------------------------

    async def take_refresh(self, refresh_token: str, client_id: str) -> RefreshRecord | None:
        """The refresh token's record for its one use (rotation) by ``client_id``; ``None``
        when unknown, expired, another client's, or used before (then its whole family is
        revoked: every refresh and access token of the grant)."""
        if not tokens.has_token_shape(refresh_token, tokens.REFRESH_TOKEN_PREFIX):
            return None
        token_hash = tokens.token_hash(refresh_token)
        current = await self.records.peek_refresh(token_hash)
        if current is None or current.record.client_id != client_id:
            return None
        taken = await self.records.take_refresh(token_hash)
        if taken is None or not isinstance(taken.record, RefreshRecord):
            return None
        if not taken.first:
            count = await self.revoke_family(taken.record.family)
            log.warning(
                "refresh token %s presented again after rotation (client %s): revoked its "
                "family, %d token(s)", tokens.log_id(refresh_token), client_id, count,
            )
            return None
        return taken.record

    async def peek_refresh(self, refresh_token: str) -> Taken | None:
        """The record of ``refresh_token`` and whether it is still unused (introspection,
        revocation, checks before its use); never uses it up."""
        if not tokens.has_token_shape(refresh_token, tokens.REFRESH_TOKEN_PREFIX):
            return None
        return await self.records.peek_refresh(tokens.token_hash(refresh_token))

    # -- issuing -------------------------------------------------------------------------

    async def issue(
        self,
        *,
        client_id: str,
        sub: str,
        scope: str,
        family: str,
        family_expires_at: float | None = None,
        refresh_scope: str | None = None,
        with_refresh: bool = False,
    ) -> Issued:
        """An access token (a session living ``lifetimes.access`` seconds) for ``scope``, and
        with ``with_refresh`` a refresh token for ``refresh_scope`` (default ``scope``) in
        ``family`` (ending at ``family_expires_at``, default now + ``lifetimes.refresh``).

        :raises FamilyRevoked: the family was revoked meanwhile.
        :raises ValueError: a scope or subject the session manager refuses.
        :raises StoreUnavailable: a store did not answer.
        """
        now = self._clock()
        ends = family_expires_at if family_expires_at is not None else now + self.lifetimes.refresh
        access, session = await self.sessions.create(
            sub, scopes=scope.split(), kind="oauth", client_id=client_id,
            lifetime_seconds=self.lifetimes.access,
        )
        live = await self.records.add_to_family(
            family, client_id=client_id, sub=sub, sid=session.sid,
            expires_at=max(ends, now + self.lifetimes.access),
        )
        refresh: str | None = None
        if live and with_refresh:
            refresh = tokens.mint_token(tokens.REFRESH_TOKEN_PREFIX)
            refresh_hash = tokens.token_hash(refresh)
            await self.records.put_refresh(
                refresh_hash,
                RefreshRecord(client_id, sub, refresh_scope or scope, family, ends),
            )
            live = await self.records.add_to_family(
                family, client_id=client_id, sub=sub, refresh_hash=refresh_hash, expires_at=ends,
            )
        if not live:
            await self.revoke_family(family)
            raise FamilyRevoked(family)
        return Issued(access, self.lifetimes.access, scope, refresh)

    # -- revoking ------------------------------------------------------------------------

    async def revoke_family(self, family: str) -> int:
        """Revoke every token of ``family``; how many sessions and refresh tokens it held."""
        members = await self.records.revoke_family(family)
        for sid in members.sids:
            await self.sessions.store.revoke_sid(sid)
        return len(members.sids) + len(members.refresh_hashes)

    async def revoke_grant(self, sub: str, client_id: str) -> int:
        """Revoke every token ``client_id`` holds for ``sub`` and forget the consent."""
        count = 0
        for family in await self.records.grant_families(sub, client_id):
            count += await self.revoke_family(family)
        await self.records.drop_consent(sub, client_id)
        return count

    async def revoke_client_tokens(self, client_id: str) -> int:
        """Revoke every token issued to ``client_id`` (its removal); how many."""
        count = 0
        for family in await self.records.client_families(client_id):
            count += await self.revoke_family(family)
        if count:
            log.info("revoked %d token(s) of client %s", count, client_id)
        return count

    # -- consent -------------------------------------------------------------------------

    async def approved(self, sub: str, client_id: str, scopes: frozenset[str]) -> bool:
        """Whether ``sub`` approved at least ``scopes`` for ``client_id`` before."""
        found = await self.records.get_consent(sub, client_id)
        return found is not None and scopes <= found

    async def remember(self, sub: str, client_id: str, scopes: frozenset[str]) -> None:
        """Remember the approval of ``scopes`` (with what was approved before)."""
        before = await self.records.get_consent(sub, client_id) or frozenset()
        await self.records.put_consent(sub, client_id, before | scopes, self.lifetimes.consent)
