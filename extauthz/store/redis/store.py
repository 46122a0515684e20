"""The Redis session store: session records, the index by sid and subject, revocations, token
rotations and session updates that publish an invalidation (and wait for the barriers they are
given), and ``WAIT`` for the replicas before a write counts (else
:class:`StoreWriteNotDurable`); the primary's plumbing is :class:`~extauthz.store.redis.primary.
RedisPrimary`.

The client is handed in (owned by :class:`~extauthz.store.redis.clients.RedisClients`, never
closed here): this module does not know the topology. Key layout, ``WAIT`` and ``READONLY``
handling: docs/strategies.md, 'Keys' and 'Writes that must survive a failover'.
"""

from __future__ import annotations

import functools
import math
from dataclasses import replace
from typing import Any, TypeVar

from redis.commands.core import AsyncScript

from extauthz.errors import StoreWriteNotDurable
from extauthz.store.model import (
    UPDATE_ATTEMPTS,
    Session,
    SessionChange,
    Successor,
    VersionConflict,
)
from extauthz.store.redis import scripts
from extauthz.store.redis.errors import text
from extauthz.store.redis.primary import RedisPrimary
from extauthz.tokens import TAG_LENGTH, subject_tag

T = TypeVar("T")
# how many further tokens one revocation follows when rotations moved the session meanwhile
ROTATED_REVOKE_HOPS = 3
# an index is cleared of sessions past their absolute expiry when it grows beyond this, then
# whenever it has doubled since (scripts.CREATE), examining at most INDEX_PRUNE_STEP entries
# (an HSCAN COUNT) per creation
INDEX_PRUNE_ABOVE = 32
INDEX_PRUNE_STEP = 128
# the HSCAN COUNT of a subject's listing and revoke-all (a listpack-encoded index answers whole)
INDEX_SCAN_COUNT = 512


class RedisSessionStore(RedisPrimary):
    """The session store on the primary (:class:`~extauthz.store.model.SessionStore`)."""

    backend = "redis"

    async def create(self, token_hash: str, session: Session) -> None:
        """A tagged session: one script (:data:`~extauthz.store.redis.scripts.CREATE`, the
        record and the slot's index) in one durable round trip; one from before tags: the keys
        it had then."""
        record = session.to_record()
        if not self.keys.record_lasts_until_expiry(token_hash):
            await self._run("create", lambda: self._create_legacy(token_hash, session, record))
            return
        index, field = self.keys.index(session.sid)
        # the tag of every entry of a tag's index; '' for a slot's, whose fields start with it
        entry_tag = "" if field == session.sid else session.sid[:TAG_LENGTH]
        keys = (self._session_key(token_hash), index)
        args = (
            record, self._record_ttl_ms(token_hash, session), field,
            self.keys.index_value(token_hash), self.keys.prefix, INDEX_PRUNE_ABOVE, entry_tag,
            INDEX_PRUNE_STEP,
        )  # fmt: skip

        async def op() -> None:
            if self._wait_replicas == 0:  # no WAIT: the script alone (EVALSHA), one reply
                await self._create_script(keys=keys, args=args)
                return
            async with await self._transaction(self._session_key(token_hash)) as pipe:
                pipe.eval(scripts.CREATE, len(keys), *keys, *args)
                await pipe.execute()  # raises StoreWriteNotDurable

        await self._run("create", op)

    @functools.cached_property
    def _create_script(self) -> AsyncScript:
        return self._redis.register_script(scripts.CREATE)

    async def _create_legacy(self, token_hash: str, session: Session, record: bytes) -> None:
        ttl = self._ttl_ms(session)
        absolute_ms = max(1, math.ceil((session.expires_at - self._clock()) * 1000))
        index, _ = self.keys.index(session.sid)
        subject_key = self.keys.legacy_subject(session.sub)
        async with await self._transaction(self._session_key(token_hash)) as pipe:
            pipe.set(self._session_key(token_hash), record, px=ttl)
            pipe.set(index, token_hash, px=ttl)
            # the marker: a cookie of this session that idled out is not taken for a guess
            pipe.set(self._issued_key(token_hash), "1", px=absolute_ms)
            pipe.sadd(subject_key, session.sid)
            pipe.pexpire(subject_key, absolute_ms, gt=True)
            pipe.pexpire(subject_key, absolute_ms, nx=True)
            await pipe.execute()  # raises StoreWriteNotDurable

    def _record_ttl_ms(self, token_hash: str, session: Session) -> int:
        """A tagged record lasts until the absolute expiry (it is the issued marker too);
        one from before tags until the session's deadline."""
        if not self.keys.record_lasts_until_expiry(token_hash):
            return self._ttl_ms(session)
        return max(1, math.ceil((session.expires_at - self._clock()) * 1000))

    async def get(self, token_hash: str) -> Session | None:
        raw = await self._run("get", lambda: self._redis.get(self._session_key(token_hash)))
        return self._decode(raw)

    def _decode(self, raw: bytes | str | None) -> Session | None:
        """The live session in ``raw``: ``None`` for no record, a corrupt one, or one past its
        deadline (a tagged record outlives its idle deadline as the issued marker)."""
        if raw is None:
            return None
        try:
            session = Session.from_record(raw)
        except ValueError:
            return None  # a corrupt record names no live session
        return session if session.is_alive(self._clock()) else None

    async def touch(self, token_hash: str, session: Session) -> bool:
        async def op() -> bool:
            # never re-create a record that a logout deleted meanwhile, never overwrite one
            # that a session update changed meanwhile
            index, field = self.keys.index(session.sid)
            stored = await self._redis.eval(
                scripts.TOUCH, 2, self._session_key(token_hash), index, session.to_record(),
                self._record_ttl_ms(token_hash, session), session.version - 1, field,
            )  # fmt: skip
            return bool(stored == 1)

        return await self._run("touch", op)

    async def get_by_sid(self, sid: str) -> Session | None:
        async def op() -> Any:
            token_hash = await self._index_get(sid)
            if token_hash is None:
                return None
            return await self._redis.get(self._session_key(token_hash))

        return self._decode(await self._run("get_by_sid", op))

    async def _index_get(self, sid: str) -> str | None:
        """The token hash session ``sid``'s index entry names (inside an operation)."""
        index, field = self.keys.index(sid)
        found = await (self._redis.hget(index, field) if field else self._redis.get(index))
        return None if found is None else self.keys.entry_token_hash(sid, text(found))

    async def update(
        self, sid: str, change: SessionChange, *, attempts: int = UPDATE_ATTEMPTS
    ) -> Session | None:
        for _ in range(max(1, attempts)):
            token_hash = await self._run("update", lambda: self._index_get(sid))
            if token_hash is None:
                return None
            stored = self._decode(await self._get_record(text(token_hash)))
            if stored is None:
                return None
            changed = change(stored)  # may raise: nothing written
            updated = replace(
                changed, sid=stored.sid, expires_at=stored.expires_at, version=stored.version + 1
            )
            written = await self._replace_if_version(text(token_hash), stored.version, updated)
            if written < 0:
                return None
            if written > 0:
                await self._barriers(await self._publish("update", text(token_hash)))
                return updated
        raise VersionConflict(f"session changed by other writes in {attempts} attempts")

    async def _get_record(self, token_hash: str) -> Any:
        return await self._run("update", lambda: self._redis.get(self._session_key(token_hash)))

    async def _replace_if_version(self, token_hash: str, version: int, new: Session) -> int:
        """Write ``new`` over the record of ``token_hash`` if its version is ``version``
        (:data:`~extauthz.store.redis.scripts.REPLACE_IF_VERSION`: 1 written, 0 changed
        meanwhile, -1 gone); the caller publishes it (:meth:`_publish`)."""

        async def op() -> int:
            index, field = self.keys.index(new.sid)
            async with await self._transaction(self._session_key(token_hash)) as pipe:
                pipe.eval(
                    scripts.REPLACE_IF_VERSION, 2, self._session_key(token_hash), index,
                    new.to_record(), version, self.keys.index_value(token_hash), field,
                )  # fmt: skip
                results = await pipe.execute()  # raises StoreWriteNotDurable
            return int(results[-1])

        return await self._run("update", op)

    async def token_hash_of(self, sid: str) -> str | None:
        """Only of a live session (an index hash keeps entries until the absolute expiry)."""

        async def op() -> str | None:
            token_hash = await self._index_get(sid)
            if token_hash is None or not self.keys.record_lasts_until_expiry(token_hash):
                return token_hash
            live = self._decode(await self._redis.get(self._session_key(token_hash)))
            return None if live is None else token_hash

        return await self._run("token_hash_of", op)

    async def revoke(self, token_hash: str) -> Session | None:
        return await self._revoke(token_hash, hops=ROTATED_REVOKE_HOPS)

    async def _revoke(self, token_hash: str, hops: int) -> Session | None:
        """Revoke the record of ``token_hash``; when a rotation moved the session to a new
        token between the read and the write, revoke that one too (at most ``hops`` more).
        The deletion (one slot) comes first, then its invalidation (:meth:`_publish`), also
        when nothing was left to delete (a retry after a failure between the two)."""

        async def op() -> tuple[Session | None, bool]:
            raw = await self._redis.get(self._session_key(token_hash))
            session = self._decode(raw)
            async with await self._transaction(self._session_key(token_hash)) as pipe:
                if session is None and raw is not None and self.keys.record_lasts_until_expiry(
                    token_hash
                ):
                    pass  # ended (idle timeout): the record stays as the token's issued marker
                elif session is None:
                    pipe.delete(self._session_key(token_hash))
                else:
                    index, field = self.keys.index(session.sid)
                    subject_key = index if field else self.keys.legacy_subject(session.sub)
                    pipe.eval(
                        scripts.REVOKE_RECORD, 3, self._session_key(token_hash), index,
                        subject_key, self.keys.index_value(token_hash), session.sid, field,
                    )  # fmt: skip
                    # the tombstone: a stale cookie of this session is not taken for a guess
                    left_ms = math.ceil((session.expires_at - self._clock()) * 1000)
                    if left_ms > 0:
                        pipe.set(self._revoked_key(token_hash), "1", px=left_ms)
                results = await pipe.execute()  # raises StoreWriteNotDurable
            return session, session is not None and int(results[0]) == 0

        try:
            session, moved = await self._run("revoke", op)
        except StoreWriteNotDurable:
            # deleted on the primary: publish, a retry by sid only waits for the newest (_settle)
            await self._publish("revoke", token_hash)
            raise
        await self._barriers(await self._publish("revoke", token_hash))
        if moved and session is not None and hops > 0:
            # rotated between the read and the write: the session lives on under its new token
            sid = session.sid
            current = await self._run("revoke", lambda: self._index_get(sid))
            if current is not None and current != token_hash:
                await self._revoke(current, hops - 1)
        return session

    async def was_revoked(self, token_hash: str) -> bool:
        found = await self._run(
            "was_revoked", lambda: self._redis.exists(self._revoked_key(token_hash))
        )
        return bool(found)

    async def was_issued(self, token_hash: str) -> bool:
        found = await self._run(
            "was_issued", lambda: self._redis.exists(self._issued_key(token_hash))
        )
        return bool(found)

    async def rotate(
        self, token_hash: str, version: int, session: Session, successor: Successor
    ) -> Successor | None:
        """One Lua script (:data:`~extauthz.store.redis.scripts.ROTATE`, the session's slot)
        in a durable transaction: atomic on the primary, then ``WAIT`` as for :meth:`create`.
        The invalidation of ``token_hash`` is published after (:meth:`_publish`), without
        waiting for the caches: the old token stays valid for the grace, which settings keep
        longer than the caches' trust window.

        :raises StoreWriteNotDurable: the rotation is on the primary but not on the replicas
            (a retry returns the same successor).
        """

        async def op() -> list[Any]:
            now = self._clock()
            tombstone_ms = max(0, math.ceil((session.expires_at - now) * 1000))
            index, field = self.keys.index(session.sid)
            async with await self._transaction(self._session_key(token_hash)) as pipe:
                pipe.eval(
                    scripts.ROTATE, 6, self._session_key(token_hash),
                    self._successor_key(token_hash), self._session_key(successor.token_hash),
                    index, self._revoked_key(token_hash), self._issued_key(successor.token_hash),
                    version, session.to_record(),
                    self._record_ttl_ms(successor.token_hash, session), successor.to_json(),
                    max(1, math.ceil((successor.until - now) * 1000)), tombstone_ms,
                    self.keys.index_value(successor.token_hash), field,
                )  # fmt: skip
                (reply,) = await pipe.execute()  # raises StoreWriteNotDurable
            return list(reply)

        reply = await self._run("rotate", op)
        if int(reply[0]) < 0:
            return None
        if int(reply[0]) == 1:
            await self._publish("rotate", token_hash)
        try:
            return Successor.from_json(reply[1])
        except ValueError:
            return None  # a corrupt successor record names no session

    async def successor(self, token_hash: str) -> Successor | None:
        raw = await self._run(
            "successor", lambda: self._redis.get(self._successor_key(token_hash))
        )
        if raw is None:
            return None
        try:
            found = Successor.from_json(raw)
        except ValueError:
            return None
        return found if found.until > self._clock() else None

    async def revoke_sid(self, sid: str) -> Session | None:
        token_hash = await self._found_or_replicated(
            "revoke_sid", self.keys.index(sid)[0], lambda: self._index_get(sid)
        )
        if token_hash is None:
            await self._settle("revoke_sid")
            return None
        revoked = await self.revoke(token_hash)
        if revoked is None:
            # rotated between reading the sid and the record: the sid names the new token now
            current = await self._run("revoke_sid", lambda: self._index_get(sid))
            if current is not None and current != token_hash:
                return await self.revoke(current)
        return revoked

    async def revoke_subject(self, sub: str) -> int:
        sids = await self._found_or_replicated(
            "revoke_subject", self.keys.tag_index(subject_tag(sub)), lambda: self._subject_sids(sub)
        )
        if not sids:
            await self._settle("revoke_subject")
        revoked = 0
        for sid in sids:
            if await self.revoke_sid(sid) is not None:
                revoked += 1
        return revoked

    async def _subject_sids(self, sub: str) -> list[str]:
        """The ids of ``sub``'s sessions, sorted: the entries of its tag in its slot's index
        (``HSCAN MATCH <tag>-*``) and in its tag's index (sids minted before slot indexes)
        whose record is ``sub``'s (or is gone: then nothing tells, and revoking it changes
        nothing), and the members of its set from before tags."""
        tag = subject_tag(sub)
        sids = {text(s) for s in await self._redis.smembers(self.keys.legacy_subject(sub))}
        old = await self._redis.hgetall(self.keys.tag_index(tag))
        entries = {f"{tag}.{text(f)}": text(v) for f, v in old.items() if text(f) != "#"}
        slot_index = self._redis.hscan_iter(
            self.keys.slot_index(tag), match=f"{tag}-*", count=INDEX_SCAN_COUNT
        )
        entries.update({text(f): text(v) async for f, v in slot_index})
        for sid, value in entries.items():
            raw = await self._redis.get(self._session_key(self.keys.entry_token_hash(sid, value)))
            if raw is None:  # rotated since the index was read, or ended: read it again
                current = await self._index_get(sid)
                raw = None if current is None else await self._redis.get(self._session_key(current))
            if raw is None or _subject_of(raw) in (sub, None):
                sids.add(sid)
        return sorted(sids)

    async def list_subject(self, sub: str) -> list[Session]:
        async def op() -> list[Any]:
            records = []
            for sid in await self._subject_sids(sub):
                token_hash = await self._index_get(sid)
                if token_hash is None:  # ended (idle timeout) without a revocation
                    await self._redis.srem(self.keys.legacy_subject(sub), sid)
                    continue
                records.append(await self._redis.get(self._session_key(token_hash)))
            return records

        records = await self._run("list_subject", op)
        sessions = [s for s in map(self._decode, records) if s is not None and s.sub == sub]
        return sorted(sessions, key=lambda s: s.created_at)

    async def start(self) -> None:
        """Nothing runs in the background here."""

    async def stop(self) -> None:
        """Nothing to stop: the client belongs to its owner."""


def _subject_of(raw: bytes | str) -> str | None:
    """The subject of a stored record, ``None`` when it is not a record."""
    try:
        return Session.from_record(raw).sub
    except ValueError:
        return None
