"""The composition root: every component is built here, once, from :class:`Settings`.

Servers receive their dependencies; nothing else builds a Redis client or reads settings.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import signal
from dataclasses import dataclass
from pathlib import Path

import redis.asyncio as aioredis
from aiohttp import web
from grpc_health.v1 import health

from extauthz import __version__
from extauthz.check.authorizer import Authorizer
from extauthz.check.denials import DenialRenderer
from extauthz.check.minting import JwtMinter
from extauthz.check.resolver import SessionResolver
from extauthz.check.throttle import LookupThrottle
from extauthz.errors import KeyLoadError, SettingsError, StoreUnavailable
from extauthz.keys.keyring import KeyRing
from extauthz.login.cookies import SessionCookie
from extauthz.login.csrf import SameSiteCheck
from extauthz.login.http import AuthHandlers
from extauthz.login.limits import LoginLimits
from extauthz.login.ratelimit import MemoryRateLimiter, RateLimiter
from extauthz.login.service import LoginService
from extauthz.login.users import FileUserStore, PasswordVerifier, UserStore
from extauthz.server.admin import AdminGuard, SessionAdminServicer, StatusServicer
from extauthz.server.grpc_server import StoreHealthReporter, build_server
from extauthz.server.http_server import build_http_app
from extauthz.server.metrics import Metrics
from extauthz.server.registry import NodeRegistry
from extauthz.server.tasks import cancel_and_wait
from extauthz.settings import Settings
from extauthz.store.cache import CachingSessionStore
from extauthz.store.manager import SessionManager
from extauthz.store.memory import MemorySessionStore
from extauthz.store.model import SessionStore
from extauthz.store.redis import clients as topology
from extauthz.store.redis.invalidation import AckBarrier, InvalidationSubscriber
from extauthz.store.redis.ratelimit import RedisRateLimiter
from extauthz.store.redis.replicated import ReplicaAckBarrier, ReplicatedSessionStore
from extauthz.store.redis.store import RedisSessionStore
from extauthz.store.redis.users import RedisUserStore

log = logging.getLogger("extauthz")


@dataclass
class Components:
    settings: Settings
    store: SessionStore
    sessions: SessionManager
    keyring: KeyRing
    minter: JwtMinter
    authorizer: Authorizer
    auth: AuthHandlers
    verifier: PasswordVerifier
    # the Redis client of users and rate limits (the session store has its own), if any
    aux_redis: aioredis.Redis | None = None

    async def close(self) -> None:
        await self.store.close()
        if self.aux_redis is not None:
            await self.aux_redis.aclose()


def build_store(settings: Settings) -> SessionStore:
    """The session store of the configured strategy and topology (docs/strategies.md)."""
    s = settings.store
    if s.backend == "memory":
        return MemorySessionStore()  # node-local: nothing to cache, nothing to invalidate
    client = topology.primary_client(s)
    trust_window = settings.cache.trust_window_ms / 1000
    primary = RedisSessionStore(
        client,
        s.key_prefix,
        wait_replicas=topology.wait_replicas(s),
        wait_timeout_ms=s.wait_timeout_ms,
        # revocations wait for every caching node, whether or not this process caches
        invalidation_barrier=AckBarrier(client, s.key_prefix, trust_window=trust_window),
        # replicated: ... and for the replica of every node that reads from one, or fail
        replica_barrier=(
            ReplicaAckBarrier(client, s.key_prefix, timeout=s.wait_timeout_ms / 1000)
            if s.strategy == "replicated"
            else None
        ),
    )
    store: SessionStore = primary
    replica: aioredis.Redis | None = None
    if s.strategy == "replicated":
        replica = topology.replica_client(s)
        store = ReplicatedSessionStore(
            primary,
            replica,
            s.key_prefix,
            max_staleness_seconds=s.replica_max_staleness_seconds,
            node_id=settings.node_id,
        )
    if settings.cache.enabled:
        subscriber = InvalidationSubscriber(
            client,
            s.key_prefix,
            settings.node_id,
            # subscribe where the node reads, so an invalidation is never read before the
            # revocation reached that server
            channel_client=replica,
            trust_window=trust_window,
        )
        store = CachingSessionStore(
            store,
            subscriber,
            max_entries=settings.cache.max_entries,
            max_age=settings.cache.max_age_seconds,
        )
    return store


async def register_node(settings: Settings) -> NodeRegistry | None:
    """Register this node in its store (not for the node-local in-memory store).

    :raises SettingsError: live nodes registered in the same store run another strategy.
    """
    s = settings.store
    if s.backend == "memory":
        return None
    registry = NodeRegistry(
        topology.primary_client(s),
        s.key_prefix,
        node_id=settings.node_id,
        strategy=s.strategy,
        version=__version__,
        topology=topology.describe(s),
        heartbeat_seconds=s.heartbeat_seconds,
    )
    try:
        await registry.register()
    except StoreUnavailable as exc:
        log.warning("node not registered yet (%s); the heartbeat registers it later", exc)
    except SettingsError:
        await registry.close()
        raise
    return registry


def _redis_client(settings: Settings) -> aioredis.Redis:
    """A client for users and rate limits, on the session store's Redis (its primary)."""
    return topology.primary_client(settings.store)


def build_user_store(settings: Settings, client: aioredis.Redis | None) -> UserStore:
    if settings.users.backend == "redis":
        assert client is not None  # settings refuse users.backend=redis without a Redis store
        return RedisUserStore(client, settings.store.key_prefix)
    return FileUserStore(settings.users.file)


def _limiter(
    settings: Settings, client: aioredis.Redis | None, limit: int, window: int
) -> RateLimiter:
    if client is None:
        return MemoryRateLimiter(limit, window)
    return RedisRateLimiter(client, settings.store.key_prefix, limit, window)


def build_auth(
    settings: Settings, sessions: SessionManager, client: aioredis.Redis | None
) -> tuple[AuthHandlers, PasswordVerifier, SessionResolver]:
    """The authentication service and the session resolver it shares with Check, with their
    users store and rate limiters (in ``client``'s Redis when given, else in memory)."""
    verifier = PasswordVerifier(
        build_user_store(settings, client), max_concurrent=settings.users.max_concurrent_hashes
    )
    r = settings.ratelimit
    limits: LoginLimits | None = None
    throttle: LookupThrottle | None = None
    if r.enabled:
        limits = LoginLimits(
            per_user=_limiter(settings, client, r.login_user_limit, r.login_user_window_seconds),
            per_address=_limiter(
                settings, client, r.login_addr_limit, r.login_addr_window_seconds
            ),
        )
        throttle = LookupThrottle(
            _limiter(settings, client, r.check_addr_limit, r.check_addr_window_seconds)
        )
    c = settings.session
    resolver = SessionResolver(
        sessions,
        SessionCookie(c.cookie_name, secure=c.cookie_secure, domain=c.cookie_domain),
        max_cookie_candidates=c.max_cookie_candidates,
        throttle=throttle,
    )
    service = LoginService(
        resolver,  # the same one as Check's: one budget of failed lookups
        verifier,
        limits=limits,
        same_site=SameSiteCheck.with_origins(settings.auth.allowed_origins),
        default_return_to=settings.auth.default_return_to,
    )
    auth = AuthHandlers(
        service, realm=settings.deny.realm, trusted_proxies=settings.auth.trusted_proxies
    )
    return auth, verifier, resolver


def build_components(settings: Settings, store: SessionStore | None = None) -> Components:
    """Build the pipeline. :raises KeyLoadError: no usable signing key."""
    store = store if store is not None else build_store(settings)
    keyring = KeyRing.from_directory(
        settings.jwt.keys_dir, publish_before_sign=settings.jwt.publish_before_sign_seconds
    )
    sessions = SessionManager(
        store,
        idle_timeout=settings.session.idle_timeout_seconds,
        absolute_timeout=settings.session.absolute_timeout_seconds,
    )
    minter = JwtMinter(
        keyring,
        issuer=settings.jwt.issuer,
        audience=settings.jwt.audience,
        lifetime_seconds=settings.jwt.lifetime_seconds,
        reuse_min_remaining_fraction=settings.jwt.reuse_min_remaining_fraction,
    )
    if isinstance(store, CachingSessionStore):
        store.set_on_drop(minter.forget)  # a revoked session's cached JWT goes with it
    aux_redis = _redis_client(settings) if settings.store.backend == "redis" else None
    auth, verifier, resolver = build_auth(settings, sessions, aux_redis)
    denials = DenialRenderer(
        realm=settings.deny.realm, login_url=settings.deny.login_url, cookie=resolver.cookie
    )
    metrics = Metrics(
        {
            "version": __version__,
            "node_id": settings.node_id,
            "store_strategy": settings.store.strategy,
            "store_backend": store.backend,
        }
    )
    authorizer = Authorizer(
        resolver,
        minter,
        denials,
        jwt_header=settings.jwt.header,
        store_strategy=settings.store.strategy,
        node_id=settings.node_id,
        same_site=SameSiteCheck.with_origins(settings.auth.allowed_origins),
        metrics=metrics,
    )
    return Components(
        settings, store, sessions, keyring, minter, authorizer, auth, verifier, aux_redis
    )


def _is_loopback(listen: str) -> bool:
    host = listen.rpartition(":")[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _admin_guard(settings: Settings) -> AdminGuard:
    token = None
    if settings.admin.token_file:
        try:
            token = Path(settings.admin.token_file).read_text().strip()
        except OSError as exc:
            raise SettingsError(f"admin.token_file: {exc.strerror}") from None
        if len(token) < 16:
            raise SettingsError("admin.token_file: the token must be at least 16 characters")
    loopback_only = _is_loopback(settings.server.grpc_listen)
    if token is None and loopback_only:
        log.warning(
            "admin API open without a token: server.grpc_listen %s is loopback-only and "
            "admin.token_file is unset, so anyone on this host (every local user and process, "
            "and other containers sharing this pod's network namespace) can create sessions for "
            "any user and revoke them; set admin.token_file to a file (mode 0600) holding a "
            "random token of at least 16 characters (e.g. `openssl rand -hex 32`); admin "
            "clients then send it as `authorization: Bearer <token>` metadata (the CLI: "
            "--admin-token-file); see docs/authentication.md",
            settings.server.grpc_listen,
        )
    return AdminGuard(loopback_only=loopback_only, token=token)


async def reload_keys(keyring: KeyRing, interval: float) -> None:
    """Re-read the key directory every ``interval`` seconds: new keys are published, the
    signing key moves on once a newer one has been published long enough. A directory that
    became unusable is logged and the keys in use are kept."""
    while True:
        await asyncio.sleep(interval)
        try:
            if keyring.reload():
                log.info(
                    "signing keys reloaded: published=%s signing_kid=%s",
                    ",".join(keyring.kids),
                    keyring.signing_key.kid,
                )
        except KeyLoadError as exc:
            log.error("signing keys not reloaded, keeping the current ones: %s", exc)


async def serve(settings: Settings) -> int:
    """Run the gRPC and HTTP servers until SIGTERM or SIGINT; return the exit code.

    Shutdown is graceful: stop accepting, let in-flight calls finish within
    ``server.shutdown_grace_seconds``, close the store.
    """
    components = build_components(settings)
    try:
        registry = await register_node(settings)
    except SettingsError:
        await components.store.close()
        raise
    guard = _admin_guard(settings)
    node_id = settings.node_id
    health_servicer = health.aio.HealthServicer()
    reporter = StoreHealthReporter(
        components.store, health_servicer, settings.server.health_check_interval_seconds
    )
    server, grpc_port = build_server(
        settings.server.grpc_listen,
        components.authorizer,
        SessionAdminServicer(components.sessions, guard),
        StatusServicer(
            components.sessions,
            components.keyring,
            strategy=settings.store.strategy,
            node_id=node_id,
        ),
        health_servicer,
    )
    if isinstance(components.store, (CachingSessionStore, ReplicatedSessionStore)):
        await components.store.start()
    await reporter.check_once()
    await server.start()
    await components.verifier.warm_up()
    http_app = build_http_app(
        components.keyring,
        components.auth,
        max_body_bytes=settings.auth.max_body_bytes,
        metrics_registry=components.authorizer.metrics,
    )
    runner = web.AppRunner(http_app, access_log=None)
    await runner.setup()
    http_host, _, http_port = settings.server.http_listen.rpartition(":")
    site = web.TCPSite(runner, http_host.strip("[]"), int(http_port))
    await site.start()
    health_task = asyncio.create_task(reporter.run(), name="store-health")
    keys_task = asyncio.create_task(
        reload_keys(components.keyring, settings.jwt.keys_reload_seconds), name="key-reload"
    )
    log.info(
        "extauthz %s serving node_id=%s store_strategy=%s store_backend=%s store_topology=[%s] "
        "grpc=%s http=%s signing_kid=%s",
        __version__,
        node_id,
        settings.store.strategy,
        components.store.backend,
        topology.describe(settings.store),
        settings.server.grpc_listen,
        settings.server.http_listen,
        components.keyring.signing_key.kid,
    )
    if not components.authorizer.resolver.cookie.is_secure:
        log.warning(
            "session.cookie_secure = false: the session cookie is sent over plain HTTP; "
            "use this only for local development on 127.0.0.1"
        )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    exit_code = 0
    registry_task: asyncio.Task[None] | None = None
    if registry is not None:

        def on_conflict(exc: SettingsError) -> None:
            nonlocal exit_code
            log.error("%s; stopping", exc)
            exit_code = 2
            stop.set()

        registry_task = asyncio.create_task(registry.run(on_conflict), name="node-registry")
    await stop.wait()
    log.info("shutting down: finishing in-flight calls (grace %.1fs)", settings.server.shutdown_grace_seconds)
    await cancel_and_wait([health_task, keys_task, registry_task])
    if registry is not None:
        await registry.deregister()
        await registry.close()
    await server.stop(settings.server.shutdown_grace_seconds)
    await runner.cleanup()
    await components.close()
    log.info("stopped")
    return exit_code
