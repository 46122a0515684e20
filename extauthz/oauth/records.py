"""The authorization server's own records: authorization codes, refresh tokens, token
families (every access and refresh token issued from one authorization) and remembered consent.

A *family* is the unit of revocation: the tokens of one authorization code (RFC 6749 §4.1.2:
a code used twice revokes what it issued), of one refresh chain (a rotated refresh token
presented again revokes the whole family) or of one client-credentials grant. Families are
indexed per client (:meth:`OAuthRecords.client_families`: removing a client revokes them) and
per grant, i.e. (user, client) (:meth:`OAuthRecords.grant_families`).

Codes and refresh tokens are stored only as :func:`extauthz.tokens.token_hash` of the value.
Every method of an implementation raises :class:`~extauthz.errors.StoreUnavailable` when its
store cannot answer. :class:`MemoryOAuthRecords` is for a single node and tests; the Redis one
is :class:`extauthz.store.redis.oauth_records.RedisOAuthRecords`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, Self, cast


class _JsonRecord:
    """A record of flat JSON fields (a frozen dataclass): ``to_json`` and ``from_json``."""

    def to_json(self) -> str:
        return json.dumps(asdict(cast(Any, self)), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes) -> Self:
        """:raises ValueError: not such a record."""
        try:
            return cls(**json.loads(text))
        except (TypeError, KeyError, AttributeError, json.JSONDecodeError) as exc:
            raise ValueError(f"malformed {cls.__name__}: {exc.__class__.__name__}") from None


@dataclass(frozen=True)
class CodeRecord(_JsonRecord):
    """An authorization code (RFC 6749 §4.1.2), bound to ``client_id``, ``redirect_uri`` and
    the PKCE ``code_challenge`` (RFC 7636 §4.4, always ``S256``). ``scope``: the granted
    scope (space-separated); ``family``: the family its tokens will join. Times: Unix s."""

    client_id: str
    sub: str
    redirect_uri: str
    scope: str
    code_challenge: str
    family: str
    expires_at: float


@dataclass(frozen=True)
class RefreshRecord(_JsonRecord):
    """A refresh token (RFC 6749 §1.5) of ``family``: usable once (rotation), the family
    ends at ``family_expires_at`` (absolute, Unix s) whatever the rotations."""

    client_id: str
    sub: str
    scope: str
    family: str
    family_expires_at: float


@dataclass(frozen=True)
class Taken:
    """A code or refresh token read for its one use: ``first`` is false when it was used
    before (a replay: the caller revokes its family)."""

    record: CodeRecord | RefreshRecord
    first: bool


@dataclass(frozen=True)
class FamilyMembers:
    """What a family holds: session ids (``Session.sid``) and refresh-token hashes."""

    sids: frozenset[str] = frozenset()
    refresh_hashes: frozenset[str] = frozenset()


class OAuthRecords(Protocol):
    """The records' store. Every method may raise ``StoreUnavailable``; ``ttl`` in s."""

    async def put_code(self, code_hash: str, record: CodeRecord, ttl: float) -> None: ...

    async def take_code(self, code_hash: str) -> Taken | None:
        """The code's record, marked used (atomically); ``None``: unknown or expired."""
        ...

    async def put_refresh(self, token_hash: str, record: RefreshRecord) -> None:
        """Stored until the family's absolute expiry."""
        ...

    async def peek_refresh(self, token_hash: str) -> Taken | None:
        """The refresh token's record, not marked (``first``: not used yet); ``None``:
        unknown or its family expired."""
        ...

    async def take_refresh(self, token_hash: str) -> Taken | None:
        """The refresh token's record, marked used (atomically); ``None``: unknown."""
        ...

    async def add_to_family(
        self,
        family: str,
        *,
        client_id: str,
        sub: str,
        expires_at: float,
        sid: str | None = None,
        refresh_hash: str | None = None,
    ) -> bool:
        """Add a session id and/or a refresh-token hash to ``family`` (and the family to the
        client's and the grant's index). ``False`` when the family was revoked: the caller
        revokes what it just issued."""
        ...

    async def revoke_family(self, family: str) -> FamilyMembers:
        """Mark ``family`` revoked, drop its refresh tokens, return its members (the caller
        revokes the sessions)."""
        ...

    async def client_families(self, client_id: str) -> frozenset[str]: ...

    async def grant_families(self, sub: str, client_id: str) -> frozenset[str]: ...

    async def get_consent(self, sub: str, client_id: str) -> frozenset[str] | None:
        """The scopes ``sub`` approved for ``client_id`` (``None``: never asked)."""
        ...

    async def put_consent(
        self, sub: str, client_id: str, scopes: frozenset[str], ttl: float
    ) -> None: ...

    async def drop_consent(self, sub: str, client_id: str) -> None: ...


@dataclass
class _Family:
    client_id: str
    sub: str
    expires_at: float
    sids: set[str] = field(default_factory=set)
    refresh_hashes: set[str] = field(default_factory=set)
    revoked: bool = False


SWEEP_EVERY = 256  # writes between two sweeps of the memory records


class MemoryOAuthRecords:
    """:class:`OAuthRecords` in this process (single node, tests). Expired entries are
    dropped when read, and all of them every :data:`SWEEP_EVERY` writes."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._codes: dict[str, tuple[CodeRecord, float, bool]] = {}
        self._refresh: dict[str, tuple[RefreshRecord, bool]] = {}
        self._families: dict[str, _Family] = {}
        self._consents: dict[tuple[str, str], tuple[frozenset[str], float]] = {}
        self._writes = 0

    def _wrote(self) -> None:
        self._writes += 1
        if self._writes % SWEEP_EVERY:
            return
        now = self._clock()
        self._codes = {k: v for k, v in self._codes.items() if now < v[1]}
        self._refresh = {k: v for k, v in self._refresh.items() if now < v[0].family_expires_at}
        self._families = {k: v for k, v in self._families.items() if now < v.expires_at}
        self._consents = {k: v for k, v in self._consents.items() if now < v[1]}

    async def put_code(self, code_hash: str, record: CodeRecord, ttl: float) -> None:
        self._wrote()
        self._codes[code_hash] = (record, self._clock() + ttl, False)

    async def take_code(self, code_hash: str) -> Taken | None:
        found = self._codes.get(code_hash)
        if found is None:
            return None
        record, until, used = found
        if self._clock() >= until:
            del self._codes[code_hash]
            return None
        self._codes[code_hash] = (record, until, True)
        return Taken(record, not used)

    async def put_refresh(self, token_hash: str, record: RefreshRecord) -> None:
        self._wrote()
        self._refresh[token_hash] = (record, False)

    def _live_refresh(self, token_hash: str) -> tuple[RefreshRecord, bool] | None:
        found = self._refresh.get(token_hash)
        if found is not None and self._clock() >= found[0].family_expires_at:
            del self._refresh[token_hash]
            return None
        return found

    async def peek_refresh(self, token_hash: str) -> Taken | None:
        found = self._live_refresh(token_hash)
        return Taken(found[0], not found[1]) if found is not None else None

    async def take_refresh(self, token_hash: str) -> Taken | None:
        found = self._live_refresh(token_hash)
        if found is None:
            return None
        self._refresh[token_hash] = (found[0], True)
        return Taken(found[0], not found[1])

    def _family(self, family: str) -> _Family | None:
        found = self._families.get(family)
        if found is not None and self._clock() >= found.expires_at:
            del self._families[family]
            return None
        return found

    async def add_to_family(
        self,
        family: str,
        *,
        client_id: str,
        sub: str,
        expires_at: float,
        sid: str | None = None,
        refresh_hash: str | None = None,
    ) -> bool:
        found = self._family(family)
        if found is None:
            self._wrote()
            found = self._families[family] = _Family(client_id, sub, expires_at)
        found.expires_at = max(found.expires_at, expires_at)
        if sid is not None:
            found.sids.add(sid)
        if refresh_hash is not None:
            found.refresh_hashes.add(refresh_hash)
        return not found.revoked

    async def revoke_family(self, family: str) -> FamilyMembers:
        found = self._family(family)
        if found is None:
            # remember the revocation: a token being issued into it right now is revoked too
            found = self._families[family] = _Family("", "", self._clock() + 3600)
        found.revoked = True
        for token_hash in found.refresh_hashes:
            self._refresh.pop(token_hash, None)
        return FamilyMembers(frozenset(found.sids), frozenset(found.refresh_hashes))

    async def client_families(self, client_id: str) -> frozenset[str]:
        return frozenset(
            name for name in list(self._families)
            if (f := self._family(name)) is not None and f.client_id == client_id
            and not f.revoked
        )

    async def grant_families(self, sub: str, client_id: str) -> frozenset[str]:
        return frozenset(
            name for name in list(self._families)
            if (f := self._family(name)) is not None and f.client_id == client_id
            and f.sub == sub and not f.revoked
        )

    async def get_consent(self, sub: str, client_id: str) -> frozenset[str] | None:
        found = self._consents.get((sub, client_id))
        if found is None or self._clock() >= found[1]:
            self._consents.pop((sub, client_id), None)
            return None
        return found[0]

    async def put_consent(
        self, sub: str, client_id: str, scopes: frozenset[str], ttl: float
    ) -> None:
        self._wrote()
        self._consents[(sub, client_id)] = (frozenset(scopes), self._clock() + ttl)

    async def drop_consent(self, sub: str, client_id: str) -> None:
        self._consents.pop((sub, client_id), None)
