"""The Redis session store: session records, the per-subject index, revocations, token
rotations and session updates that publish an invalidation (and wait for the barriers they are
given), and ``WAIT`` for the replicas before a write counts (else
:class:`StoreWriteNotDurable`); the primary's plumbing is :class:`~extauthz.store.redis.primary.
RedisPrimary`.

The client is handed in (owned by :class:`~extauthz.store.redis.clients.RedisClients`, never
closed here): this module does not know the topology. Key layout, ``WAIT`` and ``READONLY``
handling: docs/strategies.md, 'Keys' and 'Writes that must survive a failover'.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any, TypeVar

from redis.asyncio.sentinel import SentinelConnectionPool

from extauthz.store.model import (
    UPDATE_ATTEMPTS,
    Session,
    SessionChange,
    Successor,
    VersionConflict,
)
from extauthz.store.redis import scripts
from extauthz.store.redis.cluster import StoreCluster
from extauthz.store.redis.errors import text
from extauthz.store.redis.primary import RedisPrimary

T = TypeVar("T")
# how many further tokens one revocation follows when rotations moved the session meanwhile
ROTATED_REVOKE_HOPS = 3


class RedisSessionStore(RedisPrimary):
    """The session store on the primary (:class:`~extauthz.store.model.SessionStore`)."""

    backend = "redis"

    async def create(self, token_hash: str, session: Session) -> None:
        async def op() -> None:
            ttl = self._ttl_ms(session)
            absolute_ms = max(1, math.ceil((session.expires_at - self._clock()) * 1000))
            async with await self._transaction(self._session_key(token_hash)) as pipe:
                pipe.set(self._session_key(token_hash), session.to_json(), px=ttl)
                pipe.set(self._sid_key(session.sid), token_hash, px=ttl)
                # the marker: a cookie of this session that idled out is not taken for a guess
                pipe.set(self._issued_key(token_hash), "1", px=absolute_ms)
                subject_key = self.keys.subject_of(session.sid, session.sub)
                pipe.sadd(subject_key, session.sid)
                pipe.pexpire(subject_key, absolute_ms, gt=True)
                pipe.pexpire(subject_key, absolute_ms, nx=True)
                await pipe.execute()  # raises StoreWriteNotDurable

        await self._run("create", op)

    async def get(self, token_hash: str) -> Session | None:
        raw = await self._run("get", lambda: self._redis.get(self._session_key(token_hash)))
        return self._decode(raw)

    @staticmethod
    def _decode(raw: bytes | str | None) -> Session | None:
        if raw is None:
            return None
        try:
            return Session.from_json(raw)
        except ValueError:
            return None  # a corrupt record names no live session

    async def touch(self, token_hash: str, session: Session) -> bool:
        async def op() -> bool:
            # never re-create a record that a logout deleted meanwhile, never overwrite one
            # that a session update changed meanwhile
            stored = await self._redis.eval(
                scripts.TOUCH,
                2,
                self._session_key(token_hash),
                self._sid_key(session.sid),
                session.to_json(),
                self._ttl_ms(session),
                session.version - 1,
            )
            return bool(stored == 1)

        return await self._run("touch", op)

    async def get_by_sid(self, sid: str) -> Session | None:
        async def op() -> Any:
            token_hash = await self._redis.get(self._sid_key(sid))
            if token_hash is None:
                return None
            return await self._redis.get(self._session_key(text(token_hash)))

        return self._decode(await self._run("get_by_sid", op))

    async def update(
        self, sid: str, change: SessionChange, *, attempts: int = UPDATE_ATTEMPTS
    ) -> Session | None:
        for _ in range(max(1, attempts)):
            token_hash = await self._run("update", lambda: self._redis.get(self._sid_key(sid)))
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
            async with await self._transaction(self._session_key(token_hash)) as pipe:
                pipe.eval(
                    scripts.REPLACE_IF_VERSION,
                    2,
                    self._session_key(token_hash),
                    self._sid_key(new.sid),
                    new.to_json(),
                    version,
                    token_hash,
                )
                results = await pipe.execute()  # raises StoreWriteNotDurable
            return int(results[-1])

        return await self._run("update", op)

    async def token_hash_of(self, sid: str) -> str | None:
        found = await self._run("token_hash_of", lambda: self._redis.get(self._sid_key(sid)))
        return None if found is None else text(found)

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
                if session is None:
                    pipe.delete(self._session_key(token_hash))
                else:
                    pipe.eval(
                        scripts.REVOKE_RECORD,
                        3,
                        self._session_key(token_hash),
                        self._sid_key(session.sid),
                        self.keys.subject_of(session.sid, session.sub),
                        token_hash,
                        session.sid,
                    )
                    # the tombstone: a stale cookie of this session is not taken for a guess
                    left_ms = math.ceil((session.expires_at - self._clock()) * 1000)
                    if left_ms > 0:
                        pipe.set(self._revoked_key(token_hash), "1", px=left_ms)
                results = await pipe.execute()  # raises StoreWriteNotDurable
            return session, session is not None and int(results[0]) == 0

        session, moved = await self._run("revoke", op)
        await self._barriers(await self._publish("revoke", token_hash))
        if moved and session is not None and hops > 0:
            # rotated between the read and the write: the session lives on under its new token
            sid_key = self._sid_key(session.sid)
            current = await self._run("revoke", lambda: self._redis.get(sid_key))
            if current is not None and text(current) != token_hash:
                await self._revoke(text(current), hops - 1)
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
            async with await self._transaction(self._session_key(token_hash)) as pipe:
                pipe.eval(
                    scripts.ROTATE,
                    6,
                    self._session_key(token_hash),
                    self._successor_key(token_hash),
                    self._session_key(successor.token_hash),
                    self._sid_key(session.sid),
                    self._revoked_key(token_hash),
                    self._issued_key(successor.token_hash),
                    version,
                    session.to_json(),
                    self._ttl_ms(session),
                    successor.to_json(),
                    max(1, math.ceil((successor.until - now) * 1000)),
                    tombstone_ms,
                    successor.token_hash,
                )
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

    async def _settle(self, what: str) -> None:
        """Wait until every revocation made so far, by any node, has passed the barriers.

        A revocation whose first try deleted the record but raised ``StoreWriteNotDurable``
        (a node had not acknowledged it) leaves nothing for a retry to delete; the retry must
        still not report success before that first invalidation has landed everywhere.
        Acknowledgements are monotonic, so waiting for the newest sequence number covers
        every earlier one. (That the deletion itself is on the replicas is
        :meth:`_found_or_replicated`'s part.)
        """
        if self._replica_barrier is None and self._invalidation_barrier is None:
            return
        raw = await self._run(what, lambda: self._redis.get(self.invalidation_channel + ":seq"))
        seq = int(text(raw)) if raw is not None else 0
        if seq <= 0:
            return
        if self._replica_barrier is not None:
            await self._replica_barrier(seq)  # raises StoreWriteNotDurable
        if self._invalidation_barrier is not None:
            await self._invalidation_barrier(seq)

    async def _found_or_replicated(
        self, what: str, key: str, read: Callable[[], Awaitable[T]]
    ) -> T:
        """``read`` (of ``key``) on the primary; when it finds nothing, also wait until
        ``wait_replicas`` replicas have everything the primary (``key``'s) wrote before.

        A revocation whose ``WAIT`` fell short has deleted the record on the primary only; a
        retry that finds nothing must not report success before the deletion is on the
        replicas, or a failover brings the session back. ``WAIT`` counts only the writes of
        its own connection, and a write that changes nothing (``DEL`` of a missing key) is not
        replicated: so it follows a write that is replicated and leaves nothing behind, a
        ``PUBLISH`` on a channel no one subscribes to; the replication stream is ordered, so
        a replica that has it has every earlier write. Both run in one try of :meth:`_run`:
        when the primary changes, the read is repeated on the new one.

        :raises StoreWriteNotDurable: fewer replicas acknowledged within ``wait_timeout_ms``.
        """

        async def op() -> T:
            found = await read()
            if not found and self._wait_replicas != 0:
                await self._replicated_write(key)  # raises StoreWriteNotDurable
            return found

        return await self._run(what, op)

    async def revoke_sid(self, sid: str) -> Session | None:
        sid_key = self._sid_key(sid)
        token_hash = await self._found_or_replicated(
            "revoke_sid", sid_key, lambda: self._redis.get(sid_key)
        )
        if token_hash is None:
            await self._settle("revoke_sid")
            return None
        revoked = await self.revoke(text(token_hash))
        if revoked is None:
            # rotated between reading the sid and the record: the sid names the new token now
            sid_key = self._sid_key(sid)
            current = await self._run("revoke_sid", lambda: self._redis.get(sid_key))
            if current is not None and text(current) != text(token_hash):
                return await self.revoke(text(current))
        return revoked

    async def revoke_subject(self, sub: str) -> int:
        sids = await self._found_or_replicated(
            "revoke_subject", self.keys.subject(sub), lambda: self._subject_sids(sub)
        )
        if not sids:
            await self._settle("revoke_subject")
        revoked = 0
        for sid in sids:
            if await self.revoke_sid(sid) is not None:
                revoked += 1
        return revoked

    async def _get_each(self, keys: list[str]) -> list[Any]:
        """``GET`` of each key in one pipeline (not ``MGET``: the keys of sessions from
        before tags are in slots of their own on Redis Cluster)."""
        pipe = self._redis.pipeline(transaction=False)
        for key in keys:
            pipe.get(key)
        return list(await pipe.execute())

    async def _subject_sids(self, sub: str) -> list[str]:
        """The session ids in ``sub``'s set, and in its set from before tags, sorted."""
        tagged = await self._redis.smembers(self.keys.subject(sub))
        legacy = await self._redis.smembers(self.keys.legacy_subject(sub))
        return sorted({text(s) for s in tagged} | {text(s) for s in legacy})

    async def list_subject(self, sub: str) -> list[Session]:
        async def op() -> list[Any]:
            sids = await self._subject_sids(sub)
            if not sids:
                return []
            hashes = await self._get_each([self._sid_key(s) for s in sids])
            live = [(sid, text(h)) for sid, h in zip(sids, hashes, strict=True) if h]
            for sid, h in zip(sids, hashes, strict=True):
                if not h:  # stale: the session ended (idle timeout) without a revocation
                    await self._redis.srem(self.keys.subject_of(sid, sub), sid)
            if not live:
                return []
            return await self._get_each([self._session_key(h) for _, h in live])

        records = await self._run("list_subject", op)
        sessions = [s for s in (self._decode(r) for r in records) if s is not None]
        return sorted(sessions, key=lambda s: s.created_at)

    async def ping(self) -> None:
        """Answer when the primary does. With a Sentinel-managed client, first ask the
        Sentinels who the primary is: after a graceful failover the old primary keeps
        accepting connections for seconds, and this re-points the pool (the health reporter
        calls it every ``server.health_check_interval_seconds``). On a cluster: when one
        primary does (a failed shard costs its own sessions 503s, not the node's health)."""

        async def op() -> None:
            if isinstance(self._redis, StoreCluster):
                return await self._redis.ping_any()
            pool = self._redis.connection_pool
            if isinstance(pool, SentinelConnectionPool):
                await pool.get_master_address()
            await self._redis.ping()

        await self._run("ping", op)

    async def start(self) -> None:
        """Nothing runs in the background here."""

    async def stop(self) -> None:
        """Nothing to stop: the client belongs to its owner."""
