"""An in-process cache of live sessions in front of any session store.

:class:`CachingSessionStore` answers ``get`` from memory only while its :class:`TrustSource` (in
production an :class:`~extauthz.store.redis.invalidation.InvalidationSubscriber`) says the push
channel is provably alive; :data:`lookup_source` tells how the last lookup of the current task
was answered (``hit``, ``miss``, ``bypass``, ``off``); ``stats["bypasses"]`` counts the lookups
that bypassed the cache, :meth:`CachingSessionStore.channel_down_seconds` how long the push
channel has been down (``extauthz_cache_*`` metrics, ``extauthz status``). Fills, drops and limits:
docs/strategies.md, 'The session cache'.

The successors of rotated tokens are remembered too, until their grace ends: a successor never
changes and a rotated token never has a record again, so what a node learnt about a rotation
holds whatever the push channel does.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Protocol

from extauthz.store.model import (
    UPDATE_ATTEMPTS,
    Session,
    SessionChange,
    SessionStore,
    Successor,
)

lookup_source: ContextVar[str] = ContextVar("session_lookup_source", default="off")


class CacheListener(Protocol):
    """What a cache offers its trust source."""

    def invalidate(self, token_hash: str) -> None:
        """Drop ``token_hash`` (a revocation or change was published)."""

    def reset(self) -> None:
        """Drop everything (messages may have been missed)."""


class TrustSource(Protocol):
    def trusted(self) -> bool:
        """Whether cached entries may be served right now."""

    def add_listener(self, listener: CacheListener) -> None:
        """Register the cache for ``invalidate``/``reset`` calls."""

    def down_seconds(self) -> float | None:
        """Seconds the push channel has been down; ``None`` while it is up."""

    async def start(self) -> None:
        """Begin listening (the cache is bypassed until the source trusts itself)."""

    async def stop(self) -> None:
        """Stop listening; the source never trusts again."""


@dataclass(frozen=True)
class _Entry:
    session: Session
    filled_at: float


class CachingSessionStore:
    """Wraps ``inner``; durations are seconds; ``clock`` is monotonic.

    :param on_drop: called with the ``sid`` of every entry dropped by an invalidation (the
        JWT minter forgets that session's cached JWT).
    """

    def __init__(
        self,
        inner: SessionStore,
        trust: TrustSource,
        *,
        max_entries: int = 10_000,
        max_age: float = 5.0,
        on_drop: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.inner = inner
        self._trust = trust
        self._max_entries = max_entries
        self._max_age = max_age
        self._on_drop = on_drop
        self._clock = clock
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        # rotated token hash -> its successor (immutable once written; see the module docstring)
        self._successors: OrderedDict[str, Successor] = OrderedDict()
        # grows with every invalidation and reset: a fill whose read overlapped one is void
        self._generation = 0
        self.stats = {"hits": 0, "misses": 0, "bypasses": 0, "discarded_fills": 0}
        trust.add_listener(self)

    @property
    def backend(self) -> str:
        return self.inner.backend

    def __len__(self) -> int:
        return len(self._entries)

    # -- push invalidation ----------------------------------------------------------------------

    def invalidate(self, token_hash: str) -> None:
        self._generation += 1
        entry = self._entries.pop(token_hash, None)
        if entry is not None and self._on_drop is not None:
            self._on_drop(entry.session.sid)

    def reset(self) -> None:
        self._generation += 1
        self._entries.clear()

    def channel_down_seconds(self) -> float | None:
        """Seconds the push channel has been down (``None`` while it is up)."""
        return self._trust.down_seconds()

    def set_on_drop(self, on_drop: Callable[[str], None]) -> None:
        self._on_drop = on_drop

    # -- the cache --------------------------------------------------------------------------------

    def _put(self, token_hash: str, session: Session) -> None:
        self._entries[token_hash] = _Entry(session, self._clock())
        self._entries.move_to_end(token_hash)
        while len(self._entries) > self._max_entries:
            self._entries.popitem(last=False)

    def _fresh(self, token_hash: str) -> Session | None:
        entry = self._entries.get(token_hash)
        if entry is None:
            return None
        if self._clock() - entry.filled_at >= self._max_age:
            del self._entries[token_hash]
            return None
        self._entries.move_to_end(token_hash)
        return entry.session

    async def get(self, token_hash: str) -> Session | None:
        if token_hash in self._successors:
            return None  # rotated: its record is gone for good
        trusted = self._trust.trusted()
        if trusted:
            session = self._fresh(token_hash)
            if session is not None:
                self.stats["hits"] += 1
                lookup_source.set("hit")
                return session
            self.stats["misses"] += 1
            lookup_source.set("miss")
        else:
            self.stats["bypasses"] += 1
            lookup_source.set("bypass")
        generation = self._generation
        session = await self.inner.get(token_hash)
        if session is not None and trusted:
            self._fill(token_hash, session, generation)
        return session

    def _fill(self, token_hash: str, session: Session, generation: int) -> None:
        if generation == self._generation:
            self._put(token_hash, session)
        else:
            self.stats["discarded_fills"] += 1

    # -- writes go to the store -------------------------------------------------------------

    async def create(self, token_hash: str, session: Session) -> None:
        await self.inner.create(token_hash, session)

    async def touch(self, token_hash: str, session: Session) -> bool:
        trusted = self._trust.trusted()
        generation = self._generation
        stored = await self.inner.touch(token_hash, session)
        if stored and trusted:
            self._fill(token_hash, session, generation)
        else:
            self._entries.pop(token_hash, None)
        return stored

    async def get_by_sid(self, sid: str) -> Session | None:
        return await self.inner.get_by_sid(sid)

    async def update(
        self, sid: str, change: SessionChange, *, attempts: int = UPDATE_ATTEMPTS
    ) -> Session | None:
        # like a revocation: the store publishes the change and waits for every caching node
        # (this one included) to drop the record
        return await self.inner.update(sid, change, attempts=attempts)
    async def token_hash_of(self, sid: str) -> str | None:
        return await self.inner.token_hash_of(sid)

    async def revoke(self, token_hash: str) -> Session | None:
        # The store publishes the revocation and waits for every caching node (this one
        # included) to acknowledge it; dropping here as well costs nothing.
        try:
            return await self.inner.revoke(token_hash)
        finally:
            self.invalidate(token_hash)

    async def rotate(
        self, token_hash: str, version: int, session: Session, successor: Successor
    ) -> Successor | None:
        # The store publishes the old hash's invalidation for every node; this one drops its
        # entry at once. A rotation that lost to an earlier one changes nothing: dropping (and
        # voiding the fills in flight) only when there is something to drop keeps a burst of
        # such losers from emptying the cache of the new token.
        outcome: Successor | None = None
        try:
            outcome = await self.inner.rotate(token_hash, version, session, successor)
        finally:
            if outcome is None or outcome == successor or token_hash in self._entries:
                self.invalidate(token_hash)
        if outcome is not None:
            self._remember(token_hash, outcome)
        return outcome

    async def successor(self, token_hash: str) -> Successor | None:
        known = self._successors.get(token_hash)
        if known is not None:
            return known
        found = await self.inner.successor(token_hash)
        if found is not None:
            self._remember(token_hash, found)
        return found

    def _remember(self, token_hash: str, successor: Successor) -> None:
        self._successors[token_hash] = successor
        now = time.time()  # ``until`` is Unix time
        while self._successors:
            oldest = next(iter(self._successors.values()))
            if oldest.until > now and len(self._successors) <= self._max_entries:
                break
            self._successors.popitem(last=False)

    async def was_revoked(self, token_hash: str) -> bool:
        return await self.inner.was_revoked(token_hash)

    async def was_issued(self, token_hash: str) -> bool:
        return await self.inner.was_issued(token_hash)

    async def revoke_sid(self, sid: str) -> Session | None:
        return await self.inner.revoke_sid(sid)

    async def revoke_subject(self, sub: str) -> int:
        return await self.inner.revoke_subject(sub)

    async def list_subject(self, sub: str) -> list[Session]:
        return await self.inner.list_subject(sub)

    async def ping(self) -> None:
        await self.inner.ping()

    async def start(self) -> None:
        """Start the push channel (see :class:`TrustSource`) and the wrapped store's own
        background work (the replicated store's read lease)."""
        await self._trust.start()
        await self.inner.start()

    async def stop(self) -> None:
        await self._trust.stop()
        self.reset()
        await self.inner.stop()
