"""The composition root's store part: settings in, the Redis side of a node out.

The only place where ``[store]`` settings become plain values for the store package
(:class:`~extauthz.store.redis.clients.RedisEndpoints`, prefixes, counts, seconds), and where
the store of the configured strategy is assembled (docs/strategies.md) on the node's one
:class:`~extauthz.store.redis.clients.RedisClients` and one
:class:`~extauthz.store.redis.membership.Membership`; also where the OAuth client store of
``[oauth_clients]`` and the user store of ``[users]`` are chosen (the server and the CLI build
them the same way).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

from extauthz import __version__
from extauthz.login.mfa.challenges import Ceremonies, MemoryCeremonies
from extauthz.login.mfa.factors import FactorStore
from extauthz.login.mfa.file_store import FileFactorStore
from extauthz.login.mfa.pending import MemoryPendingLogins, PendingLogins
from extauthz.login.ratelimit import CountedRateLimiter, MemoryRateLimiter, RateLimiter
from extauthz.login.users import FileUserStore, UserStore
from extauthz.oauth.clients import ClientStore, FileClientStore
from extauthz.server.metrics import Metrics
from extauthz.settings import Settings, StoreSettings, UserBackend
from extauthz.store.cache import CachingSessionStore
from extauthz.store.memory import MemorySessionStore
from extauthz.store.model import SessionStore
from extauthz.store.redis.challenges import RedisCeremonies
from extauthz.store.redis.channel import Channel
from extauthz.store.redis.clients import (
    Redis,
    RedisClients,
    RedisEndpoints,
    parse_address,
    redact,
)
from extauthz.store.redis.factors import RedisFactorStore
from extauthz.store.redis.invalidation import InvalidationSubscriber, cache_barrier
from extauthz.store.redis.lease import leased_replicas, replica_barrier
from extauthz.store.redis.membership import Membership
from extauthz.store.redis.oauth_clients import RedisClientStore
from extauthz.store.redis.pending import RedisPendingLogins
from extauthz.store.redis.ratelimit import RedisRateLimiter
from extauthz.store.redis.replicated import ReplicatedSessionStore
from extauthz.store.redis.store import RedisSessionStore
from extauthz.store.redis.users import RedisUserStore


def describe(s: StoreSettings) -> str:
    """One line for the start-up log and the status RPC, e.g.
    ``sentinel service=extauthz sentinels=3 wait_replicas=1``. Never contains a password."""
    if s.backend == "memory":
        return "memory (node-local)"
    if s.cluster_nodes:
        primary = f"cluster nodes={len(s.cluster_nodes)}"
    elif s.sentinels:
        primary = f"sentinel service={s.sentinel_service} sentinels={len(s.sentinels)}"
    else:
        primary = f"primary={redact(s.redis_url)}"
    parts = [primary]
    if s.strategy == "replicated":
        parts.append(f"replica={redact(s.replica_url)}")
        parts.append(f"replica_max_staleness={s.replica_max_staleness_seconds:g}s")
    parts.append(f"wait_replicas={s.wait_replicas_resolved}")
    return " ".join(parts)


def redis_endpoints(settings: Settings) -> RedisEndpoints:
    """Where this node's Redis roles are, as plain values."""
    s = settings.store
    return RedisEndpoints(
        primary_url=s.redis_url,
        sentinels=tuple(parse_address(a) for a in s.sentinels),
        sentinel_service=s.sentinel_service,
        cluster_nodes=tuple(parse_address(a) for a in s.cluster_nodes),
        replica_url=s.replica_url if s.strategy == "replicated" else "",
        timeout_seconds=s.timeout_seconds,
        name=settings.node_id,
        pool_size=s.pool_size,
        # a request waits for a connection within the Check's budget, never longer
        pool_wait_seconds=s.check_budget_ms / 1000,
    )


@dataclass
class RedisSide:
    """A node's Redis: its clients (one per role) and its membership, each built once."""

    clients: RedisClients
    membership: Membership


def build_redis_side(settings: Settings) -> RedisSide | None:
    """The node's clients and membership; ``None`` for the in-memory store. No I/O."""
    s = settings.store
    if s.backend == "memory":
        return None
    clients = RedisClients(redis_endpoints(settings))
    membership = Membership(
        clients.primary,
        s.key_prefix,
        settings.node_id,
        strategy=str(s.strategy),
        version=__version__,
        topology=describe(s),
        heartbeat_seconds=s.heartbeat_seconds,
    )
    return RedisSide(clients, membership)


@dataclass
class StoreParts:
    """The assembled store, and its cache when there is one (for the JWT minter)."""

    store: SessionStore
    cache: CachingSessionStore | None = None


def build_store(
    settings: Settings, redis: RedisSide | None, metrics: Metrics | None = None
) -> StoreParts:
    """The session store of the configured strategy and topology (docs/strategies.md);
    with ``metrics``, its Redis operations and acknowledgement barriers are timed."""
    s = settings.store
    if redis is None:
        return StoreParts(MemorySessionStore())  # node-local: nothing to cache or invalidate
    client, replica, membership = redis.clients.primary, redis.clients.replica, redis.membership
    trust_window = settings.cache.trust_window_ms / 1000
    caches = cache_barrier(membership, trust_window=trust_window)
    readers = (
        replica_barrier(membership, timeout=s.wait_timeout_ms / 1000)
        if replica is not None
        else None
    )
    if metrics is not None:
        caches.observe = metrics.ack_observer("cache")
        if readers is not None:
            readers.observe = metrics.ack_observer("replica")
    primary = RedisSessionStore(
        client,
        s.key_prefix,
        wait_replicas=s.wait_replicas_resolved,
        wait_timeout_ms=s.wait_timeout_ms,
        # revocations wait for every caching node, whether or not this process caches
        invalidation_barrier=caches,
        # replicated: ... and for the replica of every node that reads from one, or fail
        replica_barrier=readers,
        # replicated: WAIT "all" waits for as many replicas as nodes read from
        replicas_read=leased_replicas(membership) if replica is not None else None,
        observe=metrics.store_observer("primary") if metrics is not None else None,
    )
    # the node's one subscription, where it reads sessions: an invalidation is never read
    # before the revocation reached that server
    channel = Channel(replica if replica is not None else client, primary.invalidation_channel)
    store: SessionStore = primary
    if replica is not None:
        store = ReplicatedSessionStore(
            primary,
            replica,
            membership,
            channel,
            s.key_prefix,
            max_staleness_seconds=s.replica_max_staleness_seconds,
            # a replica further behind than a write waits for it is given up
            max_lag_seconds=s.wait_timeout_ms / 1000,
            observe_replica=metrics.store_observer("replica") if metrics is not None else None,
        )
    if not settings.cache.enabled:
        return StoreParts(store)
    cache = CachingSessionStore(
        store,
        InvalidationSubscriber(membership, channel, trust_window=trust_window),
        max_entries=settings.cache.max_entries,
        max_age=settings.cache.max_age_seconds,
    )
    return StoreParts(cache, cache)


def build_limiter(
    settings: Settings,
    client: Redis | None,
    limit: int,
    window: int,
    refused: Callable[[str], None] | None = None,
) -> RateLimiter:
    """A fixed-window limiter (``limit`` per ``window`` seconds) in ``client``'s Redis under
    ``store.key_prefix``, or in memory without a Redis store; ``refused(namespace)`` is told
    of every hit over the limit."""
    limiter: RateLimiter
    if client is None:
        limiter = MemoryRateLimiter(limit, window)
    else:
        limiter = RedisRateLimiter(client, settings.store.key_prefix, limit, window)
    return limiter if refused is None else CountedRateLimiter(limiter, refused)


def build_user_store(settings: Settings, client: Redis | None) -> UserStore:
    """The user store of ``users.backend``: the JSON file ``users.file``, or ``client``'s
    Redis (the session store's primary) under ``store.key_prefix``."""
    if settings.users.backend == "redis":
        assert client is not None  # settings refuse users.backend=redis without a Redis store
        return RedisUserStore(client, settings.store.key_prefix)
    return FileUserStore(settings.users.file)


def build_factor_store(settings: Settings, client: Redis | None) -> FactorStore:
    """The second-factor store, beside the users (``users.backend``): the JSON file
    ``mfa.file``, or ``client``'s Redis under ``store.key_prefix``."""
    if settings.users.backend == "redis":
        assert client is not None  # settings refuse users.backend=redis without a Redis store
        return RedisFactorStore(client, settings.store.key_prefix)
    return FileFactorStore(settings.mfa.file)


def build_pending_logins(settings: Settings, client: Redis | None) -> PendingLogins:
    """Pending logins in ``client``'s Redis (every node can finish a sign-in another node
    began), or in this process with the in-memory store."""
    if client is None:
        return MemoryPendingLogins()
    return RedisPendingLogins(client, settings.store.key_prefix)


def build_ceremonies(settings: Settings, client: Redis | None) -> Ceremonies:
    """Passkey challenges beside the pending logins: ``client``'s Redis, or this process."""
    if client is None:
        return MemoryCeremonies()
    return RedisCeremonies(client, settings.store.key_prefix)


def build_client_store(settings: Settings, client: Redis | None) -> ClientStore:
    """The OAuth client store of ``oauth_clients.backend`` (``users``: as ``users.backend``):
    the JSON file ``oauth_clients.file``, or the session store's Redis under
    ``store.key_prefix`` (``client``, the primary; settings refuse redis without one)."""
    if settings.oauth_clients_backend == UserBackend.REDIS:
        if client is None:
            raise ValueError("oauth_clients.backend = redis needs the session store's Redis")
        return RedisClientStore(client, settings.store.key_prefix)
    return FileClientStore(settings.oauth_clients.file)


@asynccontextmanager
async def standalone_client_store(settings: Settings) -> AsyncIterator[ClientStore]:
    """The client store of ``settings`` for a process that runs no node (``extauthz
    clients``), with a Redis client of its own when it needs one, closed on exit."""
    redis: RedisClients | None = None
    if settings.oauth_clients_backend == UserBackend.REDIS:
        redis = RedisClients(redis_endpoints(settings))
    try:
        yield build_client_store(settings, redis.primary if redis is not None else None)
    finally:
        if redis is not None:
            await redis.aclose()
