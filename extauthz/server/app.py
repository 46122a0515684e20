"""The composition root: every component is built here, once, from :class:`Settings`.

Servers receive their dependencies; nothing else builds a Redis client or reads settings.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from aiohttp import web

from extauthz import __version__
from extauthz.check.authorizer import Authorizer
from extauthz.check.denials import DenialRenderer
from extauthz.check.minting import JwtMinter
from extauthz.check.rotation import RollingRotation
from extauthz.errors import SettingsError
from extauthz.keys.keyring import KeyRing
from extauthz.login.csrf import SameSiteCheck
from extauthz.login.http import AuthHandlers
from extauthz.login.mfa.account import FactorAdmin
from extauthz.login.users import PasswordVerifier
from extauthz.loops import RECANCEL_SECONDS, Service, bounded, start_all, stop_all
from extauthz.oauth.clients import ClientStore
from extauthz.response.processor import SessionUpdater, UpdateLimits
from extauthz.response.updates import Allowlist
from extauthz.server.admin import AdminGuard, SessionAdminServicer, StatusServicer, admin_guard
from extauthz.server.apikey_admin import ApiKeyAdminServicer
from extauthz.server.auth_wiring import build_auth
from extauthz.server.client_admin import ClientAdminServicer, RevokeClientTokens
from extauthz.server.factor_admin import FactorAdminServicer
from extauthz.server.footprint import heap_trimmer, limit_malloc_arenas, release_freed_heap
from extauthz.server.grpc_server import StoreHealthReporter, build_server
from extauthz.server.health import HealthServicer
from extauthz.server.http_server import ForwardAuth, build_http_app
from extauthz.server.listeners import bind_tcp
from extauthz.server.metrics_wiring import build_metrics, metrics_services, watch_keys
from extauthz.server.node_state import NodeProbe
from extauthz.server.oauth_wiring import build_oauth
from extauthz.server.shutdown import MARGIN_SECONDS, Shutdown
from extauthz.server.store_wiring import (
    RedisSide,
    StoreParts,
    build_client_store,
    build_redis_side,
    build_store,
    describe,
)
from extauthz.server.tasks import KeyReloader
from extauthz.server.tracing_wiring import build_tracing
from extauthz.settings import Settings
from extauthz.settings.model import SessionIndex
from extauthz.store.manager import SessionManager
from extauthz.store.model import SessionStore
from extauthz.tokens import SID_SEPARATOR, TAG_INDEX_SID_SEPARATOR

if TYPE_CHECKING:  # loaded only when tracing, or OAuth, is on; or in a worker process
    from opentelemetry.sdk.trace.export import SpanExporter

    from extauthz.oauth.http import OAuthHandlers
    from extauthz.server.tracing import CheckTracing
    from extauthz.server.workers import WorkerLink

__all__ = ["Components", "build_components", "serve"]

log = logging.getLogger("extauthz")


@dataclass
class Components:
    """Everything a node runs, built once. ``services`` have background work: started in
    order by :meth:`start`, stopped in reverse by :meth:`close`, which then closes the
    node's Redis clients (the only owner)."""

    settings: Settings
    store: SessionStore
    sessions: SessionManager
    keyring: KeyRing
    minter: JwtMinter
    authorizer: Authorizer
    auth: AuthHandlers
    verifier: PasswordVerifier
    clients: ClientStore  # registered OAuth clients ([oauth_clients])
    revoke_client_tokens: RevokeClientTokens  # what RemoveClient revokes a client's tokens with
    redis: RedisSide | None = None
    services: list[Service] = field(default_factory=list)
    probe: NodeProbe = field(default_factory=NodeProbe)
    updater: SessionUpdater | None = None  # session updates from responses (ext_proc)
    oauth: OAuthHandlers | None = None  # the OAuth 2.0 authorization server (oauth.enabled)
    factors: FactorAdmin | None = None  # users' second factors ([mfa])
    tracing: CheckTracing | None = None  # Check spans ([tracing]; extauthz.server.tracing)

    async def start(self) -> None:
        """:raises SettingsError: live nodes in the same store run another strategy."""
        await start_all(self.services)

    async def close(self, within: float | None = None) -> None:
        """Stop the services, then close the Redis clients. With ``within`` (seconds) all of
        it ends by then, whatever Redis does: what does not finish is logged and left."""
        if self.oauth is not None:
            self.oauth.server.close()  # its idle worker threads (Authlib's calls)
        if self.tracing is not None:  # the last spans, from a thread: a collector may hang
            await bounded("exporting spans", asyncio.to_thread(self.tracing.shutdown), 1.0)
        if within is None:
            await stop_all(self.services)
            if self.redis is not None:
                await self.redis.clients.aclose()
            return
        deadline = time.monotonic() + within
        await stop_all(self.services, within)
        if self.redis is not None:
            left = max(deadline - time.monotonic(), RECANCEL_SECONDS)
            await bounded("closing the Redis clients", self.redis.clients.aclose(), left)


def build_components(
    settings: Settings, span_exporter: SpanExporter | None = None
) -> Components:
    """Build the pipeline on the node's one Redis client per role (no I/O).
    ``span_exporter`` replaces ``tracing.exporter`` (:func:`build_tracing`).

    :raises KeyLoadError: no usable signing key.
    """
    metrics = build_metrics(settings)
    tracing = build_tracing(settings, span_exporter)
    keyring = KeyRing.from_directory(
        settings.jwt.keys_dir, publish_before_sign=settings.jwt.publish_before_sign_seconds
    )
    watch_keys(metrics, keyring)
    redis = build_redis_side(settings)
    parts: StoreParts = build_store(settings, redis, metrics)
    store = parts.store
    minter = JwtMinter(
        keyring,
        issuer=settings.jwt.issuer,
        audience=settings.jwt.audience,
        lifetime_seconds=settings.jwt.lifetime_seconds,
        reuse_min_remaining_fraction=settings.jwt.reuse_min_remaining_fraction,
        max_bytes=settings.jwt.max_bytes,
    )
    sessions = SessionManager(
        tracing.traced_store(store) if tracing is not None else store,  # lookups: spans
        idle_timeout=settings.session.idle_timeout_seconds,
        absolute_timeout=settings.session.absolute_timeout_seconds,
        check_session=minter.check_size,  # a session whose JWT would be too large is refused
        rotation_grace_seconds=settings.session.rotation_grace_seconds,
        api_key_touch_interval=settings.api_keys.touch_interval_seconds,
        sid_separator=(  # a rolling upgrade from the version before slot indexes: "tag"
            TAG_INDEX_SID_SEPARATOR
            if settings.store.session_index == SessionIndex.TAG
            else SID_SEPARATOR
        ),
    )
    if parts.cache is not None:
        parts.cache.set_on_drop(minter.forget)  # a revoked session's cached JWT goes with it
    # users and rate limits share the session store's primary client
    auth, verifier, resolver, factors = build_auth(
        settings, sessions, redis.clients.primary if redis is not None else None, metrics
    )
    denials = DenialRenderer(
        realm=settings.deny.realm, login_url=settings.deny.login_url, cookie=resolver.cookie
    )
    rotation = RollingRotation(
        sessions, resolver.cookie, rotate_after_seconds=settings.session.rotate_after_seconds
    )
    membership = redis.membership if redis is not None else None
    probe = NodeProbe(
        parts.cache, lambda: membership.clock_offset if membership is not None else None
    )
    metrics.state, metrics.rotations = probe, rotation.stats
    metrics.redis_pools = redis.clients.pool_counts if redis is not None else None
    authorizer = Authorizer(
        resolver,
        minter,
        denials,
        jwt_header=settings.jwt.header,
        store_strategy=settings.store.strategy,
        node_id=settings.node_id,
        same_site=SameSiteCheck.with_origins(settings.auth.allowed_origins),
        metrics=metrics,
        store_budget_seconds=settings.store.check_budget_ms / 1000,
        rotation=rotation,
    )
    u = settings.session_updates
    updater = SessionUpdater(
        store,
        Allowlist.from_entries(u.allowed_keys),
        resolver.cookie,
        header=u.header,
        limits=UpdateLimits(u.max_patch_bytes, u.attempts, u.budget_ms / 1000),
        count=metrics.count_session_update,
        rotate=sessions.rotate_sid,
        check_session=minter.check_size,  # jwt.max_bytes holds for updated sessions too
    )
    services: list[Service] = [redis.membership] if redis is not None else []
    primary = redis.clients.primary if redis is not None else None
    clients = build_client_store(settings, primary)
    oauth, revoke_client_tokens = build_oauth(settings, sessions, auth, minter, clients, primary)
    return Components(
        settings,
        store,
        sessions,
        keyring,
        minter,
        authorizer,
        auth,
        verifier,
        clients,
        revoke_client_tokens,
        redis,
        [*services, store, *metrics_services(metrics)],
        probe,
        updater if u.enabled else None,
        oauth,
        factors,
        tracing,
    )


def _admin_guard(settings: Settings) -> AdminGuard:
    """:func:`~extauthz.server.admin.admin_guard` for ``[admin]``."""
    return admin_guard(settings.admin.enabled, settings.admin.token_file)


async def serve(settings: Settings, worker: WorkerLink | None = None) -> int:
    """Run the gRPC and HTTP servers until SIGTERM or SIGINT; return the exit code. As one of
    several ``worker`` processes (:mod:`extauthz.server.worker_wiring`): its HTTP socket and
    health follow the supervisor's link.

    Both listen addresses are bound first. Shutdown (:mod:`extauthz.server.shutdown`): at once
    ``NOT_SERVING`` and no new calls, in-flight calls get ``server.shutdown_grace_seconds``,
    then every component stops; the process ends within the grace plus
    :data:`~extauthz.server.shutdown.MARGIN_SECONDS` whatever Redis does.

    :raises SettingsError: a listen address is taken; live nodes in the same store run another
        strategy; the admin API is enabled without a usable token (:func:`_admin_guard`,
        before anything starts).
    """
    limit_malloc_arenas()  # before grpc starts its threads
    guard = _admin_guard(settings)  # before anything starts: refusing leaves nothing behind
    components = build_components(settings)
    grace = settings.server.shutdown_grace_seconds
    stop = asyncio.Event()
    exit_code = 0

    def on_conflict(exc: SettingsError) -> None:
        nonlocal exit_code
        log.error("%s; stopping", exc)
        exit_code = 2
        stop.set()

    if components.redis is not None:
        components.redis.membership.on_conflict = on_conflict
    shutdown = Shutdown(grace, lambda: exit_code)

    def on_signal() -> None:
        stop.set()
        # the bound runs from the signal, also when it comes during start-up (which may be
        # waiting for a Redis that does not answer): start-up goes on, then stops at once
        shutdown.begin()

    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):  # a signal during start-up: stop after it
        loop.add_signal_handler(signum, on_signal)
    node_id = settings.node_id
    health_servicer = HealthServicer()
    keys = settings.api_keys
    server, grpc_port = build_server(
        settings.server.grpc_listen,
        components.authorizer,
        SessionAdminServicer(components.sessions, guard),
        StatusServicer(
            components.sessions,
            components.keyring,
            strategy=settings.store.strategy,
            node_id=node_id,
            state=components.probe,
        ),
        health_servicer,
        components.updater,
        api_keys=ApiKeyAdminServicer(
            components.sessions, guard, keys.default_lifetime_days, keys.max_lifetime_days
        ),
        client_admin=ClientAdminServicer(
            components.clients, guard, components.revoke_client_tokens, clock=time.time
        ),
        factor_admin=FactorAdminServicer(components.factors, guard) if components.factors else None,
        tracing=components.tracing,
    )
    listen = settings.server.http_listen
    http_socket = worker.http_socket if worker else bind_tcp("server.http_listen", listen)
    try:
        await components.start()
    except BaseException:
        http_socket.close()
        await components.close(within=MARGIN_SECONDS)
        raise
    loops: list[Service] = [
        StoreHealthReporter(
            components.store, health_servicer, settings.server.health_check_interval_seconds,
            peers=worker,
        ),
        KeyReloader(components.keyring, settings.jwt.keys_reload_seconds),
        heap_trimmer(),
    ]
    await start_all(loops)
    await server.start()
    await components.verifier.warm_up()
    verify = ForwardAuth(components.authorizer, components.auth.trusted_proxies)
    http_app = build_http_app(
        components.keyring,
        components.auth,
        max_body_bytes=settings.auth.max_body_bytes,
        metrics_registry=components.authorizer.metrics,
        oauth=components.oauth,
        forward_auth=verify if settings.auth.forward_auth else None,  # GET /auth/verify
    )
    runner = web.AppRunner(http_app, access_log=None, shutdown_timeout=grace)
    await runner.setup()
    await web.SockSite(runner, http_socket).start()
    if worker is not None:
        worker.ready()
    log.info(
        "extauthz %s serving node_id=%s store_strategy=%s store_backend=%s store_topology=[%s] "
        "grpc=%s http=%s signing_kid=%s",
        __version__,
        node_id,
        settings.store.strategy,
        components.store.backend,
        describe(settings.store),
        settings.server.grpc_listen,
        settings.server.http_listen,
        components.keyring.signing_key.kid,
    )
    if not components.authorizer.resolver.cookie.is_secure:
        log.warning(
            "session.cookie_secure = false: the session cookie is sent over plain HTTP; "
            "use this only for local development on 127.0.0.1"
        )
    if settings.server.workers == "auto":  # (multiprocessing stays out of a lone node)
        from extauthz.server.worker_wiring import auto_workers_note

        if (note := auto_workers_note(settings)) is not None:
            log.warning("%s", note)
    release_freed_heap()  # what start-up freed goes back to the kernel
    await stop.wait()
    shutdown.begin()  # (a signal began it already)
    # refuse new calls first, then tell the health watchers: a client that sees NOT_SERVING
    # and calls at once is refused instead of reaching the store
    stopping_grpc = asyncio.ensure_future(server.stop(grace))
    await asyncio.sleep(0)  # the stop task runs: grpc refuses new RPCs from here on
    await health_servicer.enter_graceful_shutdown()  # in memory: no Redis, no wait
    log.info(
        "shutting down: NOT_SERVING, no new calls; in-flight calls get %.1fs, the process "
        "ends within %.1fs",
        grace,
        shutdown.limit,
    )
    await shutdown.run(
        {
            "gRPC server": stopping_grpc,
            "HTTP server": runner.cleanup(),
            "background loops": stop_all(loops),
        },
        within=grace + RECANCEL_SECONDS,
    )
    await shutdown.run({"components": components.close(within=shutdown.left())})
    log.info("stopped")
    return exit_code
