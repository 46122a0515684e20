"""The composition root: every component is built here, once, from :class:`Settings`.

Servers receive their dependencies; nothing else builds a Redis client or reads settings.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import signal
from dataclasses import dataclass
from pathlib import Path

import redis.asyncio as aioredis
from aiohttp import web
from grpc_health.v1 import health

from extauthz import __version__
from extauthz.admin_service import AdminGuard, SessionAdminServicer, StatusServicer
from extauthz.denials import DenialRenderer
from extauthz.errors import SettingsError
from extauthz.grpc_server import StoreHealthReporter, build_server
from extauthz.http_app import build_http_app
from extauthz.keys import KeyRing
from extauthz.minting import JwtMinter
from extauthz.pipeline import Authorizer
from extauthz.sessions.manager import SessionManager
from extauthz.sessions.memory import MemorySessionStore
from extauthz.sessions.model import SessionStore
from extauthz.sessions.redis import RedisSessionStore
from extauthz.settings import Settings

log = logging.getLogger("extauthz")


@dataclass
class Components:
    settings: Settings
    store: SessionStore
    sessions: SessionManager
    keyring: KeyRing
    minter: JwtMinter
    authorizer: Authorizer


def build_store(settings: Settings) -> SessionStore:
    s = settings.store
    if s.backend == "memory":
        return MemorySessionStore()
    client = aioredis.Redis.from_url(
        s.redis_url,
        socket_timeout=s.timeout_seconds,
        socket_connect_timeout=s.timeout_seconds,
    )
    return RedisSessionStore(client, s.key_prefix)


def build_components(settings: Settings, store: SessionStore | None = None) -> Components:
    """Build the pipeline. :raises KeyLoadError: no usable signing key."""
    store = store if store is not None else build_store(settings)
    keyring = KeyRing.from_directory(settings.jwt.keys_dir)
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
    denials = DenialRenderer(
        realm=settings.deny.realm,
        login_url=settings.deny.login_url,
        cookie_name=settings.session.cookie_name,
        cookie_domain=settings.session.cookie_domain,
        cookie_secure=settings.session.cookie_secure,
    )
    authorizer = Authorizer(
        sessions,
        minter,
        denials,
        cookie_name=settings.session.cookie_name,
        max_cookie_candidates=settings.session.max_cookie_candidates,
        jwt_header=settings.jwt.header,
        store_strategy=settings.store.strategy,
        node_id=settings.node_id,
    )
    return Components(settings, store, sessions, keyring, minter, authorizer)


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
    return AdminGuard(loopback_only=_is_loopback(settings.server.grpc_listen), token=token)


async def serve(settings: Settings) -> int:
    """Run the gRPC and HTTP servers until SIGTERM or SIGINT; return the exit code.

    Shutdown is graceful: stop accepting, let in-flight calls finish within
    ``server.shutdown_grace_seconds``, close the store.
    """
    components = build_components(settings)
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
    await reporter.check_once()
    await server.start()
    runner = web.AppRunner(build_http_app(components.keyring), access_log=None)
    await runner.setup()
    http_host, _, http_port = settings.server.http_listen.rpartition(":")
    site = web.TCPSite(runner, http_host.strip("[]"), int(http_port))
    await site.start()
    health_task = asyncio.create_task(reporter.run(), name="store-health")
    log.info(
        "extauthz %s serving node_id=%s store_strategy=%s store_backend=%s grpc=%s http=%s "
        "signing_kid=%s",
        __version__,
        node_id,
        settings.store.strategy,
        components.store.backend,
        settings.server.grpc_listen,
        settings.server.http_listen,
        components.keyring.signing_key.kid,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    log.info("shutting down: finishing in-flight calls (grace %.1fs)", settings.server.shutdown_grace_seconds)
    health_task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await health_task
    await server.stop(settings.server.shutdown_grace_seconds)
    await runner.cleanup()
    await components.store.close()
    log.info("stopped")
    return 0
