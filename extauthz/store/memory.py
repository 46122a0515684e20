"""The in-memory session store: the embedded default for one process (strategy ``sticky``)
and the test double that satisfies the same protocol as the Redis store."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace

from extauthz.store.model import UPDATE_ATTEMPTS, Session, SessionChange, Successor


class MemorySessionStore:
    """Sessions in a dict; expired records are dropped on access and on each write. Issued
    and revoked token hashes are remembered until their session's absolute expiry
    (``was_issued``, ``was_revoked``: purged on each creation and rotation, so at most one
    entry per token issued within one absolute timeout), rotated ones lead to their successor
    until the grace ends (``successor``). Every method runs without an ``await`` in between
    its reads and writes: atomic on the event loop."""

    backend = "memory"

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._by_hash: dict[str, Session] = {}
        self._hash_by_sid: dict[str, str] = {}
        self._revoked_until: dict[str, float] = {}
        self._issued_until: dict[str, float] = {}
        self._successors: dict[str, Successor] = {}

    def _live(self, token_hash: str) -> Session | None:
        session = self._by_hash.get(token_hash)
        if session is not None and not session.is_alive(self._clock()):
            self._drop(token_hash)
            return None
        return session

    def _drop(self, token_hash: str) -> Session | None:
        session = self._by_hash.pop(token_hash, None)
        if session is not None:
            self._hash_by_sid.pop(session.sid, None)
        return session

    def _sweep(self) -> None:
        now = self._clock()
        for token_hash in [h for h, s in self._by_hash.items() if not s.is_alive(now)]:
            self._drop(token_hash)
        for token_hash in [h for h, t in self._revoked_until.items() if t <= now]:
            del self._revoked_until[token_hash]
        for token_hash in [h for h, t in self._issued_until.items() if t <= now]:
            del self._issued_until[token_hash]
        for token_hash in [h for h, s in self._successors.items() if s.until <= now]:
            del self._successors[token_hash]

    async def create(self, token_hash: str, session: Session) -> None:
        self._sweep()
        self._by_hash[token_hash] = session
        self._hash_by_sid[session.sid] = token_hash
        self._issued_until[token_hash] = session.expires_at

    async def get(self, token_hash: str) -> Session | None:
        return self._live(token_hash)

    async def touch(self, token_hash: str, session: Session) -> bool:
        stored = self._live(token_hash)
        if stored is None or stored.version != session.version - 1:
            return False
        self._by_hash[token_hash] = session
        return True

    async def get_by_sid(self, sid: str) -> Session | None:
        token_hash = self._hash_by_sid.get(sid)
        return None if token_hash is None else self._live(token_hash)

    async def update(
        self, sid: str, change: SessionChange, *, attempts: int = UPDATE_ATTEMPTS
    ) -> Session | None:
        """One process, no await between read and write: the first attempt always wins."""
        token_hash = self._hash_by_sid.get(sid)
        stored = None if token_hash is None else self._live(token_hash)
        if token_hash is None or stored is None:
            return None
        changed = change(stored)
        updated = replace(
            changed, sid=stored.sid, expires_at=stored.expires_at, version=stored.version + 1
        )
        self._by_hash[token_hash] = updated
        return updated
    async def token_hash_of(self, sid: str) -> str | None:
        token_hash = self._hash_by_sid.get(sid)
        return None if token_hash is None or self._live(token_hash) is None else token_hash

    async def revoke(self, token_hash: str) -> Session | None:
        session = self._live(token_hash)
        self._drop(token_hash)
        if session is not None:
            self._revoked_until[token_hash] = session.expires_at
        return session

    async def was_revoked(self, token_hash: str) -> bool:
        return self._revoked_until.get(token_hash, float("-inf")) > self._clock()

    async def was_issued(self, token_hash: str) -> bool:
        return self._issued_until.get(token_hash, float("-inf")) > self._clock()

    async def revoke_sid(self, sid: str) -> Session | None:
        token_hash = self._hash_by_sid.get(sid)
        return None if token_hash is None else await self.revoke(token_hash)

    async def revoke_subject(self, sub: str) -> int:
        hashes = [h for h, s in self._by_hash.items() if s.sub == sub]
        revoked = 0
        for token_hash in hashes:  # an ``await`` inside sum(...) would make it an async generator
            if await self.revoke(token_hash) is not None:
                revoked += 1
        return revoked

    async def list_subject(self, sub: str) -> list[Session]:
        self._sweep()
        return sorted(
            (s for s in self._by_hash.values() if s.sub == sub), key=lambda s: s.created_at
        )

    async def rotate(
        self, token_hash: str, version: int, session: Session, successor: Successor
    ) -> Successor | None:
        self._sweep()
        earlier = await self.successor(token_hash)
        if earlier is not None:
            return earlier
        current = self._live(token_hash)
        if current is None or current.version != version:
            return None
        self._drop(token_hash)
        self._by_hash[successor.token_hash] = session
        self._hash_by_sid[session.sid] = successor.token_hash
        self._successors[token_hash] = successor
        self._revoked_until[token_hash] = current.expires_at
        self._issued_until[successor.token_hash] = session.expires_at
        return successor

    async def successor(self, token_hash: str) -> Successor | None:
        found = self._successors.get(token_hash)
        return found if found is not None and found.until > self._clock() else None

    async def ping(self) -> None:
        return None

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None
