"""Push invalidation of in-process session caches, made synchronous with revocation.

The caching node's end, :class:`InvalidationSubscriber` (drop the revoked hash, acknowledge its
sequence number, prove the channel live so the cache may answer), and the revoker's end,
:func:`cache_barrier` (wait for every live caching node). The protocol, step by step:
docs/strategies.md, 'Revocation'. Durations (``trust_window`` and friends) are seconds (floats).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from extauthz.loops import Loop, Service, start_all, stop_all
from extauthz.store.cache import CacheListener
from extauthz.store.redis.barrier import AckBarrier, SequenceAcks
from extauthz.store.redis.channel import Channel
from extauthz.store.redis.errors import StoreUnavailable
from extauthz.store.redis.membership import CACHE, Membership

log = logging.getLogger("extauthz.cache")

HEARTBEAT_SECONDS = CACHE.live_for / 8
# a membership older than this is removed by the next beat of any instance
FORGET_AFTER_SECONDS = 60.0
# how much longer than the trust window a revoker waits for missing acknowledgements
BARRIER_MARGIN_SECONDS = 0.1
# a subscriber whose newest proof is older than this many trust windows leaves CACHE, so
# revokers stop waiting for it (its cache has not answered since one trust window)
LEAVE_AFTER_TRUST_WINDOWS = 2.0


def cache_barrier(
    membership: Membership, *, trust_window: float = 0.3, margin: float = BARRIER_MARGIN_SECONDS
) -> AckBarrier:
    """The revoker's wait for every caching node (step 4): never fails, at most
    ``trust_window + margin`` seconds."""
    return AckBarrier(
        lambda seq: membership.pending(CACHE, seq), timeout=trust_window + margin, strict=False
    )


class InvalidationSubscriber:
    """One node's end of the protocol (see the module docstring).

    :param membership: the process's membership (its instance names the proofs and the
        acknowledgements; its client, the primary's, publishes the proofs).
    :param channel: the node's subscription (on the server it reads sessions from).
    :param trust_window: seconds; the cache is trusted while the newest liveness proof is
        younger than this.
    :param clock: monotonic seconds.
    """

    def __init__(
        self,
        membership: Membership,
        channel: Channel,
        *,
        trust_window: float = 0.3,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._membership = membership
        self.instance = membership.instance
        self.channel = channel.channel
        self.proof_channel = f"{channel.channel}:proof:{self.instance}"
        self.trust_window = trust_window
        self.proof_interval = trust_window / 3
        self._clock = clock
        self._listeners: list[CacheListener] = []
        channel.add_listener(
            self,
            extra_channels=(self.proof_channel,),
            ping_interval=self.proof_interval,
            silence=3 * trust_window,
        )
        # state read by the cache on every lookup
        self.epoch = 0  # grows on every (re)subscription and every loss
        self.is_subscribed = False
        self._down_since = clock()  # monotonic; the channel counts as down until subscribed
        self._proof_at = float("-inf")  # send time of the newest proof received
        self._registered_until = float("-inf")
        self._member = False  # whether the last beat or leave left us in CACHE
        # proof payload -> send time, for proofs not received yet
        self._proofs: dict[str, float] = {}
        self._proof_counter = 0
        self._acks = SequenceAcks(lambda seq: membership.ack(CACHE, seq), "cache")
        self._services: list[Service] = [
            self._acks,
            channel,
            Loop("cache-proofs", self._publish_proof, interval=self.proof_interval,
                 backoff=(self.proof_interval,) * 2, log_level=logging.DEBUG, logger=log),
            Loop("cache-heartbeat", self._beat, interval=HEARTBEAT_SECONDS,
                 backoff=(HEARTBEAT_SECONDS,) * 2, logger=log),
        ]  # fmt: skip
        self._started = False
        self.stats = {"invalidations": 0, "resets": 0}

    def add_listener(self, listener: CacheListener) -> None:
        self._listeners.append(listener)

    # -- what the cache asks ----------------------------------------------------------------

    def trusted(self) -> bool:
        """Whether a cache may answer now: subscribed, registered, and the newest liveness
        proof younger than the trust window."""
        now = self._clock()
        return (
            self.is_subscribed
            and now < self._registered_until
            and now - self._proof_at < self.trust_window
        )

    def down_seconds(self) -> float | None:
        """Seconds since the subscription was lost (or since this subscriber was built, when
        it never was established); ``None`` while it is established."""
        return None if self.is_subscribed else self._clock() - self._down_since

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the channel, proof, heartbeat and acknowledgement loops. Returns at once; the
        cache is trusted from the first proof received on."""
        if not self._started:
            self._started = True
            await start_all(self._services)

    async def stop(self) -> None:
        """Stop the loops and leave CACHE, so revokers no longer wait for this instance."""
        if not self._started:
            return
        self._started = False
        await stop_all(self._services)
        self.lost("stopped")
        try:
            await self._membership.leave(CACHE)
        except StoreUnavailable as exc:
            log.debug("cache membership not withdrawn: %s", exc)

    # -- the channel --------------------------------------------------------------------------

    def _reset(self, why: str) -> None:
        self.epoch += 1
        self.stats["resets"] += 1
        self._proofs.clear()
        for listener in self._listeners:
            listener.reset()
        log.debug("cache reset (%s), epoch %d", why, self.epoch)

    def lost(self, why: str) -> None:
        was = self.is_subscribed
        self.is_subscribed = False
        if was:
            self._down_since = self._clock()
        self._proof_at = float("-inf")
        self._reset(why)
        if was and why != "stopped":
            log.warning("cache invalidation channel lost (%s): cache bypassed", why)

    def subscribed(self) -> None:
        # a (re)subscription: whatever was published while we were away is unknown
        self._reset("subscribed")
        self.is_subscribed = True
        log.info("cache invalidation channel %s subscribed (epoch %d)", self.channel, self.epoch)

    def message(self, channel: str, data: str) -> None:
        if channel == self.channel:
            seq_text, sep, token_hash = data.partition(":")
            if not sep:  # a bare hash from an older publisher: drop it, nothing to acknowledge
                seq_text, token_hash = "0", seq_text
            for listener in self._listeners:
                listener.invalidate(token_hash)
            self.stats["invalidations"] += 1
            self._acks.want(int(seq_text) if seq_text.isdigit() else 0)
        elif channel == self.proof_channel:
            sent = self._proofs.pop(data, None)
            if sent is not None and sent > self._proof_at:
                self._proof_at = sent
                # proofs sent earlier and still missing were lost; they prove nothing more
                for key in [k for k, at in self._proofs.items() if at < sent]:
                    del self._proofs[key]

    async def _publish_proof(self) -> None:
        if not self.is_subscribed:
            return
        self._proof_counter += 1
        payload = str(self._proof_counter)
        self._proofs[payload] = self._clock()
        await self._membership.publish(self.proof_channel, payload)

    # -- membership ---------------------------------------------------------------------------

    async def _beat(self) -> None:
        sent = self._clock()
        if sent - self._proof_at >= LEAVE_AFTER_TRUST_WINDOWS * self.trust_window:
            await self._leave_while_stale()
            return
        await self._membership.beat(CACHE, FORGET_AFTER_SECONDS)
        self._member = True
        if self._clock() >= self._registered_until:
            # the membership lapsed (or never was): a revoker may have skipped us
            self._reset("registered")
        self._registered_until = sent + CACHE.live_for / 2

    async def _leave_while_stale(self) -> None:
        """No proof for a while (a lost channel, a replica far behind): leave CACHE, so that
        revocations stop waiting out the trust window for us. The cache is made untrusted
        first; the next beat after proofs come back registers anew and clears it."""
        self._registered_until = float("-inf")
        if self._member:
            await self._membership.leave(CACHE)
            self._member = False
            stale_for = LEAVE_AFTER_TRUST_WINDOWS * self.trust_window
            log.info("cache membership withdrawn: no liveness proof for %.1fs", stale_for)
