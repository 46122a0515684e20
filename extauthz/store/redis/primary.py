"""The primary's side of the Redis session store: the key layout, running an operation on the
primary (re-resolving it after a failover: ``READONLY``, a short ``WAIT``), durable
transactions (``MULTI``/``EXEC`` then ``WAIT``), the barriers a published change waits for, and
the health probe (:meth:`RedisPrimary.ping`).
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
from redis.exceptions import ConnectionError, RedisError, TimeoutError

from extauthz.store.model import Session
from extauthz.store.redis import scripts
from extauthz.store.redis.clients import Redis
from extauthz.store.redis.cluster import StoreCluster, is_cluster, slot_channel
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
        client: Redis,
        key_prefix: str = "extauthz:",
        *,
        wait_replicas: int | str = 0,
        wait_timeout_ms: int = 500,
        clock: Callable[[], float] = time.time,
        invalidation_barrier: Callable[[int], Awaitable[None]] | None = None,
        replica_barrier: Callable[[int], Awaitable[None]] | None = None,
        replicas_read: Callable[[], Awaitable[int]] | None = None,
        observe: Callable[[str, float], None] | None = None,
    ) -> None:
        """``wait_replicas``: a count, or ``"all"``: every replica the primary reports online,
        or, given ``replicas_read`` (how many replicas nodes read from: ``replicated``'s
        :func:`~extauthz.store.redis.lease.leased_replicas`), that many of them, at least
        one. ``wait_timeout_ms``: how long a write waits for them. ``observe(operation,
        seconds)`` is told how long each operation took (:meth:`_run`), failures included."""
        self._redis = client
        self._replicas_read = replicas_read
        self._invalidation_barrier = invalidation_barrier
        self._replica_barrier = replica_barrier
        self._prefix = key_prefix
        self._wait_replicas = wait_replicas
        self._wait_timeout_ms = wait_timeout_ms
        self._clock = clock
        self._observe = observe
        self.keys = SessionKeys(key_prefix)
        # on a cluster every channel and key of the invalidation shares one slot
        # (extauthz.store.redis.cluster); on a single primary the names stay as they were
        tag = "{inv}" if is_cluster(client) else ""
        self.invalidation_channel = key_prefix + tag + "invalidate"
        # the script that numbers and publishes an invalidation (a shard channel on a cluster)
        self.publish_script = scripts.SHARDED_PUBLISH if is_cluster(client) else scripts.PUBLISH

    def _session_key(self, token_hash: str) -> str:
        return self.keys.record(token_hash)

    def _revoked_key(self, token_hash: str) -> str:
        return self.keys.revoked(token_hash)

    def _issued_key(self, token_hash: str) -> str:
        return self.keys.issued(token_hash)

    def _successor_key(self, token_hash: str) -> str:
        return self.keys.successor(token_hash)

    def _ttl_ms(self, session: Session) -> int:
        return max(1, math.ceil((session.deadline - self._clock()) * 1000))

    @property
    def client(self) -> Redis:
        """The primary's client (for components that share the store, e.g. the registry)."""
        return self._redis

    async def _run(self, what: str, op: Callable[[], Awaitable[T]]) -> T:
        """Run ``op`` against the primary. When the node turns out to be demoted
        (``READONLY``, or ``WAIT`` refused by a replica), or ``WAIT`` falls short while the
        Sentinels already name another primary, re-resolve the primary and try once more. On a
        cluster: after a connection error or a redirection, read the slot map again and try
        once more (the shard's replica may have been promoted). Every store operation passes
        here: the one place it is timed (``observe``)."""
        if self._observe is None:
            return await self._run_once_more(what, op)
        started = time.perf_counter()
        try:
            return await self._run_once_more(what, op)
        finally:
            self._observe(what, time.perf_counter() - started)

    async def _run_once_more(self, what: str, op: Callable[[], Awaitable[T]]) -> T:
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
        if isinstance(self._redis, StoreCluster):
            return await _refreshed(self._redis, exc)
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

    @translated("online replicas")
    async def online_replicas(self) -> int:
        """How many replicas the primary reports ``state=online`` (``INFO replication``)."""
        return await self._online_replicas()

    async def _online_replicas(self, shard: aioredis.Redis | None = None) -> int:
        if shard is None and isinstance(self._redis, StoreCluster):
            return 0  # one shard's count says nothing of the others
        info = await (shard or self._redis).info("replication")
        return sum(1 for key, value in info.items() if _is_online_replica(key, value))

    async def _all_replicas(self, shard: aioredis.Redis) -> int:
        """What ``WAIT "all"`` waits for (see :meth:`__init__`)."""
        if self._replicas_read is None:
            return await self._online_replicas(shard)
        online, read = await asyncio.gather(self._online_replicas(shard), self._replicas_read())
        return min(online, max(1, read))

    async def _transaction(self, key: str = "") -> DurablePipeline:
        """A pipeline whose ``execute`` runs its commands in ``MULTI``/``EXEC``, then waits
        (``WAIT``) for ``wait_replicas`` replicas on the same connection
        (:class:`~extauthz.store.redis.durable.DurablePipeline`). On a cluster, on the primary
        that owns ``key``'s slot (every key of the transaction must share that slot), and
        ``"all"`` counts that shard's replicas."""
        client = self._redis
        if isinstance(client, StoreCluster):
            shard = await client.shard_for(key)
        else:
            shard = client
        wanted = self._wait_replicas
        if wanted == "all":
            wanted = await self._all_replicas(shard)
        assert isinstance(wanted, int)
        return DurablePipeline(shard, wanted, self._wait_timeout_ms)

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
            async with await self._transaction(self.invalidation_channel) as pipe:
                pipe.eval(
                    self.publish_script,
                    1,
                    self.invalidation_channel + ":seq",
                    self.invalidation_channel,
                    token_hash,
                )
                (seq,) = await pipe.execute()  # raises StoreWriteNotDurable
            return int(seq)

        return await self._run(what, op)

    async def _replicated_write(self, key: str) -> None:
        """A write that replicates and leaves nothing behind, and its ``WAIT``, on ``key``'s
        primary: a ``PUBLISH`` that no one hears on one primary; on a cluster an ``SPUBLISH``
        (a cluster's ``PUBLISH`` is not in the shard's replication stream) on a channel in
        ``key``'s slot (:func:`~extauthz.store.redis.cluster.slot_channel`).

        :raises StoreWriteNotDurable: fewer replicas acknowledged within ``wait_timeout_ms``.
        """
        async with await self._transaction(key) as pipe:
            if is_cluster(self._redis):
                pipe.spublish(slot_channel(key, "sync"), "")
            else:
                pipe.publish(self.invalidation_channel + ":sync", "")
            await pipe.execute()

    async def _barriers(self, seq: int) -> None:
        """Wait until the change numbered ``seq`` reached every reader's replica and every
        caching node (the barriers this store was given)."""
        if self._replica_barrier is not None:
            await self._replica_barrier(seq)  # raises StoreWriteNotDurable
        if self._invalidation_barrier is not None:
            await self._invalidation_barrier(seq)

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


async def _refreshed(cluster: StoreCluster, exc: StoreUnavailable) -> bool:
    """After ``exc`` on a cluster: read the slot map again when the error may mean that the
    slot's primary changed (a lost connection, ``MOVED``/``ASK``, ``READONLY``, ``CLUSTERDOWN``,
    a transaction aborted by one of those); ``True`` when the owner of some slot changed, so
    a second try may reach the promoted primary."""
    cause = exc.__cause__
    moved = isinstance(cause, (ConnectionError, TimeoutError, OSError)) or demoted(exc) or (
        isinstance(cause, RedisError)
        and any(sign in str(cause) for sign in ("MOVED", "ASK", "CLUSTERDOWN", "EXECABORT"))
    )
    if not moved and not isinstance(exc, StoreWriteNotDurable):
        return False
    before = dict(cluster.nodes_manager.slots_cache)
    try:
        async with store_errors("cluster slots"):
            await cluster.refresh()
    except StoreUnavailable:
        return False
    after = cluster.nodes_manager.slots_cache
    changed = any(
        [n.name for n in nodes[:1]] != [n.name for n in after.get(slot, [])[:1]]
        for slot, nodes in before.items()
    )
    return changed or (moved and not isinstance(exc, StoreWriteNotDurable))


def _is_online_replica(key: Any, value: Any) -> bool:
    """One ``slaveN`` entry of a parsed ``INFO replication`` that is ``state=online``."""
    name = text(key)
    if not (name.startswith("slave") and name[5:].isdigit()):
        return False
    if isinstance(value, dict):
        state = value.get("state", value.get(b"state"))
        return state in ("online", b"online")
    return isinstance(value, (bytes, str)) and "state=online" in text(value)
