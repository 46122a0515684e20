"""Push invalidation of in-process session caches, made synchronous with revocation.

A pub/sub message can still be in flight (or unread in a busy event loop) when the revoking
call returns, so "publish and hope" lets a cache answer for a revoked session once in a
while. The protocol here closes that gap:

1. **Publish with a sequence number.** A revocation deletes the record and, in the same
   ``MULTI``, runs :data:`PUBLISH_SCRIPT`: ``INCR p+"invalidate:seq"`` and
   ``PUBLISH p+"invalidate" "<seq>:<token hash>"`` (``p`` is the key prefix).
2. **Subscribe, drop, acknowledge.** Every caching node (:class:`InvalidationSubscriber`)
   reads the channel on a dedicated connection, drops the hash from its cache and then writes
   ``HSET p+"cache-acks" <instance> <seq>``.
3. **Trust only a provably live channel.** Every third of the trust window the subscriber
   publishes a proof ``<n>`` through the primary on its own channel
   ``p+"invalidate:proof:<instance>"``, to which it is subscribed on the same connection as
   the invalidations. Redis delivers messages in the order they were published (also through
   a replica's replication stream), so receiving proof ``n`` shows that every invalidation
   published before proof ``n`` was sent has been read and applied. The cache is used only
   while the newest such proof is younger than ``trust_window`` (and the node's registration
   is current); a lost connection also clears the cache, since messages may have been
   missed. (A ``PING`` on the subscribed connection would prove less: on a replica it says
   nothing about what the primary published.)
4. **Wait for the acknowledgements.** The revoker (:class:`AckBarrier`) waits until every
   instance registered in ``p+"cache-nodes"`` (a sorted set scored by Redis server time,
   refreshed by each subscriber) has acknowledged the sequence number, at most
   ``trust_window`` plus a margin. A node that has not acknowledged by then stopped trusting
   its cache by construction: its newest proof predates the revocation, so it is older than
   the trust window. When the revocation returns, no node answers from a stale cache.

Registration: an instance (``<node_id>/<random>``, new per process) is live for revokers
while its heartbeat is younger than :data:`NODE_TTL_SECONDS` by the Redis clock; the instance
itself trusts its cache only until half that time after its last successful heartbeat was
sent, and clears the cache when its registration lapsed, so a revoker that did not see it
cannot leave it serving a stale entry.

Durations: ``trust_window`` and friends are seconds (floats); Redis-side scores and TTLs are
milliseconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from extauthz.server.tasks import cancel_and_wait

log = logging.getLogger("extauthz.cache")

NODE_TTL_SECONDS = 2.0
HEARTBEAT_SECONDS = NODE_TTL_SECONDS / 8
# a registration older than this is removed by the next heartbeat of any instance
FORGET_AFTER_SECONDS = 60.0
# how much longer than the trust window a revoker waits for missing acknowledgements
BARRIER_MARGIN_SECONDS = 0.1
RECONNECT_BACKOFF_SECONDS = (0.05, 1.0)

# KEYS[1] = p+"invalidate:seq"; ARGV[1] = channel, ARGV[2] = token hash. Returns the seq.
PUBLISH_SCRIPT = """
local seq = redis.call('INCR', KEYS[1])
redis.call('PUBLISH', ARGV[1], seq .. ':' .. ARGV[2])
return seq
"""

# KEYS[1] = p+"cache-nodes", KEYS[2] = p+"cache-acks"; ARGV[1] = instance, ARGV[2] = forget
# after (ms). Scores are the Redis server's clock, so node clocks never meet.
_HEARTBEAT_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now, ARGV[1])
local stale = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[2]))
for _, id in ipairs(stale) do
  redis.call('ZREM', KEYS[1], id)
  redis.call('HDEL', KEYS[2], id)
end
return now
"""

# KEYS as above; ARGV[1] = node TTL (ms). Returns [instance, acked seq, ...] of live instances.
_LIVE_ACKS_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], now - tonumber(ARGV[1]), '+inf')
local out = {}
for _, id in ipairs(ids) do
  out[#out + 1] = id
  out[#out + 1] = redis.call('HGET', KEYS[2], id) or '0'
end
return out
"""


class InvalidationListener(Protocol):
    """What a cache offers the subscriber."""

    def invalidate(self, token_hash: str) -> None:
        """Drop ``token_hash`` (a revocation or change was published)."""

    def reset(self) -> None:
        """Drop everything (messages may have been missed)."""


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class InvalidationSubscriber:
    """One node's end of the protocol (see the module docstring).

    :param client: a client of the store's primary, for proofs, heartbeats and
        acknowledgements.
    :param channel_client: where the subscription lives: the server the node reads sessions
        from (the primary, or the node's own replica for ``replicated``), so that an
        invalidation is read only after that server applied the revocation. Default
        ``client``.
    :param trust_window: seconds; the cache is trusted while the newest liveness proof is
        younger than this.
    :param clock: monotonic seconds.
    """

    def __init__(
        self,
        client: aioredis.Redis,
        key_prefix: str,
        node_id: str,
        *,
        channel_client: aioredis.Redis | None = None,
        trust_window: float = 0.3,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._redis = client
        self._channel_redis = channel_client if channel_client is not None else client
        self.instance = f"{node_id}/{secrets.token_hex(4)}"
        self.channel = key_prefix + "invalidate"
        self.proof_channel = f"{key_prefix}invalidate:proof:{self.instance}"
        self._nodes_key = key_prefix + "cache-nodes"
        self._acks_key = key_prefix + "cache-acks"
        self.trust_window = trust_window
        self.proof_interval = trust_window / 3
        self._clock = clock
        self._listeners: list[InvalidationListener] = []
        self._heartbeat = client.register_script(_HEARTBEAT_SCRIPT)
        # state read by the cache on every lookup
        self.epoch = 0  # grows on every (re)subscription and every loss
        self.subscribed = False
        self._proof_at = float("-inf")  # send time of the newest proof received
        self._heard_at = float("-inf")  # when the subscription last delivered anything
        self._registered_until = float("-inf")
        # proof payload -> send time, for proofs not received yet
        self._proofs: dict[str, float] = {}
        self._proof_counter = 0
        self._acks = SequenceAcks(
            lambda seq: self._redis.hset(self._acks_key, self.instance, seq), "cache"
        )
        self._tasks: list[asyncio.Task[None]] = []
        self.stats = {"invalidations": 0, "resets": 0, "reconnects": 0}

    def add_listener(self, listener: InvalidationListener) -> None:
        self._listeners.append(listener)

    # -- what the cache asks ----------------------------------------------------------------

    def trusted(self) -> bool:
        """Whether a cache may answer now: subscribed, registered, and the newest liveness
        proof younger than the trust window."""
        now = self._clock()
        return (
            self.subscribed
            and now < self._registered_until
            and now - self._proof_at < self.trust_window
        )

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the channel, proof, heartbeat and acknowledgement tasks. Returns at once; the
        cache is trusted from the first proof received on."""
        if self._tasks:
            return
        self._tasks = [
            asyncio.create_task(self._run_channel(), name="cache-invalidation"),
            asyncio.create_task(self._run_proofs(), name="cache-proofs"),
            asyncio.create_task(self._run_heartbeat(), name="cache-heartbeat"),
            asyncio.create_task(self._acks.run(), name="cache-acks"),
        ]

    async def stop(self) -> None:
        """Stop the tasks and deregister, so revokers no longer wait for this instance."""
        tasks, self._tasks = self._tasks, []
        await cancel_and_wait(tasks)
        self._lost("stopped")
        with contextlib.suppress(RedisError, OSError):
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.zrem(self._nodes_key, self.instance)
                pipe.hdel(self._acks_key, self.instance)
                await pipe.execute()

    # -- the channel --------------------------------------------------------------------------

    def _reset(self, why: str) -> None:
        self.epoch += 1
        self.stats["resets"] += 1
        self._proofs.clear()
        for listener in self._listeners:
            listener.reset()
        log.debug("cache reset (%s), epoch %d", why, self.epoch)

    def _lost(self, why: str) -> None:
        was = self.subscribed
        self.subscribed = False
        self._proof_at = float("-inf")
        self._reset(why)
        if was and why != "stopped":
            log.warning("cache invalidation channel lost (%s): cache bypassed", why)

    def _on_message(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        self._heard_at = self._clock()
        if kind == "message" and _text(message["channel"]) == self.channel:
            seq_text, sep, token_hash = _text(message["data"]).partition(":")
            if not sep:  # a bare hash from an older publisher: drop it, nothing to acknowledge
                seq_text, token_hash = "0", seq_text
            for listener in self._listeners:
                listener.invalidate(token_hash)
            self.stats["invalidations"] += 1
            seq = int(seq_text) if seq_text.isdigit() else 0
            self._acks.want(seq)
        elif kind == "message":  # our proof channel
            sent = self._proofs.pop(_text(message["data"]), None)
            if sent is not None and sent > self._proof_at:
                self._proof_at = sent
                # proofs sent earlier and still missing were lost; they prove nothing more
                for key in [k for k, at in self._proofs.items() if at < sent]:
                    del self._proofs[key]
        elif kind == "subscribe":
            # a (re)subscription: whatever was published while we were away is unknown
            self._reset("subscribed")
            self.subscribed = True
            log.info(
                "cache invalidation channel %s subscribed (epoch %d)", self.channel, self.epoch
            )

    async def _run_channel(self) -> None:
        backoff = RECONNECT_BACKOFF_SECONDS[0]
        while True:
            pubsub = self._channel_redis.pubsub()
            try:
                await pubsub.subscribe(self.channel, self.proof_channel)
                self._heard_at = self._clock()
                next_ping = self._clock()
                while True:
                    now = self._clock()
                    if now - self._heard_at > 3 * self.trust_window:
                        # neither an error nor a message: a half-open connection
                        raise ConnectionError("subscription silent for 3 trust windows")
                    if now >= next_ping:
                        # keeps a quiet connection audibly alive even when proofs cannot be
                        # published (primary down); the pong itself proves nothing
                        await pubsub.ping()
                        next_ping = now + self.proof_interval
                    message = await pubsub.get_message(
                        timeout=max(0.001, next_ping - self._clock())
                    )
                    if message is not None:
                        self._on_message(message)
                        backoff = RECONNECT_BACKOFF_SECONDS[0]
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                self._lost(f"{exc.__class__.__name__}: {exc}")
                self.stats["reconnects"] += 1
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, RECONNECT_BACKOFF_SECONDS[1])

    async def _run_proofs(self) -> None:
        while True:
            if self.subscribed:
                self._proof_counter += 1
                payload = str(self._proof_counter)
                self._proofs[payload] = self._clock()
                try:
                    await self._redis.publish(self.proof_channel, payload)
                except (RedisError, OSError) as exc:
                    log.debug("cache liveness proof not published: %s", exc.__class__.__name__)
            await asyncio.sleep(self.proof_interval)

    # -- registration and acknowledgements ----------------------------------------------------

    async def _run_heartbeat(self) -> None:
        while True:
            sent = self._clock()
            try:
                await self._heartbeat(
                    keys=[self._nodes_key, self._acks_key],
                    args=[self.instance, int(FORGET_AFTER_SECONDS * 1000)],
                )
            except (RedisError, OSError) as exc:
                log.warning("cache registration heartbeat failed: %s", exc.__class__.__name__)
            else:
                if self._clock() >= self._registered_until:
                    # the registration lapsed (or never was): a revoker may have skipped us
                    self._reset("registered")
                self._registered_until = sent + NODE_TTL_SECONDS / 2
            await asyncio.sleep(HEARTBEAT_SECONDS)


class SequenceAcks:
    """Acknowledges invalidation sequence numbers through ``send``. Acknowledgements are
    monotonic, so only the newest number pending is sent; a failed send is retried (until
    then the revoker waits or fails, never reports success early)."""

    def __init__(self, send: Callable[[int], Awaitable[Any]], what: str) -> None:
        self._send = send
        self._what = what
        self.acked = 0
        self._wanted = 0
        self._event = asyncio.Event()

    def want(self, seq: int) -> None:
        if seq > self._wanted:
            self._wanted = seq
            self._event.set()

    async def run(self) -> None:
        while True:
            await self._event.wait()
            self._event.clear()
            seq = self._wanted
            if seq <= self.acked:
                continue
            try:
                await self._send(seq)
                self.acked = seq
            except (RedisError, OSError) as exc:
                log.warning("%s acknowledgement failed: %s", self._what, exc.__class__.__name__)
                await asyncio.sleep(0.01)
                self._event.set()


class AckBarrier:
    """The revoker's end: wait until every live caching instance acknowledged ``seq``.

    Never fails: when Redis cannot be asked, or an instance does not answer, it waits the full
    ``trust_window + margin`` seconds, after which no instance trusts a cache that has not
    seen the revocation (module docstring, step 4).
    """

    def __init__(
        self,
        client: aioredis.Redis,
        key_prefix: str,
        *,
        trust_window: float = 0.3,
        margin: float = BARRIER_MARGIN_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._keys = [key_prefix + "cache-nodes", key_prefix + "cache-acks"]
        self._live_acks = client.register_script(_LIVE_ACKS_SCRIPT)
        self.timeout = trust_window + margin
        self._clock = clock
        self.stats = {"waits": 0, "timeouts": 0}

    async def pending(self, seq: int) -> list[str]:
        """Live instances that have not acknowledged ``seq`` yet.

        :raises RedisError: Redis could not be asked.
        """
        reply = await self._live_acks(keys=self._keys, args=[int(NODE_TTL_SECONDS * 1000)])
        pairs = zip(reply[0::2], reply[1::2], strict=True)
        return [_text(inst) for inst, acked in pairs if int(_text(acked)) < seq]

    async def __call__(self, seq: int) -> None:
        """Return once ``seq`` is acknowledged everywhere or the deadline passed."""
        deadline = self._clock() + self.timeout
        self.stats["waits"] += 1
        delay = 0.0005
        waiting: list[str] = []
        while True:
            try:
                waiting = await asyncio.wait_for(
                    self.pending(seq), timeout=max(0.001, deadline - self._clock())
                )
            except (RedisError, OSError, TimeoutError):
                waiting = ["?"]
            if not waiting:
                return
            left = deadline - self._clock()
            if left <= 0:
                self.stats["timeouts"] += 1
                log.warning(
                    "revocation %d not acknowledged by %s within %.0f ms; they stopped "
                    "trusting their caches by now",
                    seq,
                    ",".join(waiting),
                    self.timeout * 1000,
                )
                return
            await asyncio.sleep(min(delay, left))
            delay = min(delay * 2, 0.01)
