"""The primary's side of the Redis session store: the key layout, running an operation on the
primary (re-resolving it after a failover: ``READONLY``, a short ``WAIT``), durable
transactions (``MULTI``/``EXEC`` then ``WAIT``) and the barriers a published change waits for.
:class:`~extauthz.store.redis.store.RedisSessionStore` builds the session operations on it.
Key layout, ``WAIT`` and ``READONLY`` handling: docs/strategies.md, 'Keys' and 'Writes that
must survive a failover'.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.asyncio.sentinel import SentinelConnectionPool

from extauthz.store.model import Session
from extauthz.store.redis import scripts
from extauthz.store.redis.durable import DurablePipeline
from extauthz.store.redis.errors import (
    StoreUnavailable,
    StoreWriteNotDurable,
    demoted,
    store_errors,
    text,
    translated,
)
from extauthz.store.redis.keys import SessionKeys

T = TypeVar("T")


class RedisPrimary:
    """See the module docstring; the client is handed in and never closed here."""

    def __init__(
        self,
        client: aioredis.Redis,
        key_prefix: str = "extauthz:",
        *,
        wait_replicas: int | str = 0,
        wait_timeout_ms: int = 500,
        clock: Callable[[], float] = time.time,
        invalidation_barrier: Callable[[int], Awaitable[None]] | None = None,
        replica_barrier: Callable[[int], Awaitable[None]] | None = None,
        replicas_read: Callable[[], Awaitable[int]] | None = None,
    ) -> None:
        """``wait_replicas``: a count, or ``"all"``: every replica the primary reports online,
        or, given ``replicas_read`` (how many replicas nodes read from: ``replicated``'s
        :func:`~extauthz.store.redis.lease.leased_replicas`), that many of them, at least
        one. ``wait_timeout_ms``: how long a write waits for them."""
        self._redis = client
        self._replicas_read = replicas_read
        self._invalidation_barrier = invalidation_barrier
        self._replica_barrier = replica_barrier
        self._prefix = key_prefix
        self._wait_replicas = wait_replicas
        self._wait_timeout_ms = wait_timeout_ms
        self._clock = clock
        self.keys = SessionKeys(key_prefix)
        self.invalidation_channel = key_prefix + "invalidate"

    def _session_key(self, token_hash: str) -> str:
        return self.keys.record(token_hash)

    def _sid_key(self, sid: str) -> str:
        return self.keys.sid(sid)

    def _revoked_key(self, token_hash: str) -> str:
        return self.keys.revoked(token_hash)

    def _issued_key(self, token_hash: str) -> str:
        return self.keys.issued(token_hash)

    def _successor_key(self, token_hash: str) -> str:
        return self.keys.successor(token_hash)

    def _ttl_ms(self, session: Session) -> int:
        return max(1, math.ceil((session.deadline - self._clock()) * 1000))

    @property
    def client(self) -> aioredis.Redis:
        """The primary's client (for components that share the store, e.g. the registry)."""
        return self._redis

    async def _run(self, what: str, op: Callable[[], Awaitable[T]]) -> T:
        """Run ``op`` against the primary. When the node turns out to be demoted
        (``READONLY``, or ``WAIT`` refused by a replica), or ``WAIT`` falls short while the
        Sentinels already name another primary, re-resolve the primary and try once more."""
        try:
            async with store_errors(what):
                return await op()
        except StoreUnavailable as exc:  # StoreWriteNotDurable included
            if not await self._repoint(exc):
                raise
        async with store_errors(what):
            return await op()

    async def _repoint(self, exc: StoreUnavailable) -> bool:
        """After ``exc``: should the operation be tried again on a re-resolved primary?"""
        pool = self._redis.connection_pool
        was_demoted = demoted(exc)
        if not was_demoted and not isinstance(exc, StoreWriteNotDurable):
            return False
        if isinstance(pool, SentinelConnectionPool):
            before = pool.master_address
            try:
                async with store_errors("discover primary"):
                    after = await pool.get_master_address()
            except StoreUnavailable:
                return False
            if not was_demoted and after == before:
                return False  # WAIT fell short on the real primary: a genuine failure
        elif not was_demoted:
            return False
        # Drop every pooled connection: the next ones connect to the primary named now.
        await pool.disconnect()
        return True

    @translated("online replicas")
    async def online_replicas(self) -> int:
        """How many replicas the primary reports ``state=online`` (``INFO replication``)."""
        return await self._online_replicas()

    async def _online_replicas(self) -> int:
        info = await self._redis.info("replication")
        return sum(1 for key, value in info.items() if _is_online_replica(key, value))

    async def _all_replicas(self) -> int:
        """What ``WAIT "all"`` waits for (see :meth:`__init__`)."""
        if self._replicas_read is None:
            return await self._online_replicas()
        online, read = await asyncio.gather(self._online_replicas(), self._replicas_read())
        return min(online, max(1, read))

    async def _transaction(self) -> DurablePipeline:
        """A pipeline whose ``execute`` runs its commands in ``MULTI``/``EXEC``, then waits
        (``WAIT``) for ``wait_replicas`` replicas on the same connection
        (:class:`~extauthz.store.redis.durable.DurablePipeline`)."""
        wanted = self._wait_replicas
        if wanted == "all":
            wanted = await self._all_replicas()
        assert isinstance(wanted, int)
        return DurablePipeline(self._redis, wanted, self._wait_timeout_ms)

    async def _publish(self, what: str, token_hash: str) -> int:
        """Publish the invalidation of ``token_hash`` (:data:`~extauthz.store.redis.scripts.
        PUBLISH`: the next sequence number, then the message) durably; return the number.

        Every change a cache must not serve any more (revocation, session update, token
        rotation) is written first, in a script or ``MULTI`` of its session's slot, and
        published after, here: on Redis Cluster the sequence number and the channel live in a
        slot of their own. Why that keeps revocation synchronous: a cache drops the hash when
        the message arrives, and reads the record again (already changed: it was written
        before the number existed); the writer reports success only after :meth:`_barriers`
        saw every live cache acknowledge this number or a later one (acknowledgements are
        monotonic); a cache that misses the message misses its proof of liveness too and
        stops answering within its trust window (:mod:`~extauthz.store.redis.invalidation`).
        A writer that fails between the two steps reports failure: the caller retries, and a
        revocation publishes again even when it finds nothing left to delete.
        """

        async def op() -> int:
            async with await self._transaction() as pipe:
                pipe.eval(
                    scripts.PUBLISH,
                    1,
                    self.invalidation_channel + ":seq",
                    self.invalidation_channel,
                    token_hash,
                )
                (seq,) = await pipe.execute()  # raises StoreWriteNotDurable
            return int(seq)

        return await self._run(what, op)

    async def _barriers(self, seq: int) -> None:
        """Wait until the change numbered ``seq`` reached every reader's replica and every
        caching node (the barriers this store was given)."""
        if self._replica_barrier is not None:
            await self._replica_barrier(seq)  # raises StoreWriteNotDurable
        if self._invalidation_barrier is not None:
            await self._invalidation_barrier(seq)


def _is_online_replica(key: Any, value: Any) -> bool:
    """One ``slaveN`` entry of a parsed ``INFO replication`` that is ``state=online``."""
    name = text(key)
    if not (name.startswith("slave") and name[5:].isdigit()):
        return False
    if isinstance(value, dict):
        state = value.get("state", value.get(b"state"))
        return state in ("online", b"online")
    return isinstance(value, (bytes, str)) and "state=online" in text(value)
