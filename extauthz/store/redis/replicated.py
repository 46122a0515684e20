"""The ``replicated`` strategy's store: reads from the node's own replica, writes to the primary.

A read asks the replica first and falls back to the primary on a miss, or when the replica
cannot answer or is stale (its link to the primary older than ``max_staleness_seconds``). The
replica's positive answers count only while this node holds its read lease
(:mod:`extauthz.store.redis.lease`), which it gives up when its replica trails the primary by
more than a write waits for it (``max_lag_seconds``): writes wait only for the replicas of
lease holders.
The protocol and its failure cases: docs/strategies.md, 'replicated'.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

import redis.asyncio as aioredis

from extauthz.loops import Loop
from extauthz.store.model import (
    UPDATE_ATTEMPTS,
    Session,
    SessionChange,
    SessionStore,
    Successor,
)
from extauthz.store.redis.channel import Channel
from extauthz.store.redis.clients import Redis
from extauthz.store.redis.errors import StoreUnavailable, store_errors
from extauthz.store.redis.lease import LEASE_RENEW_SECONDS, LEASE_SLACK_SECONDS, ReplicaReadLease
from extauthz.store.redis.membership import Membership
from extauthz.store.redis.replication import UNREACHABLE, ReplicaState, ReplicationLag
from extauthz.store.redis.store import RedisSessionStore

log = logging.getLogger("extauthz.store")

FRESHNESS_CHECK_INTERVAL_SECONDS = 0.1


class ReplicatedSessionStore:
    """Satisfies :class:`~extauthz.store.model.SessionStore`.

    :param primary: the store on the primary (all writes; the fallback for reads).
    :param replica: a client of this node's replica (reads only; not owned).
    :param membership: the process's membership (the read lease is its READER membership).
    :param channel: the node's subscription on the replica.
    :param max_staleness_seconds: see the module docstring.
    :param max_lag_seconds: the longest delay of the replica's data (behind the primary's)
        under which the node keeps its lease: what a write waits for a replica
        (``store.wait_timeout_ms``).

    The read lease is kept by a loop started by :meth:`start`, or by the first read; until
    it is held, reads go to the primary.
    """

    backend = "redis"

    def __init__(
        self,
        primary: RedisSessionStore,
        replica: aioredis.Redis,
        membership: Membership,
        channel: Channel,
        key_prefix: str = "extauthz:",
        *,
        max_staleness_seconds: float = 5.0,
        max_lag_seconds: float = 0.25,
        freshness_check_interval: float = FRESHNESS_CHECK_INTERVAL_SECONDS,
        monotonic: Callable[[], float] = time.monotonic,
        observe_replica: Callable[[str, float], None] | None = None,
    ) -> None:
        self._primary = primary
        self._replica_client = replica
        # observe_replica(operation, seconds): the replica's reads, timed like the primary's
        self._replica = RedisSessionStore(replica, key_prefix, observe=observe_replica)
        self._max_staleness = max_staleness_seconds
        self._max_lag = max_lag_seconds
        self._lag = ReplicationLag()
        # the replica's data trailed the primary's by more than max_lag at the last look
        self.lagging = False
        self._interval = freshness_check_interval
        self._monotonic = monotonic
        self._checked_at = float("-inf")
        self._usable = False
        self._lock = asyncio.Lock()
        self.lease = ReplicaReadLease(
            membership,
            replica,
            channel,
            key_prefix,
            lease_seconds=max_staleness_seconds + LEASE_SLACK_SECONDS,
            clock=monotonic,
        )
        self._maintainer = Loop(
            "replica-lease", self.maintain_lease, interval=LEASE_RENEW_SECONDS, logger=log
        )
        self._started = False
        self.invalidation_channel = primary.invalidation_channel
        # counters for tests and the status page: where reads were answered
        self.replica_hits = 0
        self.primary_reads = 0

    @property
    def client(self) -> Redis:
        """The primary's client."""
        return self._primary.client

    async def start(self) -> None:
        """Start keeping the read lease (idempotent)."""
        if not self._started:
            self._started = True
            await self.lease.start()
            await self._maintainer.start()

    async def stop(self) -> None:
        """Withdraw the read lease (revokers stop waiting for this node)."""
        if self._started:
            self._started = False
            await self._maintainer.stop()
            await self.lease.stop()

    async def _replication(self) -> ReplicaState:
        """The replica's ``INFO replication``; :data:`UNREACHABLE` when it does not answer."""
        try:
            async with store_errors("replica info"):
                return ReplicaState.from_info(await self._replica_client.info("replication"))
        except StoreUnavailable:
            return UNREACHABLE

    async def _behind(self, replica: ReplicaState, asked: float) -> float | None:
        """Seconds ``replica`` (read at ``asked``) trails the primary
        (:class:`~extauthz.store.redis.replication.ReplicationLag`), then a new sample of the
        primary; ``None`` when the primary does not answer."""
        try:
            async with store_errors("primary info"):
                info = await self._primary.client.info("replication")
        except StoreUnavailable:
            return None
        behind = self._lag.behind(replica, asked)
        self._lag.primary(info, self._monotonic())
        if (behind > self._max_lag) != self.lagging:
            self.lagging = not self.lagging
            if self.lagging:
                log.warning(
                    "local replica %.2fs behind the primary, a write waits %.2fs for it: read "
                    "lease given up, reads go to the primary",
                    behind,
                    self._max_lag,
                )
            else:
                log.info("local replica caught up with the primary (%.2fs behind)", behind)
        return behind

    async def maintain_lease(self) -> None:
        """One round of lease upkeep (every :data:`LEASE_RENEW_SECONDS`):

        - replica fresh, link up, its invalidation channel read, its data no more than
          ``max_lag_seconds`` behind the primary's: renew the lease;
        - replica lagging, partitioned or its channel not read, while the primary answers:
          release the lease, reads go to the primary and writes stop waiting for the replica;
        - replica within the staleness bound but the primary does not answer: keep the lease
          until it or the bound runs out (reads survive the partition; revocations fail);
        - replica unusable: release the lease.
        """
        asked = self._monotonic()
        replica = await self._replication()
        behind = await self._behind(replica, asked)
        fresh = replica.staleness is not None and replica.staleness <= self._max_staleness
        lagging = behind is not None and behind > self._max_lag
        if fresh and replica.link_up and self.lease.is_subscribed and not lagging:
            try:
                await self.lease.renew()
            except StoreUnavailable as exc:
                log.debug("replica read lease not renewed: %s", exc)
            return
        if fresh and self.lease.held() and behind is None:
            return  # cut off from the primary as well: keep reading from the replica
        await self.lease.release()

    async def replica_usable(self) -> bool:
        """Whether the replica may give positive answers now: the read lease held and the
        replica fresh (cached for the check interval). The lease is asked first: it needs no
        I/O, so once the lease loop has given up on a replica that does not answer, reads go
        to the primary without waiting for that replica within their budget."""
        await self.start()
        return self.lease.held() and await self._replica_fresh()

    async def _replica_fresh(self) -> bool:
        if self._monotonic() - self._checked_at < self._interval:
            return self._usable
        async with self._lock:
            if self._monotonic() - self._checked_at < self._interval:
                return self._usable
            staleness = (await self._replication()).staleness
            usable = staleness is not None and staleness <= self._max_staleness
            if usable != self._usable:
                (log.info if usable else log.warning)(
                    "local replica %s for reads (staleness %s, bound %.1fs)",
                    "trusted" if usable else "NOT trusted",
                    "unknown" if staleness is None else f"{staleness:g}s",
                    self._max_staleness,
                )
            self._usable = usable
            self._checked_at = self._monotonic()
            return usable

    def _distrust(self) -> None:
        self._usable = False
        self._checked_at = self._monotonic()

    async def _read(
        self, read: Callable[[SessionStore], Awaitable[Session | None]]
    ) -> Session | None:
        """Positive answers from the local replica while it is usable; a miss, a stale or an
        unreachable replica falls back to the primary."""
        if await self.replica_usable():
            try:
                session = await read(self._replica)
            except StoreUnavailable:
                self._distrust()
            else:
                if session is not None:
                    self.replica_hits += 1
                    return session
        self.primary_reads += 1
        return await read(self._primary)

    async def get(self, token_hash: str) -> Session | None:
        return await self._read(lambda store: store.get(token_hash))

    async def get_by_sid(self, sid: str) -> Session | None:
        return await self._read(lambda store: store.get_by_sid(sid))

    async def token_hash_of(self, sid: str) -> str | None:
        """Asked on the primary: the current token (a replica may trail a rotation)."""
        return await self._primary.token_hash_of(sid)

    async def create(self, token_hash: str, session: Session) -> None:
        await self._primary.create(token_hash, session)

    async def touch(self, token_hash: str, session: Session) -> bool:
        return await self._primary.touch(token_hash, session)

    async def update(
        self, sid: str, change: SessionChange, *, attempts: int = UPDATE_ATTEMPTS
    ) -> Session | None:
        """Read and written on the primary; waits for the readers' replicas like a
        revocation."""
        return await self._primary.update(sid, change, attempts=attempts)

    async def revoke(self, token_hash: str) -> Session | None:
        return await self._primary.revoke(token_hash)

    async def rotate(
        self, token_hash: str, version: int, session: Session, successor: Successor
    ) -> Successor | None:
        """On the primary, waiting for the replicas (``WAIT``) as a login does."""
        return await self._primary.rotate(token_hash, version, session, successor)

    async def successor(self, token_hash: str) -> Successor | None:
        """Asked on the primary, like every miss of :meth:`get` (a replica may not have the
        rotation yet)."""
        return await self._primary.successor(token_hash)

    async def was_revoked(self, token_hash: str) -> bool:
        """Asked on the primary, like every miss of :meth:`get`."""
        return await self._primary.was_revoked(token_hash)

    async def was_issued(self, token_hash: str) -> bool:
        """Asked on the primary, like every miss of :meth:`get`."""
        return await self._primary.was_issued(token_hash)

    async def revoke_sid(self, sid: str) -> Session | None:
        return await self._primary.revoke_sid(sid)

    async def revoke_subject(self, sub: str) -> int:
        return await self._primary.revoke_subject(sub)

    async def list_subject(self, sub: str) -> list[Session]:
        return await self._primary.list_subject(sub)

    async def ping(self) -> None:
        """Answers while the primary answers, or while the local replica is trusted (reads
        of existing sessions survive a partition from the primary)."""
        try:
            await self._primary.ping()
        except StoreUnavailable:
            if not await self.replica_usable():
                raise
