"""The Redis clients a store strategy needs, built from ``[store]`` settings.

- ``central``: one logical Redis. With ``store.sentinels`` the primary is whatever the
  Sentinels name for ``store.sentinel_service`` (redis-py's asyncio
  ``Sentinel.master_for``: a connection that meets a failover re-asks the Sentinels);
  without them, ``store.redis_url``.
- ``replicated``: the same primary client for every write, plus a client for the node's
  own replica (``store.replica_url``) for reads.
- ``sticky``: ``store.redis_url`` is the node's own Redis.

Every client retries a refused or broken connection a bounded number of times with a short
backoff (:data:`RETRY_COUNT`, :data:`RETRY_BACKOFF_CAP_SECONDS`), so a lost primary turns
into :class:`~extauthz.errors.StoreUnavailable` (gRPC ``UNAVAILABLE``, Envoy 503) well
inside Envoy's ext_authz timeout instead of a call that hangs.
"""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import ExponentialBackoff, NoBackoff

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
    sentinel = Sentinel(
        [parse_address(a) for a in s.sentinels],
        sentinel_kwargs={
            "socket_timeout": s.timeout_seconds,
            "socket_connect_timeout": s.timeout_seconds,
            "retry": Retry(NoBackoff(), 0),
        },
        **kwargs,
    )
    client = sentinel.master_for(s.sentinel_service, redis_class=SentinelPrimary)
    client.sentinel = sentinel
    return client


def replica_client(s: StoreSettings) -> aioredis.Redis:
    """A client of this node's replica (``store.replica_url``; the replicated strategy)."""
    return aioredis.Redis.from_url(s.replica_url, **_connection_kwargs(s))
