"""The Redis clients of a node: one per role, built once, shared, closed once.

Roles: the **primary** and, for the ``replicated`` strategy, the node's **local replica**.
:class:`RedisClients` is their only owner; every connection asks one Sentinel discovery
(:class:`EpochSentinel`), or, with ``cluster_nodes``, the primary is a Redis Cluster
(:class:`~extauthz.store.redis.cluster.StoreCluster`); each retries a bounded number of times
(:data:`RETRY_COUNT`, :data:`RETRY_BACKOFF_CAP_SECONDS`). Who uses which role, and why:
docs/strategies.md, 'Redis clients'.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
from dataclasses import dataclass
from typing import Any

import redis
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import (
    MasterNotFoundError,
    Sentinel,
    SentinelConnectionPool,
    SentinelManagedConnection,
)
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.driver_info import DriverInfo

from extauthz.store.redis.cluster import StoreCluster
from extauthz.store.redis.errors import REDIS_ERRORS
from extauthz.store.redis.pool import (
    PoolStats,
    WaitingConnectionPool,
    WaitingPool,
    WaitingSentinelPool,
)

RETRY_COUNT = 2
RETRY_BACKOFF_BASE_SECONDS = 0.01
RETRY_BACKOFF_CAP_SECONDS = 0.05

DRIVER_INFO = DriverInfo(lib_version=redis.__version__)
"""What every connection reports by ``CLIENT SETINFO`` (Redis 7.2+): redis-py's name and
version, given here (left out, redis-py reads its version with ``importlib.metadata`` at each
connection: :mod:`extauthz.server.footprint`)."""

Redis = aioredis.Redis | StoreCluster
"""A client of the primary: one server (Sentinel-managed or not), or a Redis Cluster."""


@dataclass(frozen=True)
class RedisEndpoints:
    """Where a node's Redis roles are (plain values, converted from ``[store]``).

    :param primary_url: the primary when no Sentinels are given (``redis://``, ``rediss://``,
        ``unix://``).
    :param sentinels: ``(host, port)`` of each Sentinel; when given, they name the primary.
    :param cluster_nodes: ``(host, port)`` of Redis Cluster startup nodes; when given, the
        primary is the cluster (each slot's primary, as the cluster names it).
    :param replica_url: the node's local replica (``replicated``), empty for none.
    :param timeout_seconds: connect and read timeout of every connection.
    :param name: the node's part of the client name (``CLIENT SETNAME``).
    :param pool_size: connections per role.
    :param pool_wait_seconds: how long a request waits for a connection of a full pool.
    """

    primary_url: str
    sentinels: tuple[tuple[str, int], ...] = ()
    sentinel_service: str = "extauthz"
    cluster_nodes: tuple[tuple[str, int], ...] = ()
    replica_url: str = ""
    timeout_seconds: float = 0.5
    name: str = "node"
    pool_size: int = 100
    pool_wait_seconds: float = 0.4

    def client_name(self, role: str) -> str:
        """``extauthz:<name>:<role>`` with anything but ``[A-Za-z0-9._/-]`` replaced by
        ``_`` (a client name may not contain spaces)."""
        return "extauthz:" + re.sub(r"[^A-Za-z0-9._/-]", "_", self.name) + ":" + role


def client_retry() -> Retry:
    """Retries on ``ConnectionError``/``TimeoutError``: 2 more tries, 20 ms then 40 ms apart."""
    backoff = ExponentialBackoff(cap=RETRY_BACKOFF_CAP_SECONDS, base=RETRY_BACKOFF_BASE_SECONDS)
    return Retry(backoff, RETRY_COUNT)


def parse_address(text: str) -> tuple[str, int]:
    """``"HOST:PORT"`` -> ``(host, port)`` (validated by the settings loader)."""
    host, _, port = text.rpartition(":")
    return host.strip("[]"), int(port)


def redact(url: str) -> str:
    """``url`` without its password (for logs and the status RPC)."""
    scheme, sep, rest = url.partition("://")
    if sep and "@" in rest:
        rest = rest.rpartition("@")[2]
    return f"{scheme}{sep}{rest}"


class EpochSentinel(Sentinel):
    """``Sentinel`` that asks every Sentinel and believes the newest configuration.

    redis-py's ``discover_master`` takes the first Sentinel that answers. Right after a
    failover a Sentinel that has not yet heard of it still names the old primary, now a
    replica: the reconnect lands there again and the write meets ``READONLY`` once more. Here
    every Sentinel is asked at once and the answer with the highest ``config-epoch`` (which a
    failover increments) wins. Callers that ask while a discovery is in flight share it.

    The discovery ends as soon as a majority of the Sentinels have named a primary (or every
    Sentinel has answered or failed): a failover needs the votes of a majority, so a majority
    of answers includes a Sentinel that took part in the newest one. It never waits for a
    Sentinel that is partitioned away or stopped: that one's connection would hold every
    reconnect for the full socket timeout, longer than a Check's budget (a Check answered
    ``UNAVAILABLE`` while one Sentinel of three was cut off). The slower answers are left to
    finish (bounded by the socket timeout), so each Sentinel keeps its one connection.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # redis-py leaves Sentinel.__init__ unannotated, and untyped_calls_exclude (pyproject)
        # does not reach calls through super()
        super().__init__(*args, **kwargs)  # type: ignore[no-untyped-call]
        self._inflight: dict[str, asyncio.Future[tuple[str, int]]] = {}
        self._stragglers: set[asyncio.Future[dict[str, Any] | None]] = set()

    async def discover_master(self, service_name: str) -> tuple[str, int]:
        pending = self._inflight.get(service_name)
        if pending is None:
            pending = asyncio.ensure_future(self._discover(service_name))
            self._inflight[service_name] = pending
            pending.add_done_callback(lambda _: self._inflight.pop(service_name, None))
        return await asyncio.shield(pending)

    async def _discover(self, service_name: str) -> tuple[str, int]:
        async def ask(sentinel: aioredis.Redis) -> dict[str, Any] | None:
            try:
                masters = await sentinel.sentinel_masters()
            except REDIS_ERRORS:
                return None
            if not isinstance(masters, dict):
                # typed ``dict | list``, but every parser redis-py has for SENTINEL MASTERS
                # (RESP2 and RESP3) returns a dict keyed by the service name
                return None
            state = masters.get(service_name)
            if state and self.check_master_state(state, service_name):
                return dict(state)
            return None

        majority = len(self.sentinels) // 2 + 1
        pending = {asyncio.ensure_future(ask(s)) for s in self.sentinels}
        states: list[dict[str, Any]] = []
        while pending and len(states) < majority:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            states.extend(state for task in done if (state := task.result()) is not None)
        # stragglers finish on their own, within the Sentinel socket timeout: cancelling one
        # mid-command would drop its connection, and the next discovery would open it again
        self._stragglers.update(pending)
        for task in pending:
            task.add_done_callback(self._stragglers.discard)
        if not states:
            raise MasterNotFoundError(f"No master found for {service_name!r}")
        newest = max(states, key=lambda s: int(s.get("config-epoch", 0)))
        return str(newest["ip"]), int(newest["port"])


class PrimaryConnection(SentinelManagedConnection):
    """Asks the Sentinels for the primary on every (re)connect.

    redis-py 8 reconnects inside a command's retry through ``connect_check_health``, which
    skips the Sentinel lookup of ``SentinelManagedConnection.connect``: after a failover the
    retry went back to the demoted primary and met ``READONLY`` again.
    """

    _in_connect_to = False

    async def connect_to(self, address: Any) -> None:
        self._in_connect_to = True
        try:
            # unannotated in redis-py; untyped_calls_exclude does not reach super() calls
            await super().connect_to(address)  # type: ignore[no-untyped-call]
        finally:
            self._in_connect_to = False

    async def connect_check_health(
        self, check_health: bool = True, retry_socket_connect: bool = True
    ) -> None:
        if not self.is_connected and not self._in_connect_to and self.connection_pool.is_master:
            self.host, self.port = await self.connection_pool.get_master_address()
        await super().connect_check_health(
            check_health=check_health, retry_socket_connect=retry_socket_connect
        )


class RedisClients:
    """One client per role of a node (module docstring); the owner of every connection.

    ``primary`` is a ``redis.asyncio.Redis`` (Sentinel-managed when Sentinels are given) or
    a :class:`~extauthz.store.redis.cluster.StoreCluster`, ``replica`` one of the local replica
    or ``None``. No I/O here; :meth:`aclose` closes both and the Sentinel discovery, once.
    """

    def __init__(self, endpoints: RedisEndpoints) -> None:
        self.endpoints = endpoints
        e = endpoints
        self._sentinel: EpochSentinel | None = None
        self.primary: Redis
        if e.cluster_nodes:
            self.primary = StoreCluster(
                e.cluster_nodes,
                pool_size=e.pool_size,
                pool_wait_seconds=e.pool_wait_seconds,
                **self._kwargs("primary"),
            )
        elif e.sentinels:
            self._sentinel = EpochSentinel(
                list(e.sentinels),
                sentinel_kwargs={
                    **self._timeouts(),
                    "retry": Retry(NoBackoff(), 0),
                    "client_name": e.client_name("sentinel"),
                    "driver_info": DRIVER_INFO,
                },
                **self._kwargs("primary"),
            )
            self.primary = self._sentinel.master_for(
                e.sentinel_service,
                connection_class=PrimaryConnection,
                connection_pool_class=WaitingSentinelPool,
                **self._pool_kwargs(),
            )
        else:
            self.primary = self._client(e.primary_url, "primary")
        self.replica: aioredis.Redis | None = (
            self._client(e.replica_url, "replica") if e.replica_url else None
        )
        self._closed = False

    def _client(self, url: str, role: str) -> aioredis.Redis:
        pool = WaitingConnectionPool.from_url(url, **self._kwargs(role), **self._pool_kwargs())
        return aioredis.Redis.from_pool(pool)

    def _pool_kwargs(self) -> dict[str, Any]:
        return {
            "max_connections": self.endpoints.pool_size,
            "wait_seconds": self.endpoints.pool_wait_seconds,
        }

    def pool_counts(self) -> dict[str, dict[str, int]]:
        """Each role's pool counters (:class:`~extauthz.store.redis.pool.PoolStats`), e.g.
        ``{"primary": {"waits": 3, "exhausted": 0}}``."""
        counts = {"primary": _counts(self.primary)}
        if self.replica is not None:
            counts["replica"] = _counts(self.replica)
        return counts

    def _timeouts(self) -> dict[str, Any]:
        t = self.endpoints.timeout_seconds
        return {"socket_timeout": t, "socket_connect_timeout": t}

    def _kwargs(self, role: str) -> dict[str, Any]:
        return {
            **self._timeouts(),
            "retry": client_retry(),
            "client_name": self.endpoints.client_name(role),
            "driver_info": DRIVER_INFO,
        }

    def sentinel_managed(self) -> bool:
        """Whether the primary is named by Sentinels."""
        return not isinstance(self.primary, StoreCluster) and isinstance(
            self.primary.connection_pool, SentinelConnectionPool
        )

    async def aclose(self) -> None:
        """Close every connection of the node (idempotent)."""
        if self._closed:
            return
        self._closed = True
        await self.primary.aclose()
        if isinstance(self.primary, StoreCluster):
            await self.primary.aclose_shards()
        if self.replica is not None:
            await self.replica.aclose()
        if self._sentinel is not None:
            await self._sentinel.aclose()


def _counts(client: Redis) -> dict[str, int]:
    if isinstance(client, StoreCluster):
        return dataclasses.asdict(client.stats)
    pool = client.connection_pool
    return dataclasses.asdict(pool.stats if isinstance(pool, WaitingPool) else PoolStats())
