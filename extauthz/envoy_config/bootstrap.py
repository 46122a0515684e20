"""Envoy bootstraps (``envoy.config.bootstrap.v3.Bootstrap``) for extauthz: the front proxy,
the per-node sidecar of the sticky strategy, and the sticky front. Built from the typed Envoy
API messages of xds-protos; :mod:`extauthz.envoy_config.render` turns one into YAML."""

from __future__ import annotations

from collections.abc import Sequence

from envoy.config.bootstrap.v3.bootstrap_pb2 import Bootstrap
from envoy.config.cluster.v3.cluster_pb2 import Cluster
from envoy.config.core.v3.address_pb2 import SocketAddress
from envoy.config.core.v3.protocol_pb2 import HttpProtocolOptions as CoreHttpProtocolOptions
from envoy.config.listener.v3.listener_pb2 import Listener
from envoy.config.route.v3.route_components_pb2 import Route, RouteAction, VirtualHost
from envoy.extensions.filters.http.ext_authz.v3.ext_authz_pb2 import ExtAuthzPerRoute
from envoy.extensions.filters.http.ext_proc.v3.ext_proc_pb2 import ExtProcPerRoute
from envoy.extensions.filters.network.http_connection_manager.v3.http_connection_manager_pb2 import (  # noqa: E501
    HttpConnectionManager,
)
from envoy.extensions.retry.host.previous_hosts.v3.previous_hosts_pb2 import PreviousHostsPredicate
from envoy.extensions.upstreams.http.v3.http_protocol_options_pb2 import HttpProtocolOptions

from . import filters
from .filters import EXT_AUTHZ, EXTAUTHZ_GRPC, EXTAUTHZ_HTTP, SESSION_UPDATE, UPSTREAM, packed
from .model import Endpoint, ServiceInputs, StickyInputs
from .model import Route as TableRoute

NODES = "nodes"
# the sticky front's active health check asks each node's sidecar this path
SIDECAR_HEALTH_PATH = "/healthz"
# Envoy alone answers this on the front proxy, no authz, no upstream: the benchmark baseline
FRONT_HEALTH_PATH = "/health/direct"
# extauthz's per-process health service (extauthz.server.grpc_server.LIVENESS_SERVICE)
LIVENESS_SERVICE = "liveness"


def _socket(address: SocketAddress, endpoint: Endpoint) -> None:
    address.address = endpoint.host
    address.port_value = endpoint.port


def _cluster(name: str, endpoints: Sequence[Endpoint]) -> Cluster:
    """A cluster of ``endpoints``: ``STATIC`` for IP addresses, ``STRICT_DNS`` (IPv4) when any
    is a host name, so that Envoy follows a container's address."""
    cluster = Cluster(name=name, lb_policy=Cluster.ROUND_ROBIN)
    cluster.connect_timeout.FromMilliseconds(250)
    if all(e.is_ip for e in endpoints):
        cluster.type = Cluster.STATIC
    else:
        cluster.type = Cluster.STRICT_DNS
        cluster.dns_lookup_family = Cluster.V4_ONLY
    cluster.load_assignment.cluster_name = name
    locality = cluster.load_assignment.endpoints.add()
    for endpoint in endpoints:
        _socket(locality.lb_endpoints.add().endpoint.address.socket_address, endpoint)
    return cluster


def _grpc_cluster(endpoints: Sequence[Endpoint]) -> Cluster:
    """extauthz's gRPC port over HTTP/2, with the keepalive contract (docs/operations.md,
    'gRPC keepalive'): extauthz accepts a PING at most every 5 s; a dead connection is found
    within interval (10 s) + timeout (2 s).

    One endpoint per extauthz worker (``server.workers``), round robin. A worker that dies
    and is started again by its supervisor must get no Checks until it serves, or they fail
    with 503 (measured with two workers: 193 of 507 Checks): its first refused or reset
    connection ejects its endpoint (outlier detection, local-origin errors only: 1 s, doubling
    up to 10 s, at most half the endpoints), and an active gRPC health check of the worker's
    own ``liveness`` service every second keeps it out until its gRPC server answers. Not the
    overall service: that one is ``NOT_SERVING`` on every worker while any is down, or while the
    store is (docs/operations.md, 'Workers'). A 5xx from extauthz ejects nothing."""
    cluster = _cluster(EXTAUTHZ_GRPC, endpoints)
    check = cluster.health_checks.add()
    check.timeout.FromMilliseconds(500)
    check.interval.FromSeconds(1)
    check.no_traffic_interval.FromSeconds(1)  # Envoy's default there is 60 s
    check.unhealthy_threshold.value = 1
    check.healthy_threshold.value = 1
    check.grpc_health_check.service_name = LIVENESS_SERVICE
    outliers = cluster.outlier_detection
    outliers.split_external_local_origin_errors = True
    outliers.consecutive_local_origin_failure.value = 1
    outliers.enforcing_consecutive_local_origin_failure.value = 100
    # Envoy's other detectors are on by default once outlier_detection is set: off
    for enforcing in (outliers.enforcing_consecutive_5xx, outliers.enforcing_success_rate,
                      outliers.enforcing_local_origin_success_rate):  # fmt: skip
        enforcing.value = 0
    outliers.base_ejection_time.FromSeconds(1)
    outliers.max_ejection_time.FromSeconds(10)
    outliers.max_ejection_percent.value = 50
    options = HttpProtocolOptions()
    keepalive = options.explicit_http_config.http2_protocol_options.connection_keepalive
    keepalive.interval.FromSeconds(10)
    keepalive.timeout.FromSeconds(2)
    cluster.typed_extension_protocol_options[
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
    ].CopyFrom(packed(options))
    return cluster


def _connection_manager(name: str, *, edge: bool) -> HttpConnectionManager:
    """The HCM settings every generated listener shares. ``edge``: take the client address from
    the connection, never from a client's X-Forwarded-For, and always mint our own request id;
    otherwise (a sidecar behind the front) trust the address the front appended and keep its
    request id. Route matching, and ext_authz, which sees the same path, works on the
    normalised path ("/a/../auth/x" and "//auth" reach no route their literal string would
    not); %2F and %5C in a path, and header names with "_" ("x_extauthz" must not become a
    second spelling of "x-extauthz"), are refused."""
    hcm = HttpConnectionManager(stat_prefix=name, codec_type=HttpConnectionManager.AUTO)
    hcm.use_remote_address.value = edge
    hcm.generate_request_id.value = True
    hcm.preserve_external_request_id = not edge
    hcm.normalize_path.value = True
    hcm.merge_slashes = True
    hcm.path_with_escaped_slashes_action = HttpConnectionManager.REJECT_REQUEST
    hcm.common_http_protocol_options.headers_with_underscores_action = (
        CoreHttpProtocolOptions.REJECT_REQUEST
    )
    hcm.route_config.name = name
    return hcm


def _bootstrap(name: str, listen: Endpoint, admin: Endpoint, hcm: HttpConnectionManager,
               clusters: Sequence[Cluster]) -> Bootstrap:  # fmt: skip
    boot = Bootstrap()
    _socket(boot.admin.address.socket_address, admin)
    listener: Listener = boot.static_resources.listeners.add(name=name)
    _socket(listener.address.socket_address, listen)
    chain = listener.filter_chains.add()
    chain.filters.add(name="envoy.filters.network.http_connection_manager").typed_config.CopyFrom(
        packed(hcm)
    )
    boot.static_resources.clusters.extend(clusters)
    return boot


def _disable(route: Route, *names: str) -> None:
    """Turn the filters ``names`` off on ``route`` (``ExtAuthzPerRoute.disabled``,
    ``ExtProcPerRoute.disabled``)."""
    for name in names:
        per_route = ExtAuthzPerRoute if name == EXT_AUTHZ else ExtProcPerRoute
        route.typed_per_filter_config[name].CopyFrom(packed(per_route(disabled=True)))


def _extauthz_routes(vhost: VirtualHost, health_path: str) -> None:
    """The routes every authorising Envoy has before the route table: the health answer, and
    extauthz's own HTTP endpoints."""
    health = vhost.routes.add()
    health.match.path = health_path
    health.direct_response.status = 200
    health.direct_response.body.inline_string = "ok\n"
    _disable(health, EXT_AUTHZ, SESSION_UPDATE)
    # JWKS: upstream services fetch the keys without a session; so do applications the OAuth 2.0
    # server metadata (/.well-known/oauth-authorization-server, RFC 8414)
    well_known = vhost.routes.add()
    well_known.match.prefix = "/.well-known/"
    well_known.route.cluster = EXTAUTHZ_HTTP
    _disable(well_known, EXT_AUTHZ, SESSION_UPDATE)
    # GET /auth/verify answers nginx/Traefik/Caddy with the JWT (docs/forward-auth.md): never
    # served to a client from here, with or without a session
    verify = vhost.routes.add()
    verify.match.path = "/auth/verify"
    verify.direct_response.status = 404
    _disable(verify, SESSION_UPDATE)
    # the authentication service (login, logout, session) reads its own cookie; the OAuth 2.0
    # endpoints under /auth/oauth/ authenticate applications themselves (docs/oauth.md)
    auth = vhost.routes.add()
    auth.match.prefix = "/auth/"
    auth.route.cluster = EXTAUTHZ_HTTP
    _disable(auth, EXT_AUTHZ, SESSION_UPDATE)


def _table_route(vhost: VirtualHost, entry: TableRoute) -> None:
    """A route of the table: to the upstream, with its ``context_extensions`` (which replace,
    not extend, those of any other route: repeat what still applies)."""
    route = vhost.routes.add()
    if entry.prefix is not None:
        route.match.prefix = entry.prefix
    else:
        route.match.path = entry.path or "/"
    route.route.cluster = UPSTREAM
    per_route = ExtAuthzPerRoute()
    per_route.check_settings.context_extensions.update(entry.context_extensions)
    route.typed_per_filter_config[EXT_AUTHZ].CopyFrom(packed(per_route))


def _service(name: str, inputs: ServiceInputs, *, edge: bool, health_path: str) -> Bootstrap:
    hcm = _connection_manager(name, edge=edge)
    hcm.access_log.append(filters.access_log(filters.ext_authz_log_fields()))
    extra = (
        []
        if inputs.session_update_header.startswith(filters.INTERNAL_PREFIX)
        else [inputs.session_update_header]
    )
    hcm.http_filters.extend([
        filters.header_mutation(extra),
        filters.ext_authz(),
        filters.session_update(inputs.cookie_name, inputs.session_update_header),
        filters.router(),
    ])  # fmt: skip
    # the JWT header (jwt.header) is for the upstream's eyes: it never travels back to clients
    hcm.route_config.response_headers_to_remove.append(inputs.jwt_header)
    vhost = hcm.route_config.virtual_hosts.add(name=name, domains=["*"])
    _extauthz_routes(vhost, health_path)
    for entry in inputs.routes:
        _table_route(vhost, entry)
    clusters = [
        _grpc_cluster(inputs.extauthz_grpc),
        _cluster(EXTAUTHZ_HTTP, inputs.extauthz_http),
        _cluster(UPSTREAM, inputs.upstream),
    ]
    return _bootstrap(name, inputs.listen, inputs.admin, hcm, clusters)


def front_proxy(inputs: ServiceInputs) -> Bootstrap:
    """The front proxy: the edge; every request is authorised by extauthz before it is routed
    upstream, except extauthz's own endpoints and the health answer at ``/health/direct``."""
    return _service("front", inputs, edge=True, health_path=FRONT_HEALTH_PATH)


def sidecar(inputs: ServiceInputs) -> Bootstrap:
    """The per-node sidecar of the sticky strategy, behind :func:`sticky_front`: authorises
    with the node-local extauthz and routes to the node-local upstream; answers the front's
    health check at ``/healthz``."""
    return _service("sidecar", inputs, edge=False, health_path=SIDECAR_HEALTH_PATH)


def sticky_front(inputs: StickyInputs) -> Bootstrap:
    """The front Envoy of the sticky strategy: pins each user to one node by consistent hashing
    (``RING_HASH``) on an affinity cookie Envoy issues itself; no ext_authz (each node's sidecar
    authorises against its node-local session store). A lost node costs exactly its own users'
    sessions: the ring is never reshaped by health (a panic threshold of 100% hashes over all
    hosts), a request pinned to the dead node is retried on the next node along the ring
    (``previous_hosts``), the same one every time for a given cookie."""
    name = "sticky_front"
    hcm = _connection_manager(name, edge=True)
    hcm.access_log.append(filters.access_log(filters.STICKY_LOG_FIELDS))
    hcm.http_filters.extend([filters.header_mutation(), filters.router()])
    hcm.route_config.response_headers_to_remove.append(inputs.jwt_header)
    vhost = hcm.route_config.virtual_hosts.add(name=name, domains=["*"])
    route = vhost.routes.add()
    route.match.prefix = "/"
    _sticky_action(route.route, inputs.affinity_cookie)

    cluster = _cluster(NODES, inputs.nodes)
    cluster.lb_policy = Cluster.RING_HASH
    cluster.ring_hash_lb_config.minimum_ring_size.value = 1024
    cluster.common_lb_config.healthy_panic_threshold.value = 100.0
    check = cluster.health_checks.add()
    check.timeout.FromMilliseconds(250)
    check.interval.FromMilliseconds(500)
    # also while a node gets no traffic (Envoy's default there is 60 s)
    check.no_traffic_interval.FromMilliseconds(500)
    check.unhealthy_threshold.value = 1
    check.healthy_threshold.value = 1
    check.http_health_check.path = SIDECAR_HEALTH_PATH
    return _bootstrap(name, inputs.listen, inputs.admin, hcm, [cluster])


def _sticky_action(action: RouteAction, cookie: str) -> None:
    action.cluster = NODES
    action.timeout.FromSeconds(5)
    # the affinity cookie: a session cookie (ttl zero), only a random hash input, no identity
    policy = action.hash_policy.add(terminal=True)
    policy.cookie.name = cookie
    policy.cookie.ttl.FromSeconds(0)
    policy.cookie.path = "/"
    retry = action.retry_policy
    retry.retry_on = "connect-failure,refused-stream"  # never sent: safe for any method
    retry.num_retries.value = 2
    retry.retry_host_predicate.add(
        name="envoy.retry_host_predicates.previous_hosts"
    ).typed_config.CopyFrom(packed(PreviousHostsPredicate()))
    # Ring hash walks one ring entry further per selection attempt, and the entries after a
    # user's position can belong to the dead node several times in a row (each with probability
    # 1/nodes): 5 attempts left about 1 user in 250 stuck on the dead node; 64 make that rare.
    retry.host_selection_retry_max_attempts = 64
