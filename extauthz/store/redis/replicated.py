"""The ``replicated`` strategy's store: reads from the node's own replica, writes to the primary.

A read asks the replica first and falls back to the primary on a miss, or when the replica
cannot answer or is stale (its link to the primary older than ``max_staleness_seconds``). The
replica's positive answers count only while this node holds its read lease
(:class:`ReplicaReadLease`); every revocation waits until the replica of each lease holder
applied it (:func:`replica_barrier`) or fails with :class:`~extauthz.errors.StoreWriteNotDurable`.
The protocol and its failure cases: docs/strategies.md, 'replicated'.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import redis.asyncio as aioredis

from extauthz.loops import Loop
from extauthz.store.model import Session, SessionStore
from extauthz.store.redis.barrier import AckBarrier, SequenceAcks
from extauthz.store.redis.channel import Channel
from extauthz.store.redis.errors import StoreUnavailable, store_errors, text
from extauthz.store.redis.membership import READER, Membership
from extauthz.store.redis.store import RedisSessionStore

log = logging.getLogger("extauthz.store")

FRESHNESS_CHECK_INTERVAL_SECONDS = 0.1
LEASE_RENEW_SECONDS = 0.25
# a lease outlives the staleness bound by this much: INFO counts whole seconds (up to 1 s
# more) and the last renewal may predate the partition by one renewal interval
LEASE_SLACK_SECONDS = 1.5
# the node's own view of its lease ends this fraction early (clock-rate differences)
LEASE_LOCAL_MARGIN = 0.02
# leases expired for longer than this are removed by the next renewal of any node
LEASE_FORGET_SECONDS = 60.0


def _seq(value: Any) -> int:
    digits = text(value) if value is not None else "0"
    return int(digits) if digits.isdigit() else 0


def replica_barrier(membership: Membership, *, timeout: float) -> AckBarrier:
    """The revoker's end: return once every live read lease has acknowledged ``seq``, or
    raise :class:`~extauthz.errors.StoreWriteNotDurable` after ``timeout`` seconds (some node
    may still read the revoked session from a replica that has not applied the revocation)."""
    return AckBarrier(lambda seq: membership.pending(READER, seq), timeout=timeout, strict=True)


def replica_staleness(info: dict[str, Any]) -> float | None:
    """Seconds since the replica last heard from its primary, from a parsed
    ``INFO replication``; ``None`` when the node is not a usable replica (a primary, or
    loading a full sync)."""
    if str(info.get("role")) != "slave":
        return None
    if str(info.get("master_sync_in_progress", "0")) == "1":
        return None
    if str(info.get("master_link_status")) == "up":
        return float(info.get("master_last_io_seconds_ago", 0))
    down_since = info.get("master_link_down_since_seconds")
    if down_since is None:
        return None
    # -1 means "never linked" in some versions; treat as unusable
    down = float(down_since)
    return None if down < 0 else down


class ReplicaReadLease:
    """This node's permission to take positive answers from its replica (module docstring).

    :param membership: the process's membership (the lease is its READER membership).
    :param replica: a client of this node's replica (its copy of ``p+"invalidate:seq"``).
    :param channel: the node's subscription on that replica (its copy of the invalidations).
    :param lease_seconds: how long one renewal lasts.
    :param clock: monotonic seconds.
    """

    def __init__(
        self,
        membership: Membership,
        replica: aioredis.Redis,
        channel: Channel,
        key_prefix: str,
        *,
        lease_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._membership = membership
        self._replica = replica
        self._channel = channel
        self.instance = membership.instance
        self._seq_key = key_prefix + "invalidate:seq"
        self.lease_seconds = lease_seconds
        self._clock = clock
        self._valid_until = float("-inf")
        # None: caught up; else the seq the replica must reach before the lease is used
        self._catch_up_to: int | None = 0
        self._may_hold = False  # the primary may have a lease of ours (withdraw it)
        self.is_subscribed = False
        channel.add_listener(self, ping_interval=1.0, silence=3.0)
        self._acks = SequenceAcks(lambda seq: membership.ack(READER, seq), "replica")
        self.stats = {"renewals": 0, "acquired": 0, "releases": 0}

    def held(self) -> bool:
        """Whether the replica may give positive answers now, as far as the lease goes."""
        return self._catch_up_to is None and self._clock() < self._valid_until

    async def start(self) -> None:
        await self._channel.start()
        await self._acks.start()

    async def stop(self) -> None:
        await self._acks.stop()
        await self._channel.stop()
        self.is_subscribed = False
        await self.release()

    async def replica_seq(self) -> int:
        """The newest revocation the replica has applied.

        :raises StoreUnavailable: the replica did not answer.
        """
        async with store_errors("replica seq"):
            return _seq(await self._replica.get(self._seq_key))

    async def renew(self) -> None:
        """Take or extend the lease (the replica is fresh and its channel is read).

        :raises StoreUnavailable: the primary or the replica did not answer; a lease already
            held runs until it expires.
        """
        applied = await self.replica_seq()
        sent = self._clock()
        self._may_hold = True
        continued, current = await self._membership.renew_lease(
            self.lease_seconds, applied, LEASE_FORGET_SECONDS
        )
        self.stats["renewals"] += 1
        if not continued:
            # a new lease: revocations made before it did not wait for this node
            self._catch_up_to = max(current, self._catch_up_to or 0)
        self._valid_until = sent + self.lease_seconds * (1 - LEASE_LOCAL_MARGIN)
        if self._catch_up_to is not None and await self.replica_seq() >= self._catch_up_to:
            self._catch_up_to = None
            self.stats["acquired"] += 1
            log.info("replica read lease %s held", self.instance)

    async def release(self) -> None:
        """Stop trusting the replica, then withdraw the lease (best effort: a lease that
        could not be withdrawn expires by itself)."""
        was = self.held()
        self._valid_until = float("-inf")
        self._catch_up_to = 0
        if not self._may_hold:
            return
        try:
            removed = await self._membership.leave(READER)
        except StoreUnavailable as exc:
            log.debug("replica read lease not withdrawn: %s", exc)
            return
        self._may_hold = False
        if removed:
            self.stats["releases"] += 1
            if was:
                log.info("replica read lease %s released: reads go to the primary", self.instance)

    # -- the channel: the revocations this node's replica has applied --------------------------

    def subscribed(self) -> None:
        self.is_subscribed = True

    def message(self, channel: str, data: str) -> None:
        if channel == self._channel.channel:
            self._acks.want(_seq(data.partition(":")[0]))

    def lost(self, why: str) -> None:
        self.is_subscribed = False
        log.debug("replica invalidation channel lost: %s", why)


class ReplicatedSessionStore:
    """Satisfies :class:`~extauthz.store.model.SessionStore`.

    :param primary: the store on the primary (all writes; the fallback for reads).
    :param replica: a client of this node's replica (reads only; not owned).
    :param membership: the process's membership (the read lease is its READER membership).
    :param channel: the node's subscription on the replica.
    :param max_staleness_seconds: see the module docstring.

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
        freshness_check_interval: float = FRESHNESS_CHECK_INTERVAL_SECONDS,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._primary = primary
        self._replica_client = replica
        self._replica = RedisSessionStore(replica, key_prefix)
        self._max_staleness = max_staleness_seconds
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
    def client(self) -> aioredis.Redis:
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

    async def _replication(self) -> tuple[float | None, bool]:
        """The replica's staleness (:func:`replica_staleness`) and whether its link is up;
        ``(None, False)`` when it does not answer."""
        try:
            async with store_errors("replica info"):
                info = await self._replica_client.info("replication")
        except StoreUnavailable:
            return None, False
        return replica_staleness(info), str(info.get("master_link_status")) == "up"

    async def maintain_lease(self) -> None:
        """One round of lease upkeep (every :data:`LEASE_RENEW_SECONDS`):

        - replica fresh, link up, its invalidation channel read: renew the lease;
        - replica within the bound but partitioned (or its channel not read) while the
          primary answers: release the lease, reads go to the primary;
        - the same, but the primary does not answer either: keep the lease until it or the
          staleness bound runs out (reads survive the partition; revocations fail);
        - replica unusable: release the lease.
        """
        staleness, link_up = await self._replication()
        fresh = staleness is not None and staleness <= self._max_staleness
        if fresh and link_up and self.lease.is_subscribed:
            try:
                await self.lease.renew()
            except StoreUnavailable as exc:
                log.debug("replica read lease not renewed: %s", exc)
            return
        if fresh and self.lease.held():
            try:
                await self._primary.ping()
            except StoreUnavailable:
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
            staleness, _ = await self._replication()
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

    async def create(self, token_hash: str, session: Session) -> None:
        await self._primary.create(token_hash, session)

    async def touch(self, token_hash: str, session: Session) -> bool:
        return await self._primary.touch(token_hash, session)

    async def revoke(self, token_hash: str) -> Session | None:
        return await self._primary.revoke(token_hash)

    async def was_revoked(self, token_hash: str) -> bool:
        """Asked on the primary, like every miss of :meth:`get`."""
        return await self._primary.was_revoked(token_hash)

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
