"""Checks of a built :class:`~extauthz.settings.model.Settings`: ranges, formats, and whether
the settings fit each other (the store topology and the strategy, cookie rules of RFC 6265bis).
Each failure is a one-line :class:`~extauthz.errors.SettingsError` naming the dotted key."""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit

from extauthz.check.denials import safe_return_to
from extauthz.errors import SettingsError
from extauthz.login.cookies import has_host_prefix, has_secure_prefix
from extauthz.response.updates import Allowlist
from extauthz.settings import model
from extauthz.settings.access import validate_access
from extauthz.settings.headers import HEADER_NAME as _HEADER_NAME
from extauthz.settings.headers import RESERVED_HEADERS as _RESERVED_HEADERS
from extauthz.settings.headers import RESERVED_PREFIXES as _RESERVED_PREFIXES
from extauthz.settings.model import Settings, UserBackend
from extauthz.settings.tracing import validate_tracing
from extauthz.strategies import StoreBackend, StoreStrategy

_COOKIE_NAME = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")  # RFC 6265 token
# RFC 1035 host name labels (a leading dot is ignored by RFC 6265 §5.2.3 and allowed here)
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_DOMAIN = re.compile(rf"\.?(?:{_LABEL}\.)*{_LABEL}")
# HOST of HOST:PORT: a name or address, IPv6 in brackets or bare; no space, comma, separator
_LISTEN_HOST = re.compile(r"[A-Za-z0-9._:-]+|\[[0-9A-Za-z.:%]+\]")
_REDIS_SCHEMES = ("redis://", "rediss://", "unix://")
# what a Check needs besides the store, inside Envoy's ext_authz timeout: the gRPC round trip,
# the JWT, the event loop's other work (docs/strategies.md, 'A Check's budget')
CHECK_ANSWER_MARGIN_MS = 100
# extauthz.store.redis.invalidation.BARRIER_MARGIN_SECONDS, in milliseconds (the settings do not
# import the store package)
CACHE_BARRIER_MARGIN_MS = 100
MAX_WORKERS = 256  # server.workers: more is a typo, not thousands of processes to start


def validate(s: Settings) -> None:
    """:raises SettingsError: the first setting that is out of range, malformed, or does not
    fit the others."""
    _validate_server(s.server)
    _validate_workers(s)
    _validate_cache(s.cache)
    _validate_store(s.store)
    _validate_check_budget(s.store, s.server)
    _validate_session(s.session, s.server)
    _validate_rotation(s)
    _validate_jwt(s.jwt)
    _validate_login_url(s.deny.login_url)
    if '"' in s.deny.realm or "\\" in s.deny.realm:
        raise SettingsError("deny.realm: must not contain quotes or backslashes")
    _validate_auth(s.auth)
    _validate_users(s)
    _validate_ratelimit(s.ratelimit)
    _validate_session_updates(s.session_updates, s.jwt.header)
    validate_access(s)
    validate_tracing(s.tracing)


def _check_listen(dotted: str, value: str) -> None:
    host, sep, port = value.rpartition(":")
    # isascii: str.isdigit() also takes "²" (int() refuses it) and other scripts' digits
    if not sep or not host or not (port.isascii() and port.isdigit()) or not 0 < int(port) < 65536:
        raise SettingsError(f"{dotted}: expected HOST:PORT with a port 1-65535, got {value!r}")
    if not _LISTEN_HOST.fullmatch(host):
        raise SettingsError(f"{dotted}: expected HOST:PORT, a host name or address, got {value!r}")


def _validate_server(s: model.ServerSettings) -> None:
    _check_listen("server.grpc_listen", s.grpc_listen)
    _check_listen("server.http_listen", s.http_listen)
    if s.shutdown_grace_seconds < 0:
        raise SettingsError("server.shutdown_grace_seconds: must not be negative")
    if s.health_check_interval_seconds <= 0:
        raise SettingsError("server.health_check_interval_seconds: must be positive")


def _validate_workers(s: Settings) -> None:
    """``server.workers``: a count >= 1 or "auto"; more than one needs the Redis store, and
    free gRPC ports (:func:`check_worker_ports`; "auto" stops short of the ports it cannot use:
    :attr:`Settings.worker_count`)."""
    workers = s.server.workers
    if isinstance(workers, str) and workers != "auto" or isinstance(workers, int) and workers < 1:
        raise SettingsError(f"server.workers: expected a count >= 1 or 'auto', got {workers!r}")
    if isinstance(workers, int) and workers > MAX_WORKERS:
        raise SettingsError(f"server.workers: at most {MAX_WORKERS}, got {workers}")
    if isinstance(workers, int) and workers > 1 and s.store.backend == StoreBackend.MEMORY:
        raise SettingsError(
            f"server.workers: {workers} workers need store.backend = redis (the in-memory "
            "store lives in one process: the workers would not share its sessions)"
        )
    check_worker_ports(s)


def check_worker_ports(s: Settings) -> None:
    """The workers' gRPC ports, ``server.grpc_listen``'s port + 0 ... + count - 1
    (:attr:`Settings.worker_count`), exist and do not include ``server.http_listen``'s port.

    :raises SettingsError: naming ``server.workers`` and the ports.
    """
    count = s.worker_count
    first = int(s.server.grpc_listen.rpartition(":")[2])
    last = first + count - 1
    where = (
        f"server.workers: {count} workers listen on gRPC ports {first}-{last} "
        "(server.grpc_listen's port + i)"
    )
    if last > 65535:
        raise SettingsError(f"{where}: past 65535")
    http = int(s.server.http_listen.rpartition(":")[2])
    if count > 1 and first <= http <= last:
        raise SettingsError(
            f"{where}, which include server.http_listen's port {http}: move one of them or "
            "set server.workers"
        )


def _validate_cache(c: model.CacheSettings) -> None:
    if not 1 <= c.max_entries <= 10_000_000:
        raise SettingsError("cache.max_entries: expected 1-10000000")
    if not 0 < c.max_age_seconds <= 300:
        raise SettingsError("cache.max_age_seconds: expected more than 0, at most 300 seconds")
    if not 30 <= c.trust_window_ms <= 10_000:
        raise SettingsError("cache.trust_window_ms: expected 30-10000 milliseconds")


def _validate_store(s: model.StoreSettings) -> None:
    if s.backend == StoreBackend.MEMORY and s.strategy != StoreStrategy.STICKY:
        raise SettingsError(
            f"store.backend: the in-memory store is node-local and fits only the sticky "
            f"strategy, not '{s.strategy}'"
        )
    if s.backend == StoreBackend.REDIS and not s.redis_url.startswith(_REDIS_SCHEMES):
        raise SettingsError("store.redis_url: expected a redis://, rediss:// or unix:// URL")
    if s.timeout_seconds <= 0:
        raise SettingsError("store.timeout_seconds: must be positive")
    if "{" in s.key_prefix or "}" in s.key_prefix:
        # a session's keys carry the hash tag {tag} after the prefix (store/redis/keys.py)
        raise SettingsError("store.key_prefix: must not contain '{' or '}' (Redis hash tags)")
    _validate_store_topology(s)
    _validate_wait(s)
    if s.replica_max_staleness_seconds <= 0:
        raise SettingsError("store.replica_max_staleness_seconds: must be positive")
    if s.heartbeat_seconds <= 0:
        raise SettingsError("store.heartbeat_seconds: must be positive")


def _validate_check_budget(s: model.StoreSettings, server: model.ServerSettings) -> None:
    """The store's budget for one Check must end before Envoy's ext_authz timeout, with
    :data:`CHECK_ANSWER_MARGIN_MS` to spare, so that Envoy receives extauthz's own answer."""
    if not 100 <= server.ext_authz_timeout_ms <= 60_000:
        raise SettingsError("server.ext_authz_timeout_ms: expected 100-60000 milliseconds")
    if not 1 <= s.pool_size <= 10_000:
        raise SettingsError("store.pool_size: expected 1-10000 connections")
    most = server.ext_authz_timeout_ms - CHECK_ANSWER_MARGIN_MS
    if not 10 <= s.check_budget_ms <= most:
        raise SettingsError(
            f"store.check_budget_ms: expected 10 ms up to {most} ms, "
            f"server.ext_authz_timeout_ms ({server.ext_authz_timeout_ms} ms) minus "
            f"{CHECK_ANSWER_MARGIN_MS} ms for the answer; a longer budget lets Envoy time out "
            f"first, with a 503 that carries none of extauthz's metadata"
        )


def _validate_store_topology(s: model.StoreSettings) -> None:
    """Does the topology fit the strategy? (docs/strategies.md)"""
    for address in s.sentinels:
        _check_listen("store.sentinels", address)
    if s.sentinels and s.backend != StoreBackend.REDIS:
        raise SettingsError(
            "store.sentinels: Sentinel manages a Redis primary; set store.backend = redis"
        )
    if s.sentinels and not s.sentinel_service:
        raise SettingsError("store.sentinel_service: the Sentinels need a service name")
    if s.sentinels and s.strategy == StoreStrategy.STICKY:
        raise SettingsError(
            "store.sentinels: the sticky strategy keeps a node-local store; a Sentinel-managed "
            "primary is shared (use the central or replicated strategy)"
        )
    _validate_cluster(s)
    if s.strategy == StoreStrategy.REPLICATED:
        if not s.replica_url:
            raise SettingsError(
                "store.replica_url: the replicated strategy needs the node's local replica"
            )
        if not s.replica_url.startswith(_REDIS_SCHEMES):
            raise SettingsError("store.replica_url: expected a redis://, rediss:// or unix:// URL")
    elif s.replica_url:
        raise SettingsError(
            f"store.replica_url: only the replicated strategy reads from a node-local replica, "
            f"not '{s.strategy}'"
        )


def _validate_cluster(s: model.StoreSettings) -> None:
    """Redis Cluster: central only, never beside Sentinels (docs/strategies.md, 'Redis
    Cluster')."""
    if not s.cluster_nodes:
        return
    for address in s.cluster_nodes:
        _check_listen("store.cluster_nodes", address)
    if s.sentinels:
        raise SettingsError(
            "store.cluster_nodes: a Redis Cluster fails over by itself; set either "
            "store.cluster_nodes or store.sentinels, not both"
        )
    if s.backend != StoreBackend.REDIS or s.strategy != StoreStrategy.CENTRAL:
        raise SettingsError(
            f"store.cluster_nodes: only the central strategy on the redis backend runs on a "
            f"Redis Cluster, not '{s.strategy}' on '{s.backend}'"
        )
    if urlsplit(s.redis_url).path not in ("", "/", "/0"):
        raise SettingsError(
            "store.redis_url: a Redis Cluster has only database 0; with store.cluster_nodes "
            "the URL's host is not used"
        )


def _validate_wait(s: model.StoreSettings) -> None:
    wait = s.wait_replicas
    if isinstance(wait, str) and wait not in ("auto", "all"):
        raise SettingsError(f'store.wait_replicas: expected "auto", "all" or a count, got {wait!r}')
    if isinstance(wait, int) and not 0 <= wait <= 64:
        raise SettingsError("store.wait_replicas: expected a count 0-64")
    if s.strategy == StoreStrategy.REPLICATED and wait == 0:
        raise SettingsError(
            "store.wait_replicas: the replicated strategy must wait for the replicas before a "
            'logout returns ("all" or a count, not 0)'
        )
    waits = s.wait_replicas_resolved != 0
    if s.wait_timeout_ms <= 0 or (waits and s.wait_timeout_ms >= s.timeout_seconds * 1000):
        raise SettingsError(
            f"store.wait_timeout_ms: expected 1 ms up to below store.timeout_seconds "
            f"({s.timeout_seconds * 1000:g} ms), the read timeout that WAIT must finish within"
        )


def _validate_session(s: model.SessionSettings, server: model.ServerSettings) -> None:
    if not _COOKIE_NAME.fullmatch(s.cookie_name):
        raise SettingsError(
            f"session.cookie_name: not a valid cookie name (RFC 6265 token): {s.cookie_name!r}"
        )
    # browsers match the prefixes in any letter case (extauthz.login.cookies)
    if has_host_prefix(s.cookie_name) and s.cookie_domain:
        raise SettingsError("session.cookie_domain: a __Host- cookie must not set a Domain")
    if has_secure_prefix(s.cookie_name) and not s.cookie_secure:
        raise SettingsError(
            "session.cookie_secure: a __Host- or __Secure- cookie must be Secure (RFC 6265bis)"
        )
    if not s.cookie_secure and not server.http_listen_is_loopback:
        raise SettingsError(
            "session.cookie_secure: false is only for plain-HTTP local use, with "
            f"server.http_listen on a loopback address (not {server.http_listen!r})"
        )
    if s.idle_timeout_seconds <= 0:
        raise SettingsError("session.idle_timeout_seconds: must be positive")
    if s.absolute_timeout_seconds < s.idle_timeout_seconds:
        raise SettingsError(
            "session.absolute_timeout_seconds: must be at least session.idle_timeout_seconds"
        )
    if not 1 <= s.max_cookie_candidates <= 16:
        raise SettingsError("session.max_cookie_candidates: expected 1-16")
    if s.cookie_domain and not _DOMAIN.fullmatch(s.cookie_domain):
        raise SettingsError(
            f"session.cookie_domain: expected a domain name such as example.com, got "
            f"{s.cookie_domain!r}"
        )


def _validate_rotation(s: Settings) -> None:
    """Token rotation (docs/authentication.md, 'Token rotation'): the grace must outlast the caches'
    trust window (a rotation does not wait for other nodes' caches to drop the old token) and
    end before the next rotation is due."""
    c = s.session
    if not 0 <= c.rotate_after_seconds <= c.absolute_timeout_seconds:
        raise SettingsError(
            "session.rotate_after_seconds: expected 0 (off) up to "
            f"session.absolute_timeout_seconds ({c.absolute_timeout_seconds})"
        )
    if not 0 < c.rotation_grace_seconds <= 300:
        raise SettingsError("session.rotation_grace_seconds: expected more than 0, at most 300")
    if c.rotate_after_seconds and c.rotation_grace_seconds >= c.rotate_after_seconds:
        raise SettingsError(
            f"session.rotation_grace_seconds: must be below session.rotate_after_seconds "
            f"({c.rotate_after_seconds}), or a token would be rotated again within its grace"
        )
    if s.store.backend == StoreBackend.REDIS and s.cache.enabled:
        least_ms = s.cache.trust_window_ms + CACHE_BARRIER_MARGIN_MS
        if c.rotation_grace_seconds * 1000 <= least_ms:
            raise SettingsError(
                f"session.rotation_grace_seconds: must exceed cache.trust_window_ms plus "
                f"{CACHE_BARRIER_MARGIN_MS} ms ({least_ms} ms), the longest another node's "
                f"cache may still answer for a rotated token"
            )


def _validate_jwt(j: model.JwtSettings) -> None:
    if not 10 <= j.lifetime_seconds <= 3600:
        raise SettingsError("jwt.lifetime_seconds: expected 10-3600 seconds")
    if not 1024 <= j.max_bytes <= 65536:
        raise SettingsError("jwt.max_bytes: expected 1024-65536 bytes")
    if j.publish_before_sign_seconds < 0:
        raise SettingsError("jwt.publish_before_sign_seconds: must not be negative")
    if j.keys_reload_seconds <= 0:
        raise SettingsError("jwt.keys_reload_seconds: must be positive")
    if not 0.0 < j.reuse_min_remaining_fraction < 1.0:
        raise SettingsError("jwt.reuse_min_remaining_fraction: expected a fraction in (0, 1)")
    if not _HEADER_NAME.fullmatch(j.header):
        raise SettingsError(f"jwt.header: expected a lower-case HTTP header name, got {j.header!r}")
    if j.header in _RESERVED_HEADERS or j.header.startswith(_RESERVED_PREFIXES):
        raise SettingsError(
            f"jwt.header: {j.header!r} has a meaning of its own in HTTP or Envoy; "
            "use authorization or an x- header of your own"
        )
    if not j.issuer.strip() or not j.audience.strip():
        raise SettingsError("jwt.issuer and jwt.audience: must not be empty")


def _validate_login_url(url: str) -> None:
    """A same-site path (``/auth/login``) or an absolute http(s) URL of a login host; never a
    scheme-relative ``//host`` or anything that is neither."""
    if any(ord(c) <= 0x20 or ord(c) == 0x7F or c == "\\" for c in url):
        raise SettingsError("deny.login_url: must not contain spaces, control characters or \\")
    parts = urlsplit(url)
    if url.startswith("/") and not url.startswith("//"):
        return
    if parts.scheme in ("http", "https") and parts.netloc:
        return
    raise SettingsError(
        f"deny.login_url: expected a path such as /auth/login or an http(s) URL, got {url!r}"
    )


def _validate_auth(a: model.AuthSettings) -> None:
    for entry in a.trusted_proxies:
        try:
            network = ipaddress.ip_network(entry, strict=False)
        except ValueError:
            raise SettingsError(
                f"auth.trusted_proxies: not an address or CIDR block: {entry!r}"
            ) from None
        if network.prefixlen == 0:
            raise SettingsError(
                f"auth.trusted_proxies: {entry!r} trusts every address, so any client could "
                "choose the address its rate limits count under; name your proxies"
            )
    for origin in a.allowed_origins:
        parts = urlsplit(origin)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.path:
            raise SettingsError(
                f"auth.allowed_origins: expected scheme://host[:port], got {origin!r}"
            )
    # it goes into Location as it is: what a client's return_to may not carry, it may not
    # either (a backslash, which browsers read as "/", white space, controls, raw non-ASCII)
    if safe_return_to(a.default_return_to) != a.default_return_to:
        raise SettingsError(
            "auth.default_return_to: expected a path beginning with one /, without "
            "backslashes, white space or control characters, non-ASCII percent-encoded"
        )
    if not 1024 <= a.max_body_bytes <= 1048576:
        raise SettingsError("auth.max_body_bytes: expected 1024-1048576")


def _validate_users(s: Settings) -> None:
    u = s.users
    if u.backend == UserBackend.FILE and not u.file:
        raise SettingsError("users.file: must not be empty when users.backend is file")
    if u.backend == UserBackend.REDIS and s.store.backend != StoreBackend.REDIS:
        raise SettingsError("users.backend: redis needs store.backend = redis (its Redis is used)")
    if not 1 <= u.max_concurrent_hashes <= 64:
        raise SettingsError("users.max_concurrent_hashes: expected 1-64")


def _validate_ratelimit(r: model.RateLimitSettings) -> None:
    for name in ("login_user", "login_addr", "check_addr"):
        if getattr(r, f"{name}_limit") < 1:
            raise SettingsError(f"ratelimit.{name}_limit: must be at least 1")
        if getattr(r, f"{name}_window_seconds") < 1:
            raise SettingsError(f"ratelimit.{name}_window_seconds: must be at least 1")


def _validate_session_updates(u: model.SessionUpdateSettings, jwt_header: str) -> None:
    if not _HEADER_NAME.fullmatch(u.header) or u.header.startswith(_RESERVED_PREFIXES):
        raise SettingsError(
            f"session_updates.header: expected a lower-case header name, got {u.header!r}"
        )
    if u.header in _RESERVED_HEADERS or u.header == jwt_header:
        raise SettingsError(f"session_updates.header: {u.header!r} means something else")
    try:
        Allowlist.from_entries(u.allowed_keys)
    except ValueError as exc:
        raise SettingsError(f"session_updates.allowed_keys: {exc}") from None
    if not 64 <= u.max_patch_bytes <= 4096:
        raise SettingsError("session_updates.max_patch_bytes: expected 64-4096 bytes")
    if not 1 <= u.attempts <= 10:
        raise SettingsError("session_updates.attempts: expected 1-10")
    if not 50 <= u.budget_ms <= 5000:
        raise SettingsError("session_updates.budget_ms: expected 50-5000 ms")
