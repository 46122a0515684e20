"""The Redis clients a store strategy needs, built from ``[store]`` settings.

- ``central``: one logical Redis. With ``store.sentinels`` the primary is whatever the
  Sentinels name for ``store.sentinel_service`` (redis-py's asyncio
  ``Sentinel.master_for``: a connection that meets a failover re-asks the Sentinels);
  without them, ``store.redis_url``. Of the Sentinels' answers, the one with the newest
  ``config-epoch`` wins (:class:`EpochSentinel`).
- ``replicated``: the same primary client for every write, plus a client for the node's
  own replica (``store.replica_url``) for reads.
- ``sticky``: ``store.redis_url`` is the node's own Redis.

Every client retries a refused or broken connection a bounded number of times with a short
backoff (:data:`RETRY_COUNT`, :data:`RETRY_BACKOFF_CAP_SECONDS`), so a lost primary turns
into :class:`~extauthz.errors.StoreUnavailable` (gRPC ``UNAVAILABLE``, Envoy 503) well
inside Envoy's ext_authz timeout instead of a call that hangs.
"""

from __future__ import annotations

import asyncio
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import (
    MasterNotFoundError,
    Sentinel,
    SentinelManagedConnection,
)
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from extauthz.settings import StoreSettings

RETRY_COUNT = 2
RETRY_BACKOFF_BASE_SECONDS = 0.01
RETRY_BACKOFF_CAP_SECONDS = 0.05


def client_retry() -> Retry:
    """Retries on ``ConnectionError``/``TimeoutError``: 2 more tries, 20 ms then 40 ms apart."""
    backoff = ExponentialBackoff(cap=RETRY_BACKOFF_CAP_SECONDS, base=RETRY_BACKOFF_BASE_SECONDS)
    return Retry(backoff, RETRY_COUNT)


def parse_address(text: str) -> tuple[str, int]:
    """``"HOST:PORT"`` -> ``(host, port)`` (validated by the settings loader)."""
    host, _, port = text.rpartition(":")
    return host.strip("[]"), int(port)


def wait_replicas(s: StoreSettings) -> int | str:
    """How many replicas a durable write waits for: a count, or ``"all"`` (every replica the
    primary reports online at the time of the write). ``"auto"`` resolves per strategy:
    central 1 with Sentinels (0 without), replicated ``"all"``, sticky 0."""
    if s.wait_replicas != "auto":
        return s.wait_replicas
    if s.strategy == "replicated":
        return "all"
    if s.strategy == "central" and s.sentinels:
        return 1
    return 0


def describe(s: StoreSettings) -> str:
    """One line for the start-up log and the status RPC, e.g.
    ``sentinel service=extauthz sentinels=3 wait_replicas=1``. Never contains a password."""
    if s.backend == "memory":
        return "memory (node-local)"
    if s.sentinels:
        primary = f"sentinel service={s.sentinel_service} sentinels={len(s.sentinels)}"
    else:
        primary = f"primary={_redact(s.redis_url)}"
    parts = [primary]
    if s.strategy == "replicated":
        parts.append(f"replica={_redact(s.replica_url)}")
        parts.append(f"replica_max_staleness={s.replica_max_staleness_seconds:g}s")
    parts.append(f"wait_replicas={wait_replicas(s)}")
    return " ".join(parts)


def _redact(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    if sep and "@" in rest:
        rest = rest.rpartition("@")[2]
    return f"{scheme}{sep}{rest}"


def _connection_kwargs(s: StoreSettings) -> dict[str, Any]:
    return {
        "socket_timeout": s.timeout_seconds,
        "socket_connect_timeout": s.timeout_seconds,
        "retry": client_retry(),
    }


class EpochSentinel(Sentinel):
    """``Sentinel`` that asks every Sentinel and believes the newest configuration.

    redis-py's ``discover_master`` takes the first Sentinel that answers. Right after a
    failover a Sentinel that has not yet heard of it still names the old primary, now a
    replica: the reconnect lands there again and the write meets ``READONLY`` once more. Here
    every Sentinel is asked at once and the answer with the highest ``config-epoch`` (which a
    failover increments) wins.
    """

    async def discover_master(self, service_name: str) -> tuple[str, int]:
        async def ask(sentinel: aioredis.Redis) -> dict[str, Any] | None:
            try:
                masters = await sentinel.sentinel_masters()
            except (RedisConnectionError, RedisTimeoutError, OSError):
                return None
            state = masters.get(service_name)
            if state and self.check_master_state(state, service_name):
                return dict(state)
            return None

        states = [s for s in await asyncio.gather(*(ask(s) for s in self.sentinels)) if s]
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
            await super().connect_to(address)
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


class SentinelPrimary(aioredis.Redis):
    """A ``Sentinel.master_for`` client that owns its :class:`Sentinel` (closed with it)."""

    sentinel: Sentinel | None = None

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        await super().aclose(close_connection_pool)
        if self.sentinel is not None:
            await self.sentinel.aclose()


def primary_client(s: StoreSettings) -> aioredis.Redis:
    """A client of the primary (no I/O here; connections open on first use)."""
    kwargs = _connection_kwargs(s)
    if not s.sentinels:
        return aioredis.Redis.from_url(s.redis_url, **kwargs)
    sentinel = EpochSentinel(
        [parse_address(a) for a in s.sentinels],
        sentinel_kwargs={
            "socket_timeout": s.timeout_seconds,
            "socket_connect_timeout": s.timeout_seconds,
            "retry": Retry(NoBackoff(), 0),
        },
        **kwargs,
    )
    client = sentinel.master_for(
        s.sentinel_service, redis_class=SentinelPrimary, connection_class=PrimaryConnection
    )
    client.sentinel = sentinel
    return client


def replica_client(s: StoreSettings) -> aioredis.Redis:
    """A client of this node's replica (``store.replica_url``; the replicated strategy)."""
    return aioredis.Redis.from_url(s.replica_url, **_connection_kwargs(s))
