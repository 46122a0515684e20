"""The read lease of the ``replicated`` strategy, both ends.

- :class:`ReplicaReadLease`, the node's end: its permission to take positive answers from its
  own replica, held on the primary (a :data:`~extauthz.store.redis.membership.READER`
  membership) while the replica is fresh and keeps up with the primary, and acknowledging the
  revocations that arrive through that replica.
- The writers' end: :func:`replica_barrier` (a revocation returns once the replica of every
  live lease applied it) and :func:`leased_replicas` (how many replicas ``WAIT "all"`` waits
  for).

The protocol and its failure cases: docs/strategies.md, 'replicated'.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import redis.asyncio as aioredis

from extauthz.store.redis.barrier import AckBarrier, SequenceAcks
from extauthz.store.redis.channel import Channel
from extauthz.store.redis.errors import StoreUnavailable, store_errors, text
from extauthz.store.redis.membership import READER, Membership

log = logging.getLogger("extauthz.store")

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


def leased_replicas(membership: Membership) -> Callable[[], Awaitable[int]]:
    """How many replicas ``WAIT "all"`` waits for: one per live read lease (the replicas nodes
    read from; a node whose replica lags has given its lease up).

    :raises StoreUnavailable: the primary did not answer.
    """
    return lambda: membership.live_count(READER)


def replica_barrier(membership: Membership, *, timeout: float) -> AckBarrier:
    """The revoker's end: return once every live read lease has acknowledged ``seq``, or
    raise :class:`~extauthz.errors.StoreWriteNotDurable` after ``timeout`` seconds (some node
    may still read the revoked session from a replica that has not applied the revocation)."""
    return AckBarrier(lambda seq: membership.pending(READER, seq), timeout=timeout, strict=True)


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
