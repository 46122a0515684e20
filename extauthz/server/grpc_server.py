"""The gRPC server (grpc.aio): ``envoy.service.auth.v3.Authorization``,
``envoy.service.ext_proc.v3.ExternalProcessor`` (session updates from upstream responses),
``grpc.health.v1.Health``, server reflection and the project's admin API.

``Check`` is a thin wrapper: translate (:mod:`extauthz.check.envoy_adapter`), decide
(:class:`~extauthz.check.authorizer.Authorizer`), translate back. A store that cannot answer
ends the RPC with ``UNAVAILABLE`` so Envoy's ``failure_mode_allow: false`` / ``status_on_error``
decide (503); it is never turned into a denial.

Health: the overall service (``""``) and ``envoy.service.auth.v3.Authorization`` report
``SERVING`` while the session store answers a ping and ``NOT_SERVING`` otherwise
(``grpc.health.v1``), re-checked every ``health_check_interval_seconds``. ``liveness``
reports ``SERVING`` whatever the store does: the process answers (a Kubernetes liveness probe
must not restart every node during a Redis outage). All three turn ``NOT_SERVING`` at shutdown.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import grpc
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from envoy.service.ext_proc.v3 import external_processor_pb2, external_processor_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from extauthz._proto.extauthz.v1 import admin_pb2, admin_pb2_grpc
from extauthz.check.authorizer import Authorizer
from extauthz.check.envoy_adapter import to_check_response, to_request_context
from extauthz.errors import BadRequest, StoreUnavailable
from extauthz.loops import Loop
from extauthz.response import ext_proc_adapter
from extauthz.response.processor import SessionUpdater
from extauthz.server.admin import SessionAdminServicer, StatusServicer
from extauthz.server.apikey_admin import ApiKeyAdminServicer
from extauthz.server.client_admin import ClientAdminServicer, add_client_admin
from extauthz.server.factor_admin import FactorAdminServicer, add_factor_admin
from extauthz.server.health import HealthServicer
from extauthz.server.listeners import address_in_use
from extauthz.store.model import SessionStore

log = logging.getLogger("extauthz.grpc")

AUTHORIZATION_SERVICE = external_auth_pb2.DESCRIPTOR.services_by_name["Authorization"].full_name
EXTERNAL_PROCESSOR_SERVICE = external_processor_pb2.DESCRIPTOR.services_by_name[
    "ExternalProcessor"
].full_name
# the process is alive: SERVING from the first store check on, independent of the store
LIVENESS_SERVICE = "liveness"


class AuthorizationServicer:
    """``envoy.service.auth.v3.Authorization``.

    Not derived from the generated ``AuthorizationServicer``, which xds-protos ships without
    types: ``add_AuthorizationServicer_to_server`` needs only :meth:`Check`.
    """

    def __init__(self, authorizer: Authorizer) -> None:
        self._authorizer = authorizer

    async def Check(
        self, request: external_auth_pb2.CheckRequest, context: Any
    ) -> external_auth_pb2.CheckResponse:
        """One ``CheckRequest``; ``context`` is the call's ``grpc.aio.ServicerContext``, of which
        only ``abort`` is used (the in-process tests pass a stand-in)."""
        try:
            ctx = to_request_context(request)
        except BadRequest as denial:
            return to_check_response(self._authorizer.reject(denial))
        try:
            decision = await self._authorizer.authorize(ctx)
        except StoreUnavailable as exc:
            log.warning("check failed closed: %s", exc)
            await context.abort(grpc.StatusCode.UNAVAILABLE, "session store unavailable")
        return to_check_response(decision)


class ExternalProcessorServicer:
    """``envoy.service.ext_proc.v3.ExternalProcessor``: one ``Process`` stream per response
    that Envoy's matcher hands over (docs/session-updates.md). The ``response_headers`` phase
    goes to the :class:`~extauthz.response.processor.SessionUpdater`; any other phase is
    answered unchanged. A store that cannot answer ends the stream with ``UNAVAILABLE``
    (Envoy: ``status_on_error``, 503)."""

    def __init__(self, updater: SessionUpdater) -> None:
        self._updater = updater

    async def Process(self, request_iterator: Any, context: Any) -> None:
        """Read and answer messages until Envoy half-closes (``context.read()`` returns
        ``grpc.aio.EOF``); the read/write style costs less than an async generator."""
        while True:
            request = await context.read()
            if request is grpc.aio.EOF:  # type: ignore[attr-defined]
                return
            if not ext_proc_adapter.is_response_headers(request):
                await context.write(ext_proc_adapter.pass_through(request))
                continue
            ctx = ext_proc_adapter.to_response_context(request, self._updater.header)
            try:
                changes = await self._updater.process(ctx)
            except StoreUnavailable as exc:
                log.warning("session update failed closed: %s", exc)
                await context.abort(grpc.StatusCode.UNAVAILABLE, "session store unavailable")
            await context.write(ext_proc_adapter.to_processing_response(changes))


class Peers(Protocol):
    """The other workers of this node (:class:`extauthz.server.workers.WorkerLink`)."""

    all_up: bool

    def subscribe(self, changed: Callable[[], Awaitable[object]]) -> None: ...


class StoreHealthReporter:
    """Keeps the health status in line with the store's reachability: :meth:`start` checks
    once, then every ``interval`` seconds until :meth:`stop`. With ``peers`` (one of several
    workers), also ``NOT_SERVING`` while any worker of the node is down, at once on a change."""

    def __init__(
        self, store: SessionStore, servicer: HealthServicer, interval: float,
        peers: Peers | None = None,
    ) -> None:  # fmt: skip
        self._store = store
        self._servicer = servicer
        self._interval = interval
        self._peers = peers
        self.serving: bool | None = None
        self._store_ok: bool | None = None
        self._loop = Loop("store-health", self._step, interval=interval, logger=log)

    async def check_once(self) -> bool:
        if self.serving is None:  # the first check: the process is up
            await self._servicer.set(LIVENESS_SERVICE, health_pb2.HealthCheckResponse.SERVING)
        try:
            await asyncio.wait_for(self._store.ping(), timeout=max(self._interval, 0.5))
            store_ok = True
        except (StoreUnavailable, TimeoutError):
            store_ok = False
        if store_ok != self._store_ok:
            (log.info if store_ok else log.warning)(
                "session store %s", "reachable" if store_ok else "unreachable: NOT_SERVING"
            )
            self._store_ok = store_ok
        return await self.refresh()

    async def refresh(self) -> bool:
        """Set the status from the last store check and the peers; whether it is SERVING."""
        serving = bool(self._store_ok) and (self._peers is None or self._peers.all_up)
        if serving != self.serving:
            status = (
                health_pb2.HealthCheckResponse.SERVING
                if serving
                else health_pb2.HealthCheckResponse.NOT_SERVING
            )
            for service in ("", AUTHORIZATION_SERVICE):
                await self._servicer.set(service, status)
            if self._peers is not None and self._store_ok:
                if serving:
                    log.info("every worker serves")
                else:
                    log.warning("not every worker serves: NOT_SERVING")
            self.serving = serving
        return serving

    async def _step(self) -> None:
        await self.check_once()

    async def start(self) -> None:
        if not self._loop.running:
            if self._peers is not None:
                self._peers.subscribe(self.refresh)
            await self.check_once()
            await self._loop.start()

    async def stop(self) -> None:
        await self._loop.stop()


# The keepalive contract (docs/operations.md, 'gRPC keepalive'): a client may send HTTP/2 PINGs
# with or without calls in flight, at most one every MIN_PING_INTERVAL_MS; more often counts as
# a strike and, after grpc's max_ping_strikes (2), the connection is closed with GOAWAY
# "too_many_pings". Envoy's connection_keepalive.interval toward extauthz must be at least this.
MIN_PING_INTERVAL_MS = 5000
SERVER_OPTIONS: list[tuple[str, int]] = [
    # a taken port is an error, not a shared one (gRPC sets SO_REUSEPORT by default)
    ("grpc.so_reuseport", 0),
    ("grpc.max_receive_message_length", 1024 * 1024),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", MIN_PING_INTERVAL_MS),
]


def build_server(
    listen: str,
    authorizer: Authorizer,
    admin: SessionAdminServicer,
    status: StatusServicer,
    health_servicer: HealthServicer,
    updater: SessionUpdater | None = None,
    api_keys: ApiKeyAdminServicer | None = None,
    client_admin: ClientAdminServicer | None = None,
    factor_admin: FactorAdminServicer | None = None,
) -> tuple[grpc.aio.Server, int]:
    """Create the server with every service registered; return it and the bound port.
    ``ExternalProcessor`` is served when ``updater`` is given, ``ApiKeyAdmin`` when
    ``api_keys`` is, ``ClientAdmin`` when ``client_admin`` is, ``FactorAdmin`` when
    ``factor_admin`` is.

    The port is bound here, without ``SO_REUSEPORT`` (gRPC's default would let a second
    node share it: :mod:`extauthz.server.listeners`).

    :raises SettingsError: the address could not be bound (``server.grpc_listen``).
    """
    server = grpc.aio.server(options=SERVER_OPTIONS)
    external_auth_pb2_grpc.add_AuthorizationServicer_to_server(
        AuthorizationServicer(authorizer), server
    )
    if updater is not None:
        external_processor_pb2_grpc.add_ExternalProcessorServicer_to_server(
            ExternalProcessorServicer(updater), server
        )
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    admin_pb2_grpc.add_SessionAdminServicer_to_server(admin, server)
    admin_pb2_grpc.add_StatusServicer_to_server(status, server)
    if api_keys is not None:
        admin_pb2_grpc.add_ApiKeyAdminServicer_to_server(api_keys, server)
    names = [
        AUTHORIZATION_SERVICE,
        *([EXTERNAL_PROCESSOR_SERVICE] if updater is not None else []),
        health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
        admin_pb2.DESCRIPTOR.services_by_name["SessionAdmin"].full_name,
        admin_pb2.DESCRIPTOR.services_by_name["Status"].full_name,
        *([admin_pb2.DESCRIPTOR.services_by_name["ApiKeyAdmin"].full_name] if api_keys else []),
        reflection.SERVICE_NAME,
    ]
    if client_admin is not None:
        names.append(add_client_admin(server, client_admin))
    if factor_admin is not None:
        names.append(add_factor_admin(server, factor_admin))
    reflection.enable_server_reflection(names, server)
    try:
        port = server.add_insecure_port(listen)
    except RuntimeError:  # grpcio: "Failed to bind to address"
        port = 0
    if port == 0:
        raise address_in_use("server.grpc_listen", listen, "address in use or not available")
    return server, port
