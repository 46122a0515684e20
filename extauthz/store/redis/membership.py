"""The one live-node registry: who this process is in the store, and who else is there.

One identity per process (``instance``) and one :class:`Membership` that writes every entry it
has in Redis: the node record (strategy, heartbeat; a node of another strategy is refused) and
the role memberships :data:`CACHE` and :data:`READER` that revokers wait on
(docs/strategies.md, 'Node registry and memberships'); and this node's clock offset from the
store's clock (Redis ``TIME``), measured on start and on every heartbeat (:mod:`extauthz.clock`).

Every method raises :class:`~extauthz.errors.StoreUnavailable` when Redis does not answer.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from extauthz.clock import MAX_CLOCK_OFFSET_SECONDS
from extauthz.errors import SettingsError
from extauthz.loops import Loop
from extauthz.store.redis import scripts
from extauthz.store.redis.clients import Redis
from extauthz.store.redis.cluster import is_cluster
from extauthz.store.redis.errors import StoreUnavailable, store_errors, text, translated

log = logging.getLogger("extauthz.store.membership")

LIVENESS_HEARTBEATS = 3


@dataclass(frozen=True)
class Role:
    """A kind of membership: its members' sorted set, its acknowledgement hash, and how long
    (seconds) a member stays live after its score (0: scores are expiries)."""

    members: str
    acks: str
    live_for: float


# a caching node: live for 2 s after its last beat (by the Redis clock)
CACHE = Role("cache-nodes", "cache-acks", live_for=2.0)
# a node reading from its replica: live until its lease's expiry
READER = Role("replica-readers", "replica-acks", live_for=0.0)


@dataclass(frozen=True)
class NodeRecord:
    """One registered node, as read back from the store."""

    node_id: str
    strategy: str
    version: str
    topology: str
    started: float
    heartbeat: float
    ttl: float
    instance: str = ""

    def live(self, now: float) -> bool:
        return now - self.heartbeat <= self.ttl


class Membership:
    """This process's entries on the store's primary (module docstring).

    :param client: a client of the primary (not owned: never closed here).
    :param heartbeat_seconds: interval of the node record's heartbeat; live for three.
    :param wall_clock: this node's clock, epoch seconds (what JWTs are minted with).
    """

    def __init__(
        self,
        client: Redis,
        key_prefix: str,
        node_id: str,
        *,
        strategy: str = "",
        version: str = "",
        topology: str = "",
        heartbeat_seconds: float = 5.0,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._redis = client
        self._prefix = key_prefix
        self.node_id = node_id
        self.instance = f"{node_id}/{secrets.token_hex(4)}"
        self.key = f"{key_prefix}nodes"
        self.strategy = strategy
        self.version = version
        self.topology = topology
        self.heartbeat_seconds = heartbeat_seconds
        self.registered = False
        self.on_conflict: Callable[[SettingsError], None] | None = None
        self._wall_clock = wall_clock
        # seconds this node's clock is ahead of the store's (negative: behind); None until
        # measured
        self.clock_offset: float | None = None
        self._active = False
        self._register = client.register_script(scripts.REGISTER_NODE)
        self._beat = client.register_script(scripts.BEAT)
        self._renew = client.register_script(scripts.RENEW_LEASE)
        self._ack_growing = client.register_script(scripts.ACK_GROWING)
        self._pending = client.register_script(scripts.PENDING)
        self._live_count = client.register_script(scripts.LIVE_COUNT)
        self._loop = Loop(
            "node-registry",
            self._heartbeat_step,
            interval=heartbeat_seconds,
            backoff=(heartbeat_seconds, heartbeat_seconds),
            logger=log,
        )

    def keys(self, role: Role) -> list[str]:
        """``[members, acks]`` of ``role``; one hash tag on a cluster (the scripts read both),
        the names of old on a single primary."""
        p = self._prefix + ("{membership}" if is_cluster(self._redis) else "")
        return [p + role.members, p + role.acks]

    # -- the node record ----------------------------------------------------------------------

    @translated("register node")
    async def _call(self, mode: str) -> tuple[bool, list[str]]:
        args: list[str | float] = [
            self.node_id,
            self.strategy,
            self.version,
            self.heartbeat_seconds * LIVENESS_HEARTBEATS,
            self.topology,
            mode,
            self.instance,
        ]
        # redis-py's Script loads the script again when a failed-over primary lacks it
        reply = await self._register(keys=[self.key], args=args)
        return bool(int(reply[0])), [text(item) for item in reply[1:]]

    def _conflict_error(self, conflicts: list[str]) -> SettingsError:
        named = ", ".join(
            f"{node} ({strategy})" for node, _, strategy in (c.rpartition("=") for c in conflicts)
        )
        return SettingsError(
            f"store.strategy: this node ({self.node_id}) runs '{self.strategy}' but live nodes "
            f"registered in the same store ({self.key}) run another strategy: {named}"
        )

    @translated("cluster mode")
    async def _on_cluster_node(self) -> bool:
        """Whether this node's single-primary client talks to a Redis Cluster node
        (``INFO cluster``: ``cluster_enabled:1``)."""
        if is_cluster(self._redis):
            return False
        info = await self._redis.info("cluster")
        return str(info.get("cluster_enabled", "0")) == "1"

    async def register(self) -> None:
        """Check and register atomically. A node configured for a single primary (or
        Sentinels) whose primary is a Redis Cluster node is refused: it would share the
        cluster with nodes configured for it (``store.cluster_nodes``), with other key names.

        :raises SettingsError: live nodes in this store run another strategy (named), or the
            store is a Redis Cluster that this node is not configured for.
        :raises StoreUnavailable: the store did not answer.
        """
        if await self._on_cluster_node():
            raise SettingsError(
                "store.cluster_nodes: the store is a Redis Cluster node; configure every node "
                "of the deployment with store.cluster_nodes (docs/strategies.md, 'Redis Cluster')"
            )
        registered, conflicts = await self._call("check")
        if not registered:
            raise self._conflict_error(conflicts)
        self.registered = True

    async def heartbeat(self) -> list[str]:
        """Refresh the record (registering it if :meth:`register` could not run); return the
        conflicting live nodes as ``node=strategy``, empty when there are none."""
        registered, conflicts = await self._call("check" if not self.registered else "beat")
        self.registered = self.registered or registered
        return conflicts

    @translated("measure clock offset")
    async def measure_clock_offset(self) -> float:
        """Seconds this node's clock is ahead of the store's (``TIME``, read halfway through
        the round trip), also kept in :attr:`clock_offset`; a warning is logged whenever it
        moves outside the contract (:data:`~extauthz.clock.MAX_CLOCK_OFFSET_SECONDS`)."""
        before = self._wall_clock()
        seconds, micros = await self._redis.time()
        offset = (before + self._wall_clock()) / 2 - (int(seconds) + int(micros) / 1e6)
        was_within = self.clock_offset is None or abs(self.clock_offset) <= MAX_CLOCK_OFFSET_SECONDS
        self.clock_offset = offset
        if was_within and abs(offset) > MAX_CLOCK_OFFSET_SECONDS:
            log.warning(
                "clock offset %+.3f s from the store's clock (Redis TIME) is outside the "
                "contract of +-%g s: upstream verifiers may reject the JWTs this node mints "
                "(iat/nbf in the future) or accept them for longer; synchronise this host's "
                "clock (NTP). See docs/operations.md, 'Clocks'.",
                offset,
                MAX_CLOCK_OFFSET_SECONDS,
            )
        return offset

    async def _heartbeat_step(self) -> None:
        try:
            await self.measure_clock_offset()
        except StoreUnavailable as exc:
            log.debug("clock offset not measured: %s", exc)
        conflicts = await self.heartbeat()
        if conflicts and self.on_conflict is not None:
            self.on_conflict(self._conflict_error(conflicts))

    async def deregister(self) -> None:
        """Remove the node record (on a clean shutdown); errors are logged, not raised."""
        try:
            async with store_errors("deregister node"):
                await self._redis.hdel(self.key, self.node_id)
        except StoreUnavailable as exc:
            log.warning("node registration not removed: %s", exc)
        self.registered = False

    @translated("list nodes")
    async def nodes(self) -> list[NodeRecord]:
        """Every node record (live or not), ordered by node id."""
        raw = await self._redis.hgetall(self.key)
        records = []
        for key, value in raw.items():
            try:
                rec = json.loads(value)
                records.append(
                    NodeRecord(
                        node_id=text(key),
                        strategy=str(rec["strategy"]),
                        version=str(rec.get("version", "")),
                        topology=str(rec.get("topology", "")),
                        started=float(rec.get("started", 0)),
                        heartbeat=float(rec["heartbeat"]),
                        ttl=float(rec.get("ttl", 0)),
                        instance=str(rec.get("instance", "")),
                    )
                )
            except (ValueError, KeyError, TypeError):
                continue
        return sorted(records, key=lambda r: r.node_id)

    async def start(self) -> None:
        """Register (unless registered already), then keep the record fresh every
        ``heartbeat_seconds``.

        :raises SettingsError: live nodes in this store run another strategy. A store that
            does not answer is logged; the heartbeat registers the node later.
        """
        if self._active:
            return
        try:
            await self.measure_clock_offset()
            if not self.registered:
                await self.register()
        except StoreUnavailable as exc:
            log.warning("node not registered yet (%s); the heartbeat registers it later", exc)
        self._active = True
        await self._loop.start()

    async def stop(self) -> None:
        """Stop the heartbeat and remove the node record (when :meth:`start` ran)."""
        if not self._active:
            return
        self._active = False
        await self._loop.stop()
        await self.deregister()

    # -- role memberships ---------------------------------------------------------------------

    @translated("membership beat")
    async def beat(self, role: Role, forget_after: float) -> None:
        """Record this instance as a live member of ``role`` now; members silent for longer
        than ``forget_after`` seconds are removed."""
        await self._beat(keys=self.keys(role), args=[self.instance, int(forget_after * 1000)])

    @translated("renew read lease")
    async def renew_lease(
        self, lease: float, applied: int, forget_after: float
    ) -> tuple[bool, int]:
        """Take or extend this instance's :data:`READER` lease for ``lease`` seconds, recording
        that its replica applied revocation ``applied``. Returns whether an unexpired lease
        was continued, and the current revocation sequence number."""
        continued, current = await self._renew(
            keys=[*self.keys(READER), self._prefix + "invalidate:seq"],
            args=[self.instance, int(lease * 1000), applied, int(forget_after * 1000)],
        )
        return bool(int(continued)), int(current or 0)

    @translated("acknowledge")
    async def ack(self, role: Role, seq: int) -> None:
        """Record that this instance applied revocation ``seq`` (for :data:`READER`, only
        ever upward; for :data:`CACHE`, as sent: a reset sequence starts again)."""
        if role is READER:
            await self._ack_growing(keys=[self.keys(role)[1]], args=[self.instance, seq])
        else:
            await self._redis.hset(self.keys(role)[1], self.instance, seq)

    @translated("leave")
    async def leave(self, role: Role) -> bool:
        """Withdraw this instance from ``role``; whether it was a member."""
        members, acks = self.keys(role)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.zrem(members, self.instance)
            pipe.hdel(acks, self.instance)
            removed, _ = await pipe.execute()
        return bool(removed)

    @translated("publish")
    async def publish(self, channel: str, message: str) -> None:
        """Publish ``message`` on ``channel`` through the primary (a member's liveness
        proof, :mod:`~extauthz.store.redis.invalidation`); a shard channel (``SPUBLISH``) on
        a cluster, where the node subscribes with ``SSUBSCRIBE``."""
        if is_cluster(self._redis):
            await self._redis.spublish(channel, message)
        else:
            await self._redis.publish(channel, message)

    @translated("pending acknowledgements")
    async def pending(self, role: Role, seq: int) -> list[str]:
        """Live members of ``role`` that have not acknowledged ``seq``, sorted."""
        reply = await self._pending(keys=self.keys(role), args=[seq, int(role.live_for * 1000)])
        return sorted(text(member) for member in reply)

    @translated("live members")
    async def live_count(self, role: Role) -> int:
        """How many members of ``role`` are live now (by the Redis clock)."""
        members = self.keys(role)[0]
        return int(await self._live_count(keys=[members], args=[int(role.live_for * 1000)]))
