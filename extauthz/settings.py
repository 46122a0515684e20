"""Settings: one frozen object built once at start-up.

Sources, later ones win:

1. defaults (the dataclass field defaults below);
2. a TOML file (``extauthz serve --config FILE``), tables named after the sections;
3. environment variables ``EXTAUTHZ_<SECTION>_<KEY>`` (upper case), e.g.
   ``EXTAUTHZ_STORE_REDIS_URL=redis://127.0.0.1:6390/0``. Lists are comma separated.

Nothing here reads the environment at import time. A bad value raises
:class:`~extauthz.errors.SettingsError` whose message is one line naming the key
(``store.redis_url``) and what is wrong with it.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import math
import os
import re
import socket
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_type_hints
from urllib.parse import urlsplit

from extauthz.errors import SettingsError

STRATEGIES = ("central", "sticky", "replicated")
BACKENDS = ("memory", "redis")
USER_BACKENDS = ("file", "redis")

_COOKIE_NAME = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")  # RFC 6265 token
_HEADER_NAME = re.compile(r"^[!#$%&'*+\-.^_`|~0-9a-z]+$")  # RFC 9110 token, lower case
# RFC 1035 host name labels (a leading dot is ignored by RFC 6265 §5.2.3 and allowed here)
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_DOMAIN = re.compile(rf"\.?(?:{_LABEL}\.)*{_LABEL}")
# headers the JWT must never be written into: their values mean something else to HTTP,
# to Envoy or to the upstream
_RESERVED_HEADERS = frozenset(
    {
        "host", "cookie", "set-cookie", "content-length", "content-type", "content-encoding",
        "transfer-encoding", "connection", "keep-alive", "te", "trailer", "upgrade",
        "proxy-authorization", "proxy-connection", "forwarded", "via", "x-request-id",
        "expect", "range", "origin", "referer",
    }
)  # fmt: skip
_RESERVED_PREFIXES = ("x-forwarded-", "x-envoy-", "sec-", ":")


@dataclass(frozen=True)
class ServerSettings:
    """Listening addresses and process identity."""

    grpc_listen: str = "127.0.0.1:9001"
    http_listen: str = "127.0.0.1:9002"
    node_id: str = ""  # empty: "<hostname>-<pid>"
    shutdown_grace_seconds: float = 10.0
    health_check_interval_seconds: float = 1.0


@dataclass(frozen=True)
class StoreSettings:
    """The session store and the strategy that shares it between nodes."""

    strategy: str = "sticky"
    backend: str = "memory"
    # the primary when no Sentinels are configured
    redis_url: str = "redis://127.0.0.1:6379/0"
    key_prefix: str = "extauthz:"
    timeout_seconds: float = 0.5
    # Sentinels as "HOST:PORT"; when set, the primary is whatever they name for sentinel_service
    sentinels: tuple[str, ...] = ()
    sentinel_service: str = "extauthz"
    # replicated: this node's local read replica
    replica_url: str = ""
    # replicas a login/logout/revocation waits for (WAIT): "auto", "all" or a count.
    # auto: central 1 with Sentinels (else 0), replicated "all", sticky 0
    wait_replicas: int | str = "auto"
    # below timeout_seconds: WAIT blocks the connection, whose read timeout that is
    wait_timeout_ms: int = 250
    # replicated: a replica whose link to the primary is older is not trusted for positive answers
    replica_max_staleness_seconds: float = 5.0
    # node registration in the store (see extauthz.server.registry)
    heartbeat_seconds: float = 5.0


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


@dataclass(frozen=True)
class DenySettings:
    """How denials look to clients (RFC 6750 challenge, browser redirect)."""

    realm: str = "extauthz"
    login_url: str = "/auth/login"


@dataclass(frozen=True)
class AdminSettings:
    """Access to the project's own admin API (see :mod:`extauthz.server.admin`)."""

    token_file: str = ""


@dataclass(frozen=True)
class AuthSettings:
    """The authentication service (``/auth/*``, :mod:`extauthz.login.service`).

    ``trusted_proxies``: addresses or CIDR blocks of proxies (Envoy) whose
    ``X-Forwarded-For`` is believed; the client address is the right-most entry they added.
    ``allowed_origins``: origins (``https://app.example``) accepted by the same-site check
    besides the request's own (:mod:`extauthz.login.csrf`).
    """

    trusted_proxies: tuple[str, ...] = ("127.0.0.1/32", "::1/128")
    allowed_origins: tuple[str, ...] = ()
    default_return_to: str = "/"
    max_body_bytes: int = 16384


@dataclass(frozen=True)
class UsersSettings:
    """Where users and their argon2id password hashes live (:mod:`extauthz.login.users`).

    ``backend = "file"`` reads ``file`` (managed by ``extauthz users``); ``"redis"`` uses the
    session store's Redis (``store.redis_url``) under ``store.key_prefix``.
    """

    backend: str = "file"
    file: str = "users.json"
    # argon2 operations that may run at once (each costs the hash's memory, 64 MiB by default)
    max_concurrent_hashes: int = 4


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
class Settings:
    server: ServerSettings = field(default_factory=ServerSettings)
    store: StoreSettings = field(default_factory=StoreSettings)
    session: SessionSettings = field(default_factory=SessionSettings)
    jwt: JwtSettings = field(default_factory=JwtSettings)
    deny: DenySettings = field(default_factory=DenySettings)
    admin: AdminSettings = field(default_factory=AdminSettings)
    auth: AuthSettings = field(default_factory=AuthSettings)
    users: UsersSettings = field(default_factory=UsersSettings)
    ratelimit: RateLimitSettings = field(default_factory=RateLimitSettings)
    cache: CacheSettings = field(default_factory=CacheSettings)

    @property
    def node_id(self) -> str:
        return self.server.node_id or f"{socket.gethostname()}-{os.getpid()}"


def load_settings(
    path: str | Path | None = None, environ: Mapping[str, str] | None = None
) -> Settings:
    """Build :class:`Settings` from defaults, an optional TOML file and ``environ``.

    :raises SettingsError: unreadable file, unknown table or key, or a bad value.
    """
    raw: dict[str, Any] = {}
    if path is not None:
        try:
            with open(path, "rb") as fh:
                raw = tomllib.load(fh)
        except OSError as exc:
            raise SettingsError(f"settings file {path}: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise SettingsError(f"settings file {path}: not valid TOML: {exc}") from None
    env = os.environ if environ is None else environ
    sections: dict[str, Any] = {}
    section_types = get_type_hints(Settings)
    for name in raw:
        if name not in section_types:
            raise SettingsError(f"{name}: unknown settings table")
    for name, cls in section_types.items():
        table = raw.get(name, {})
        if not isinstance(table, dict):
            raise SettingsError(f"{name}: expected a table")
        sections[name] = _build_section(name, cls, table, env)
    settings = Settings(**sections)
    _validate(settings)
    return settings


def _build_section(name: str, cls: type, table: dict[str, Any], env: Mapping[str, str]) -> Any:
    hints = get_type_hints(cls)
    values: dict[str, Any] = {}
    for key in table:
        if key not in hints:
            raise SettingsError(f"{name}.{key}: unknown key")
    for f in dataclasses.fields(cls):
        dotted = f"{name}.{f.name}"
        env_name = f"EXTAUTHZ_{name}_{f.name}".upper()
        if env_name in env:
            values[f.name] = _from_text(dotted, hints[f.name], env[env_name])
        elif f.name in table:
            values[f.name] = _coerce(dotted, hints[f.name], table[f.name])
    return cls(**values)


def _from_text(dotted: str, kind: Any, text: str) -> Any:
    if kind is bool:
        lowered = text.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise SettingsError(f"{dotted}: expected true or false, got {text!r}")
    if kind in (int, float):
        try:
            number = kind(text.strip())
        except ValueError:
            raise SettingsError(f"{dotted}: expected a number, got {text!r}") from None
        return _finite(dotted, number)
    if kind == tuple[str, ...]:
        return tuple(part.strip() for part in text.split(",") if part.strip())
    if kind == int | str:
        return int(text.strip()) if text.strip().isdigit() else text.strip()
    return text


def _finite(dotted: str, number: float) -> float:
    if not math.isfinite(number):
        raise SettingsError(f"{dotted}: expected a finite number, got {number!r}")
    return number


def _coerce(dotted: str, kind: Any, value: Any) -> Any:
    if kind is bool:
        if not isinstance(value, bool):
            raise SettingsError(f"{dotted}: expected true or false, got {value!r}")
        return value
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise SettingsError(f"{dotted}: expected an integer, got {value!r}")
        return value
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise SettingsError(f"{dotted}: expected a number, got {value!r}")
        return _finite(dotted, float(value))
    if kind == tuple[str, ...]:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise SettingsError(f"{dotted}: expected a list of strings, got {value!r}")
        return tuple(value)
    if kind == int | str:
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise SettingsError(f"{dotted}: expected an integer or a string, got {value!r}")
        return value
    if not isinstance(value, str):
        raise SettingsError(f"{dotted}: expected a string, got {value!r}")
    return value


def _check_listen(dotted: str, value: str) -> None:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise SettingsError(f"{dotted}: expected HOST:PORT with a port 1-65535, got {value!r}")


_REDIS_SCHEMES = ("redis://", "rediss://", "unix://")


def _validate_store_topology(s: StoreSettings) -> None:
    """Does the topology fit the strategy? (docs/strategies.md)"""
    for address in s.sentinels:
        _check_listen("store.sentinels", address)
    if s.sentinels and s.backend != "redis":
        raise SettingsError(
            "store.sentinels: Sentinel manages a Redis primary; set store.backend = redis"
        )
    if s.sentinels and not s.sentinel_service:
        raise SettingsError("store.sentinel_service: the Sentinels need a service name")
    if s.sentinels and s.strategy == "sticky":
        raise SettingsError(
            "store.sentinels: the sticky strategy keeps a node-local store; a Sentinel-managed "
            "primary is shared (use the central or replicated strategy)"
        )
    if s.strategy == "replicated":
        if not s.replica_url:
            raise SettingsError(
                "store.replica_url: the replicated strategy needs the node's local replica"
            )
        if not s.replica_url.startswith(_REDIS_SCHEMES):
            raise SettingsError("store.replica_url: expected a redis://, rediss:// or unix:// URL")
    elif s.replica_url:
        raise SettingsError(
            f"store.replica_url: only the replicated strategy reads from a node-local replica, "
            f"not {s.strategy!r}"
        )
    wait = s.wait_replicas
    if isinstance(wait, str) and wait not in ("auto", "all"):
        raise SettingsError(f'store.wait_replicas: expected "auto", "all" or a count, got {wait!r}')
    if isinstance(wait, int) and not 0 <= wait <= 64:
        raise SettingsError("store.wait_replicas: expected a count 0-64")
    if s.strategy == "replicated" and wait == 0:
        raise SettingsError(
            'store.wait_replicas: the replicated strategy must wait for the replicas before a '
            'logout returns ("all" or a count, not 0)'
        )
    if wait == "auto":  # as extauthz.store.redis.clients.wait_replicas resolves it
        waits = s.strategy == "replicated" or (s.strategy == "central" and bool(s.sentinels))
    else:
        waits = wait != 0
    if s.wait_timeout_ms <= 0 or (waits and s.wait_timeout_ms >= s.timeout_seconds * 1000):
        raise SettingsError(
            f"store.wait_timeout_ms: expected 1 ms up to below store.timeout_seconds "
            f"({s.timeout_seconds * 1000:g} ms), the read timeout that WAIT must finish within"
        )
    if s.replica_max_staleness_seconds <= 0:
        raise SettingsError("store.replica_max_staleness_seconds: must be positive")
    if s.heartbeat_seconds <= 0:
        raise SettingsError("store.heartbeat_seconds: must be positive")


def _validate_cache(c: CacheSettings) -> None:
    if not 1 <= c.max_entries <= 10_000_000:
        raise SettingsError("cache.max_entries: expected 1-10000000")
    if not 0 < c.max_age_seconds <= 300:
        raise SettingsError("cache.max_age_seconds: expected more than 0, at most 300 seconds")
    if not 30 <= c.trust_window_ms <= 10_000:
        raise SettingsError("cache.trust_window_ms: expected 30-10000 milliseconds")


def _validate(s: Settings) -> None:
    _check_listen("server.grpc_listen", s.server.grpc_listen)
    _validate_cache(s.cache)
    _check_listen("server.http_listen", s.server.http_listen)
    if s.server.shutdown_grace_seconds < 0:
        raise SettingsError("server.shutdown_grace_seconds: must not be negative")
    if s.server.health_check_interval_seconds <= 0:
        raise SettingsError("server.health_check_interval_seconds: must be positive")
    if s.store.strategy not in STRATEGIES:
        raise SettingsError(
            f"store.strategy: expected one of {', '.join(STRATEGIES)}, got {s.store.strategy!r}"
        )
    if s.store.backend not in BACKENDS:
        raise SettingsError(
            f"store.backend: expected one of {', '.join(BACKENDS)}, got {s.store.backend!r}"
        )
    if s.store.backend == "memory" and s.store.strategy != "sticky":
        raise SettingsError(
            f"store.backend: the in-memory store is node-local and fits only the sticky "
            f"strategy, not {s.store.strategy!r}"
        )
    if s.store.backend == "redis" and not s.store.redis_url.startswith(
        ("redis://", "rediss://", "unix://")
    ):
        raise SettingsError("store.redis_url: expected a redis://, rediss:// or unix:// URL")
    if s.store.timeout_seconds <= 0:
        raise SettingsError("store.timeout_seconds: must be positive")
    _validate_store_topology(s.store)
    if not _COOKIE_NAME.fullmatch(s.session.cookie_name):
        raise SettingsError(
            f"session.cookie_name: not a valid cookie name (RFC 6265 token): "
            f"{s.session.cookie_name!r}"
        )
    if s.session.cookie_name.startswith("__Host-") and s.session.cookie_domain:
        raise SettingsError("session.cookie_domain: a __Host- cookie must not set a Domain")
    if s.session.cookie_name.startswith(("__Host-", "__Secure-")) and not s.session.cookie_secure:
        raise SettingsError(
            "session.cookie_secure: a __Host- or __Secure- cookie must be Secure (RFC 6265bis)"
        )
    if s.session.idle_timeout_seconds <= 0:
        raise SettingsError("session.idle_timeout_seconds: must be positive")
    if s.session.absolute_timeout_seconds < s.session.idle_timeout_seconds:
        raise SettingsError(
            "session.absolute_timeout_seconds: must be at least session.idle_timeout_seconds"
        )
    if not 1 <= s.session.max_cookie_candidates <= 16:
        raise SettingsError("session.max_cookie_candidates: expected 1-16")
    if not 10 <= s.jwt.lifetime_seconds <= 3600:
        raise SettingsError("jwt.lifetime_seconds: expected 10-3600 seconds")
    if s.jwt.publish_before_sign_seconds < 0:
        raise SettingsError("jwt.publish_before_sign_seconds: must not be negative")
    if s.jwt.keys_reload_seconds <= 0:
        raise SettingsError("jwt.keys_reload_seconds: must be positive")
    if not 0.0 < s.jwt.reuse_min_remaining_fraction < 1.0:
        raise SettingsError("jwt.reuse_min_remaining_fraction: expected a fraction in (0, 1)")
    if not _HEADER_NAME.fullmatch(s.jwt.header):
        raise SettingsError(
            f"jwt.header: expected a lower-case HTTP header name, got {s.jwt.header!r}"
        )
    if s.jwt.header in _RESERVED_HEADERS or s.jwt.header.startswith(_RESERVED_PREFIXES):
        raise SettingsError(
            f"jwt.header: {s.jwt.header!r} has a meaning of its own in HTTP or Envoy; "
            "use authorization or an x- header of your own"
        )
    if not s.jwt.issuer.strip() or not s.jwt.audience.strip():
        raise SettingsError("jwt.issuer and jwt.audience: must not be empty")
    if s.session.cookie_domain and not _DOMAIN.fullmatch(s.session.cookie_domain):
        raise SettingsError(
            f"session.cookie_domain: expected a domain name such as example.com, got "
            f"{s.session.cookie_domain!r}"
        )
    _validate_login_url(s.deny.login_url)
    if '"' in s.deny.realm or "\\" in s.deny.realm:
        raise SettingsError("deny.realm: must not contain quotes or backslashes")
    _validate_auth(s)


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


def _validate_auth(s: Settings) -> None:
    if not s.session.cookie_secure:
        host = s.server.http_listen.rpartition(":")[0].strip("[]")
        try:
            local = host == "localhost" or ipaddress.ip_address(host).is_loopback
        except ValueError:
            local = False
        if not local:
            raise SettingsError(
                "session.cookie_secure: false is only for plain-HTTP local use, with "
                f"server.http_listen on a loopback address (not {s.server.http_listen!r})"
            )
    for entry in s.auth.trusted_proxies:
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
    for origin in s.auth.allowed_origins:
        parts = urlsplit(origin)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.path:
            raise SettingsError(
                f"auth.allowed_origins: expected scheme://host[:port], got {origin!r}"
            )
    if not s.auth.default_return_to.startswith("/") or s.auth.default_return_to.startswith("//"):
        raise SettingsError("auth.default_return_to: expected a path beginning with one /")
    if not 1024 <= s.auth.max_body_bytes <= 1048576:
        raise SettingsError("auth.max_body_bytes: expected 1024-1048576")
    if s.users.backend not in USER_BACKENDS:
        raise SettingsError(
            f"users.backend: expected one of {', '.join(USER_BACKENDS)}, got {s.users.backend!r}"
        )
    if s.users.backend == "file" and not s.users.file:
        raise SettingsError("users.file: must not be empty when users.backend is file")
    if s.users.backend == "redis" and s.store.backend != "redis":
        raise SettingsError("users.backend: redis needs store.backend = redis (its Redis is used)")
    if not 1 <= s.users.max_concurrent_hashes <= 64:
        raise SettingsError("users.max_concurrent_hashes: expected 1-64")
    r = s.ratelimit
    for name in ("login_user", "login_addr", "check_addr"):
        if getattr(r, f"{name}_limit") < 1:
            raise SettingsError(f"ratelimit.{name}_limit: must be at least 1")
        if getattr(r, f"{name}_window_seconds") < 1:
            raise SettingsError(f"ratelimit.{name}_window_seconds: must be at least 1")
