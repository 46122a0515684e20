"""The ``replicated`` strategy's store: reads from the node's own replica, writes to the primary.

- ``get`` / ``get_by_sid`` ask the node-local replica first. A miss falls back to the
  primary (a session created a moment ago through another node is found), and so does a
  replica that cannot answer or is stale.
- Stale: the replica's ``INFO replication`` is consulted at most once per
  ``freshness_check_interval`` seconds (default 0.1 s). It is trusted while it is a replica
  (``role:slave``), not in a full sync, and its link to the primary is younger than
  ``max_staleness_seconds`` -- ``master_last_io_seconds_ago`` while the link is up,
  ``master_link_down_since_seconds`` once it is down. Beyond the bound its positive answers
  are not used (a revocation may not have reached it); its negative answers never are.
- **Read lease.** On top of that, the replica gives positive answers only while this node
  holds a *read lease* on the primary (:class:`ReplicaReadLease`): an entry in
  ``p+"replica-readers"`` (a sorted set scored by the lease's expiry, Redis server time).
  Every revocation waits (:class:`ReplicaAckBarrier`) until each node holding a live lease
  has acknowledged that *its own* replica applied the revocation -- the node reads the
  revocation's sequence number from its replica's copy of the invalidation channel and
  writes it to ``p+"replica-acks"`` -- and fails with
  :class:`~extauthz.errors.StoreWriteNotDurable` otherwise. ``WAIT`` alone cannot do this:
  it counts the replicas connected at the time of the write, and a replica whose link has
  just dropped is not among them while its node still trusts it within the staleness bound.
- The lease is renewed every :data:`LEASE_RENEW_SECONDS` while the replica is fresh, its
  link is up and the node reads its invalidation channel; it lasts ``max_staleness_seconds
  + LEASE_SLACK_SECONDS``. When the replica is partitioned but the primary answers, the
  node releases the lease and reads from the primary (cheaper and safer than failing every
  logout); when neither answers (the node and its replica are cut off together), it keeps
  reading from the replica until the staleness bound or the lease runs out, and meanwhile
  every revocation fails -- it never reports success while that replica can still answer.
  A lease that is new (not a continuation) is used only once the replica has caught up
  with every revocation made before it was granted.
- Every write (create, touch, revoke...) goes to the primary's
  :class:`~extauthz.store.redis.store.RedisSessionStore`, whose ``wait_replicas`` is
  ``"all"`` by default (``WAIT`` for every replica online at the time of the write, for a
  failover). Creating a session needs no lease barrier: a replica that has not seen a new
  session answers "unknown" and the read falls back to the primary.
- When the replica is unusable and the primary does not answer, reads raise
  :class:`~extauthz.errors.StoreUnavailable` (Envoy 503), never a denial.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from extauthz.errors import StoreUnavailable, StoreWriteNotDurable
from extauthz.server.tasks import cancel_and_wait
from extauthz.store.model import Session, SessionStore
from extauthz.store.redis.invalidation import SequenceAcks
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
RESUBSCRIBE_BACKOFF_SECONDS = (0.05, 1.0)

# KEYS[1] = p+"replica-readers" (instance -> lease expiry, Redis ms), KEYS[2] =
# p+"replica-acks" (instance -> newest revocation seq its replica has applied),
# KEYS[3] = p+"invalidate:seq". ARGV[1] = instance, ARGV[2] = lease (ms), ARGV[3] = a seq
# the replica has applied (0 for none), ARGV[4] = forget after (ms).
# Returns {1 when this continues a lease that had not expired else 0, the current seq}.
_RENEW_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local old = tonumber(redis.call('ZSCORE', KEYS[1], ARGV[1]))
local continued = 0
if old and old >= now then continued = 1 end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
if tonumber(ARGV[3]) > tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0') then
  redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
end
local stale = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[4]))
for _, id in ipairs(stale) do
  redis.call('ZREM', KEYS[1], id)
  redis.call('HDEL', KEYS[2], id)
end
return {continued, tonumber(redis.call('GET', KEYS[3]) or '0')}
"""

# KEYS[2] as above; ARGV[1] = instance, ARGV[2] = seq. Acknowledgements only grow.
_ACK_SCRIPT = """
if tonumber(ARGV[2]) > tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0') then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
end
return 1
"""

# KEYS[1], KEYS[2] as in _RENEW_SCRIPT; ARGV[1] = seq. Live leases not acknowledging seq.
_PENDING_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], now, '+inf')
local out = {}
for _, id in ipairs(ids) do
  if tonumber(redis.call('HGET', KEYS[2], id) or '0') < tonumber(ARGV[1]) then
    out[#out + 1] = id
  end
end
return out
"""


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _seq(value: Any) -> int:
    text = _text(value) if value is not None else "0"
    return int(text) if text.isdigit() else 0


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

    :param primary: a client of the primary (leases and acknowledgements).
    :param replica: a client of this node's replica (its copy of the invalidation channel
        and of ``p+"invalidate:seq"``).
    :param lease_seconds: how long one renewal lasts.
    :param clock: monotonic seconds.
    """

    def __init__(
        self,
        primary: aioredis.Redis,
        replica: aioredis.Redis,
        key_prefix: str,
        node_id: str,
        *,
        lease_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._primary = primary
        self._replica = replica
        self.instance = f"{node_id}/{secrets.token_hex(4)}"
        self._keys = [key_prefix + "replica-readers", key_prefix + "replica-acks"]
        self._seq_key = key_prefix + "invalidate:seq"
        self.channel = key_prefix + "invalidate"
        self.lease_seconds = lease_seconds
        self._clock = clock
        self._renew = primary.register_script(_RENEW_SCRIPT)
        self._ack = primary.register_script(_ACK_SCRIPT)
        self._valid_until = float("-inf")
        # None: caught up; else the seq the replica must reach before the lease is used
        self._catch_up_to: int | None = 0
        self._may_hold = False  # the primary may have a lease of ours (withdraw it)
        self.subscribed = False
        self._acks = SequenceAcks(self._send_ack, "replica")
        self._tasks: list[asyncio.Task[None]] = []
        self.stats = {"renewals": 0, "acquired": 0, "releases": 0, "acks": 0}

    def held(self) -> bool:
        """Whether the replica may give positive answers now, as far as the lease goes."""
        return self._catch_up_to is None and self._clock() < self._valid_until

    def start(self) -> None:
        if not self._tasks:
            self._tasks = [
                asyncio.create_task(self._run_channel(), name="replica-lease-channel"),
                asyncio.create_task(self._acks.run(), name="replica-lease-acks"),
            ]

    async def stop(self) -> None:
        tasks, self._tasks = self._tasks, []
        await cancel_and_wait(tasks)
        self.subscribed = False
        await self.release()

    async def replica_seq(self) -> int:
        """The newest revocation the replica has applied.

        :raises RedisError: the replica did not answer.
        """
        return _seq(await self._replica.get(self._seq_key))

    async def renew(self) -> None:
        """Take or extend the lease (the replica is fresh and its channel is read).

        :raises RedisError: the primary or the replica did not answer; a lease already held
            runs until it expires.
        """
        applied = await self.replica_seq()
        sent = self._clock()
        self._may_hold = True
        continued, current = await self._renew(
            keys=[*self._keys, self._seq_key],
            args=[
                self.instance,
                int(self.lease_seconds * 1000),
                applied,
                int(LEASE_FORGET_SECONDS * 1000),
            ],
        )
        self.stats["renewals"] += 1
        if not int(continued):
            # a new lease: revocations made before it did not wait for this node
            self._catch_up_to = max(_seq(current), self._catch_up_to or 0)
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
            async with self._primary.pipeline(transaction=True) as pipe:
                pipe.zrem(self._keys[0], self.instance)
                pipe.hdel(self._keys[1], self.instance)
                removed, _ = await pipe.execute()
        except (RedisError, OSError) as exc:
            log.debug("replica read lease not withdrawn: %s", exc.__class__.__name__)
            return
        self._may_hold = False
        if removed:
            self.stats["releases"] += 1
            if was:
                log.info("replica read lease %s released: reads go to the primary", self.instance)

    # -- acknowledgements: the revocations this node's replica has applied ------------------

    def _on_message(self, message: dict[str, Any]) -> None:
        if message["type"] == "subscribe":
            self.subscribed = True
        elif message["type"] == "message":
            self._acks.want(_seq(_text(message["data"]).partition(":")[0]))

    async def _send_ack(self, seq: int) -> None:
        await self._ack(keys=[self._keys[1]], args=[self.instance, seq])
        self.stats["acks"] += 1

    async def _run_channel(self) -> None:
        backoff = RESUBSCRIBE_BACKOFF_SECONDS[0]
        while True:
            pubsub = self._replica.pubsub()
            try:
                await pubsub.subscribe(self.channel)
                heard = self._clock()
                while True:
                    message = await pubsub.get_message(timeout=1.0)
                    if message is None:
                        if self._clock() - heard > 3.0:
                            # not even a pong: a half-open connection
                            raise ConnectionError("replica invalidation channel silent")
                        await pubsub.ping()
                        continue
                    heard = self._clock()
                    self._on_message(message)
                    backoff = RESUBSCRIBE_BACKOFF_SECONDS[0]
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                self.subscribed = False
                log.debug("replica invalidation channel lost: %s", exc.__class__.__name__)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, RESUBSCRIBE_BACKOFF_SECONDS[1])


class ReplicaAckBarrier:
    """The revoker's end: return once every live read lease has acknowledged ``seq``, or
    raise :class:`StoreWriteNotDurable` after ``timeout`` seconds (some node may still read
    the revoked session from a replica that has not applied the revocation)."""

    def __init__(
        self,
        client: aioredis.Redis,
        key_prefix: str,
        *,
        timeout: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._keys = [key_prefix + "replica-readers", key_prefix + "replica-acks"]
        self._pending = client.register_script(_PENDING_SCRIPT)
        self.timeout = timeout
        self._clock = clock
        self.stats = {"waits": 0, "failures": 0}

    async def pending(self, seq: int) -> list[str]:
        """Live lease holders whose replica has not acknowledged ``seq`` yet.

        :raises RedisError: the primary could not be asked.
        """
        return sorted(_text(i) for i in await self._pending(keys=self._keys, args=[seq]))

    async def __call__(self, seq: int) -> None:
        deadline = self._clock() + self.timeout
        self.stats["waits"] += 1
        delay = 0.0005
        while True:
            try:
                waiting = await asyncio.wait_for(
                    self.pending(seq), timeout=max(0.001, deadline - self._clock())
                )
            except (RedisError, OSError, TimeoutError) as exc:
                waiting = [f"? ({exc.__class__.__name__})"]
            if not waiting:
                return
            left = deadline - self._clock()
            if left <= 0:
                self.stats["failures"] += 1
                raise StoreWriteNotDurable(
                    f"revocation {seq} not applied within {self.timeout * 1000:.0f} ms by the "
                    f"replicas that nodes {', '.join(waiting)} read from: they may still "
                    "answer for it; retry"
                )
            await asyncio.sleep(min(delay, left))
            delay = min(delay * 2, 0.01)


class ReplicatedSessionStore:
    """Satisfies :class:`~extauthz.store.model.SessionStore`.

    :param primary: the store on the primary (all writes; the fallback for reads).
    :param replica: a client of this node's replica (reads only).
    :param max_staleness_seconds: see the module docstring.
    :param node_id: names this node's read lease (``<node_id>/<random>``).

    The read lease is kept by a background task started by :meth:`start`, or by the first
    read; until it is held, reads go to the primary.
    """

    backend = "redis"

    def __init__(
        self,
        primary: RedisSessionStore,
        replica: aioredis.Redis,
        key_prefix: str = "extauthz:",
        *,
        max_staleness_seconds: float = 5.0,
        freshness_check_interval: float = FRESHNESS_CHECK_INTERVAL_SECONDS,
        monotonic: Callable[[], float] = time.monotonic,
        node_id: str = "node",
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
            primary.client,
            replica,
            key_prefix,
            node_id,
            lease_seconds=max_staleness_seconds + LEASE_SLACK_SECONDS,
            clock=monotonic,
        )
        self._maintainer: asyncio.Task[None] | None = None
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
        self._ensure_started()

    def _ensure_started(self) -> None:
        if self._maintainer is None:
            self.lease.start()
            self._maintainer = asyncio.create_task(self._maintain(), name="replica-lease")

    async def _maintain(self) -> None:
        while True:
            try:
                await self.maintain_lease()
            except asyncio.CancelledError:
                raise
            except Exception:  # never let the lease task die silently
                log.exception("replica read lease upkeep failed")
            await asyncio.sleep(LEASE_RENEW_SECONDS)

    async def maintain_lease(self) -> None:
        """One round of lease upkeep (every :data:`LEASE_RENEW_SECONDS`):

        - replica fresh, link up, its invalidation channel read: renew the lease;
        - replica within the bound but partitioned (or its channel not read) while the
          primary answers: release the lease, reads go to the primary;
        - the same, but the primary does not answer either: keep the lease until it or the
          staleness bound runs out (reads survive the partition; revocations fail);
        - replica unusable: release the lease.
        """
        try:
            info = await self._replica_client.info("replication")
            staleness = replica_staleness(info)
            link_up = str(info.get("master_link_status")) == "up"
        except (RedisError, OSError):
            staleness, link_up = None, False
        fresh = staleness is not None and staleness <= self._max_staleness
        if fresh and link_up and self.lease.subscribed:
            try:
                await self.lease.renew()
            except (RedisError, OSError) as exc:
                log.debug("replica read lease not renewed: %s", exc.__class__.__name__)
            return
        if fresh and self.lease.held():
            try:
                await self._primary.client.ping()
            except (RedisError, OSError):
                return  # cut off from the primary as well: keep reading from the replica
        await self.lease.release()

    async def replica_usable(self) -> bool:
        """Whether the replica may give positive answers now: fresh (cached for the check
        interval) and the read lease held."""
        self._ensure_started()
        return await self._replica_fresh() and self.lease.held()

    async def _replica_fresh(self) -> bool:
        if self._monotonic() - self._checked_at < self._interval:
            return self._usable
        async with self._lock:
            if self._monotonic() - self._checked_at < self._interval:
                return self._usable
            try:
                info = await self._replica_client.info("replication")
                staleness = replica_staleness(info)
            except (RedisError, OSError):
                staleness = None
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

    async def close(self) -> None:
        """Withdraw the read lease (revokers stop waiting for this node), then close."""
        if self._maintainer is not None:
            self._maintainer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._maintainer
            self._maintainer = None
        await self.lease.stop()
        await self._primary.close()
        await self._replica.close()
