"""The settings objects: one frozen dataclass per TOML table, with the defaults.

Values derived from other settings are computed once, when an object is built
(``ServerSettings.http_listen_is_loopback``, ``StoreSettings.wait_replicas_resolved``), so
every reader sees the same answer.
"""

from __future__ import annotations

import enum
import os
import socket
from dataclasses import dataclass, field

from extauthz.addresses import is_loopback_host
from extauthz.settings import workers
from extauthz.settings.mfa import MfaSettings
from extauthz.settings.tracing import TracingSettings
from extauthz.strategies import StoreBackend, StoreStrategy


@enum.unique
class UserBackend(enum.StrEnum):
    """Where users and their password hashes live (``users.backend``)."""

    FILE = "file"  # a JSON file managed by ``extauthz users``
    REDIS = "redis"  # the session store's Redis


@enum.unique
class SessionIndex(enum.StrEnum):
    """Where the Redis store indexes a new session by its sid (``store.session_index``;
    docs/strategies.md, 'Keys')."""

    SLOT = "slot"  # one hash per Redis Cluster slot, sids <tag>-<22>
    TAG = "tag"  # one hash per subject tag, sids <tag>.<22>: the version before slot indexes


@enum.unique
class ClientBackend(enum.StrEnum):
    """Where OAuth clients live (``oauth_clients.backend``); ``users``: as ``users.backend``."""

    USERS = "users"
    FILE = "file"  # a JSON file managed by ``extauthz clients``
    REDIS = "redis"  # the session store's Redis


def is_loopback(listen: str) -> bool:
    """Whether a ``HOST:PORT`` listen address (IPv6 in brackets) is reachable from this host
    only: ``localhost`` or a loopback address (``127.0.0.0/8``, ``::1``)."""
    return is_loopback_host(listen.rpartition(":")[0].strip("[]"))


def resolve_wait_replicas(
    wait_replicas: int | str,
    strategy: StoreStrategy,
    sentinels: tuple[str, ...],
    cluster_nodes: tuple[str, ...] = (),
) -> int | str:
    """How many replicas a durable write waits for (``WAIT``): a count, or ``"all"`` (every
    replica the primary reports online at the time of the write). ``"auto"`` resolves per
    strategy: central 1 with Sentinels or a Cluster (0 without), replicated ``"all"``,
    sticky 0."""
    if wait_replicas != "auto":
        return wait_replicas
    if strategy == StoreStrategy.REPLICATED:
        return "all"
    if strategy == StoreStrategy.CENTRAL and (sentinels or cluster_nodes):
        return 1
    return 0


@dataclass(frozen=True)
class ServerSettings:
    """Listening addresses and process identity."""

    grpc_listen: str = "127.0.0.1:9001"
    http_listen: str = "127.0.0.1:9002"
    node_id: str = ""  # empty: "<hostname>-<pid>"
    # extauthz processes on this node, each on its own gRPC port (grpc_listen's port + i), all
    # on http_listen: a count >= 1, or "auto" (Settings.worker_count: the CPUs with a Redis
    # store, 1 with the in-memory store, whose sessions live in one process)
    workers: int | str = "auto"
    shutdown_grace_seconds: float = 10.0
    health_check_interval_seconds: float = 1.0
    # the timeout of the Envoy ext_authz filter that calls this node (grpc_service.timeout of
    # envoy/*.yaml): store.check_budget_ms must end well before it (docs/strategies.md)
    ext_authz_timeout_ms: int = 500
    # derived: is_loopback() of the HTTP listen address (session.cookie_secure = false needs it)
    http_listen_is_loopback: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "http_listen_is_loopback", is_loopback(self.http_listen))


@dataclass(frozen=True)
class StoreSettings:
    """The session store and the strategy that shares it between nodes."""

    strategy: StoreStrategy = StoreStrategy.STICKY
    backend: StoreBackend = StoreBackend.MEMORY
    # the primary when no Sentinels are configured
    redis_url: str = "redis://127.0.0.1:6379/0"
    key_prefix: str = "extauthz:"
    timeout_seconds: float = 0.5
    # Sentinels as "HOST:PORT"; when set, the primary is whatever they name for sentinel_service
    sentinels: tuple[str, ...] = ()
    sentinel_service: str = "extauthz"
    # Redis Cluster startup nodes as "HOST:PORT" (central only; replaces redis_url's host and
    # the Sentinels: the cluster names each slot's primary and fails over by itself)
    cluster_nodes: tuple[str, ...] = ()
    # replicated: this node's local read replica
    replica_url: str = ""
    # replicas a login/logout/revocation waits for (WAIT): "auto", "all" or a count.
    # auto: central 1 with Sentinels or a Cluster (else 0), replicated "all", sticky 0
    wait_replicas: int | str = "auto"
    # below timeout_seconds: WAIT blocks the connection, whose read timeout that is
    wait_timeout_ms: int = 250
    # one Check's whole time on the store (attempts, backoff and waits for a pooled
    # connection included); then the Check fails with UNAVAILABLE. At most
    # server.ext_authz_timeout_ms minus 100 ms, so the answer is extauthz's own
    check_budget_ms: int = 400
    # connections per Redis role (primary, replica); a request that finds them all busy
    # waits for one, at most check_budget_ms
    pool_size: int = 100
    # replicated: a replica whose link to the primary is older is not trusted for positive answers
    replica_max_staleness_seconds: float = 5.0
    # node registration in the store (see extauthz.store.redis.membership)
    heartbeat_seconds: float = 5.0
    # where new sessions are indexed by sid (redis): "slot", or "tag" while nodes of the version
    # before slot indexes share the store (a rolling upgrade: docs/strategies.md, 'Keys')
    session_index: SessionIndex = SessionIndex.SLOT
    # derived: resolve_wait_replicas(), a count or "all" ("auto" never remains)
    wait_replicas_resolved: int | str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        resolved = resolve_wait_replicas(
            self.wait_replicas, self.strategy, self.sentinels, self.cluster_nodes
        )
        object.__setattr__(self, "wait_replicas_resolved", resolved)


@dataclass(frozen=True)
class SessionSettings:
    """Session lifetime and the session cookie (RFC 6265)."""

    cookie_name: str = "extauthz_session"
    idle_timeout_seconds: int = 1800
    absolute_timeout_seconds: int = 43200
    cookie_secure: bool = True
    cookie_domain: str = ""
    # how many copies of the session cookie one request may carry before it is refused
    max_cookie_candidates: int = 4
    # rolling rotation: a cookie session whose token is older than this gets a new token on an
    # allowed request (Set-Cookie on the response); 0 = off. Bearer tokens are never rotated
    rotate_after_seconds: int = 0
    # how long a rotated token stays valid (requests already in flight, other tabs), then it
    # is revoked; below rotate_after_seconds, above cache.trust_window_ms
    rotation_grace_seconds: float = 5.0


@dataclass(frozen=True)
class JwtSettings:
    """The JWT minted toward upstream services (RFC 7519)."""

    issuer: str = "http://127.0.0.1:8080"
    audience: str = "upstream"
    lifetime_seconds: int = 300
    keys_dir: str = "keys"
    header: str = "authorization"
    # a cached JWT is reused while at least this fraction of its lifetime is left
    reuse_min_remaining_fraction: float = 0.5
    # rotation: a new key file is published at once and signs once it is this old (seconds;
    # at least the JWKS max-age upstreams cache for); keys_dir is re-read this often
    publish_before_sign_seconds: int = 300
    keys_reload_seconds: float = 30.0
    # the largest JWT a session may produce (bytes of the compact JWS); a session whose roles,
    # scopes and data would exceed it is refused when it is created (docs/operations.md)
    max_bytes: int = 4096


@dataclass(frozen=True)
class DenySettings:
    """How denials look to clients (RFC 6750 challenge, browser redirect)."""

    realm: str = "extauthz"
    login_url: str = "/auth/login"


@dataclass(frozen=True)
class AdminSettings:
    """The project's own admin API, ``SessionAdmin`` (see :mod:`extauthz.server.admin`).

    ``enabled``: when true, ``serve`` refuses to start without ``token_file``, a file holding
    the token that every admin call must carry; when false, every admin call is refused.
    """

    enabled: bool = True
    token_file: str = ""


@dataclass(frozen=True)
class AuthSettings:
    """The authentication service (``/auth/*``, :mod:`extauthz.login.service`).

    ``trusted_proxies``: addresses or CIDR blocks of proxies (Envoy) whose
    ``X-Forwarded-For`` is believed; the client address is the right-most entry they added.
    ``allowed_origins``: origins (``https://app.example``) accepted by the same-site check
    besides the request's own (:mod:`extauthz.login.csrf`).
    ``forward_auth``: serve ``GET /auth/verify`` for nginx ``auth_request``, Traefik
    ``ForwardAuth`` and Caddy ``forward_auth`` (docs/forward-auth.md), to ``trusted_proxies``
    only. Off by default: its 200 carries the JWT, so no client may ever reach it through a
    proxy that routes ``/auth/*`` to extauthz.
    """

    trusted_proxies: tuple[str, ...] = ("127.0.0.1/32", "::1/128")
    allowed_origins: tuple[str, ...] = ()
    default_return_to: str = "/"
    max_body_bytes: int = 16384
    forward_auth: bool = False


@dataclass(frozen=True)
class UsersSettings:
    """Where users and their argon2id password hashes live (:mod:`extauthz.login.users`).

    ``backend = "file"`` reads ``file`` (managed by ``extauthz users``); ``"redis"`` uses the
    session store's Redis (``store.redis_url``) under ``store.key_prefix``.
    """

    backend: UserBackend = UserBackend.FILE
    file: str = "users.json"
    # argon2 operations that may run at once (each costs the hash's memory, 64 MiB by default)
    max_concurrent_hashes: int = 4


@dataclass(frozen=True)
class OAuthClientsSettings:
    """Where registered OAuth clients live (:mod:`extauthz.oauth.clients`).

    ``backend = "users"`` (the default) follows ``users.backend``; ``"file"`` reads ``file``
    (managed by ``extauthz clients``); ``"redis"`` uses the session store's Redis under
    ``store.key_prefix``. ``backend_resolved`` is ``"file"`` or ``"redis"``.
    """

    backend: ClientBackend = ClientBackend.USERS
    file: str = "oauth_clients.json"


@dataclass(frozen=True)
class RateLimitSettings:
    """Brute-force limits (fixed windows, :mod:`extauthz.login.ratelimit`); windows in seconds.

    ``login_user_*``: failed logins per user name; ``login_addr_*``: failed logins per client
    address; ``check_addr_*``: failed token lookups at ``Check`` per client address.
    Counters live in the session store's Redis when ``store.backend = "redis"``, else in memory.
    """

    enabled: bool = True
    login_user_limit: int = 5
    login_user_window_seconds: int = 300
    login_addr_limit: int = 20
    login_addr_window_seconds: int = 300
    check_addr_limit: int = 50
    check_addr_window_seconds: int = 60


@dataclass(frozen=True)
class CacheSettings:
    """The in-process cache of live sessions in front of a Redis store
    (:mod:`extauthz.store.cache`, :mod:`extauthz.store.redis.invalidation`).

    An entry is served for at most ``max_age_seconds``, and only while the node's push channel
    has proved itself alive within the last ``trust_window_ms`` milliseconds; a revocation
    returns only after every caching node acknowledged it or ``trust_window_ms`` (plus a
    margin) has passed. Ignored by the in-memory store, which needs no cache.
    """

    enabled: bool = True
    max_entries: int = 10000
    max_age_seconds: float = 5.0
    trust_window_ms: int = 300


@dataclass(frozen=True)
class SessionUpdateSettings:
    """Session updates from upstream responses (docs/session-updates.md): the response header
    an upstream sets, and which top-level ``data`` keys each upstream may write.

    ``allowed_keys``: entries ``"<Envoy cluster name>=<data key>"``, one per key (the cluster
    is Envoy's ``xds.cluster_name``); an upstream without entries writes nothing.
    ``max_patch_bytes``: the header value's bound; ``attempts``: tries of one update against
    concurrent writes of the same session; ``budget_ms``: the longest one update may spend on
    the store, below the ext_proc filter's ``message_timeout`` (1 s in envoy/*.yaml).
    """

    enabled: bool = True
    header: str = "x-extauthz-session-update"
    allowed_keys: tuple[str, ...] = ()
    max_patch_bytes: int = 4096
    attempts: int = 3
    budget_ms: int = 800


@dataclass(frozen=True)
class ApiKeySettings:
    """API keys for machine clients (``extauthz apikeys``, docs/authentication.md, 'API keys').

    ``header``: where a client may send the bare key besides ``Authorization: Bearer``
    (lower case; removed before the request goes upstream). A key's lifetime is mandatory:
    ``default_lifetime_days`` when none is asked for, never more than ``max_lifetime_days``.
    ``touch_interval_seconds``: a key's last use is written at its first use, then at most
    this often.
    """

    header: str = "x-api-key"
    default_lifetime_days: int = 90
    max_lifetime_days: int = 365
    touch_interval_seconds: int = 300


@dataclass(frozen=True)
class OAuthSettings:
    """The OAuth 2.0 authorization server (docs/oauth.md, :mod:`extauthz.oauth`); off unless
    ``enabled``. Lifetimes in seconds: an access token's (``expires_in``), a refresh-token
    family's (absolute: rotation never extends it), an authorization code's.

    ``issuer``: the RFC 8414 issuer, the base of the endpoints' URLs in the metadata (an https
    URL; empty: ``jwt.issuer``). ``scope_descriptions``: entries ``"<scope>=<plain words>"``
    shown on the consent page (a scope without one is shown as its token). The registered
    clients: ``[oauth_clients]``.
    """

    enabled: bool = False
    issuer: str = ""
    access_token_lifetime_seconds: int = 600
    refresh_token_lifetime_seconds: int = 30 * 86400
    code_lifetime_seconds: int = 60
    consent_lifetime_seconds: int = 365 * 86400
    scope_descriptions: tuple[str, ...] = ()


@dataclass(frozen=True)
class Settings:
    """Every table of the settings file; built by :func:`extauthz.settings.load_settings`."""

    server: ServerSettings = field(default_factory=ServerSettings)
    store: StoreSettings = field(default_factory=StoreSettings)
    session: SessionSettings = field(default_factory=SessionSettings)
    jwt: JwtSettings = field(default_factory=JwtSettings)
    deny: DenySettings = field(default_factory=DenySettings)
    admin: AdminSettings = field(default_factory=AdminSettings)
    auth: AuthSettings = field(default_factory=AuthSettings)
    users: UsersSettings = field(default_factory=UsersSettings)
    oauth_clients: OAuthClientsSettings = field(default_factory=OAuthClientsSettings)
    ratelimit: RateLimitSettings = field(default_factory=RateLimitSettings)
    cache: CacheSettings = field(default_factory=CacheSettings)
    session_updates: SessionUpdateSettings = field(default_factory=SessionUpdateSettings)
    api_keys: ApiKeySettings = field(default_factory=ApiKeySettings)
    oauth: OAuthSettings = field(default_factory=OAuthSettings)
    mfa: MfaSettings = field(default_factory=MfaSettings)
    tracing: TracingSettings = field(default_factory=TracingSettings)

    @property
    def oauth_clients_backend(self) -> UserBackend:
        """``oauth_clients.backend``, with ``"users"`` resolved to ``users.backend``."""
        b = self.oauth_clients.backend
        return self.users.backend if b == ClientBackend.USERS else UserBackend(b.value)

    @property
    def worker_count(self) -> int:
        """``server.workers`` as a count: ``"auto"`` is the CPUs this process may run on
        (``os.sched_getaffinity``, else ``os.cpu_count()``) with the Redis store, and 1 with
        the in-memory store (several processes would not share its sessions). ``"auto"``
        stops short of the ports it cannot use (:func:`extauthz.settings.workers.port_room`):
        with the gRPC port right below the HTTP port (9001 and 9002, the defaults) that is
        one worker."""
        if isinstance(self.server.workers, int):
            return self.server.workers
        if self.store.backend == StoreBackend.MEMORY:
            return 1
        room = workers.port_room(self.server.grpc_listen, self.server.http_listen)
        return min(self.cpu_count, room)

    @property
    def cpu_count(self) -> int:
        """The CPUs this process may run on (:func:`extauthz.settings.workers.cpu_count`)."""
        return workers.cpu_count()

    @property
    def node_id(self) -> str:
        """``server.node_id``, or ``"<hostname>-<pid>"`` when it is empty."""
        return self.server.node_id or f"{socket.gethostname()}-{os.getpid()}"
