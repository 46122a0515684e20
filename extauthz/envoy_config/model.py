"""The inputs of the Envoy config generator: plain values, no settings types and no Envoy types.

:class:`ServiceInputs` describes a front proxy or a sidecar (an Envoy that authorises with
extauthz), :class:`StickyInputs` the front Envoy of the sticky strategy. The command line fills
them from the extauthz settings (ports, cookie and header names) and its own options (where
Envoy listens, where the upstream is); a route table comes from a small TOML file
(:func:`load_routes`).
"""

from __future__ import annotations

import ipaddress
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from extauthz.errors import SettingsError


@dataclass(frozen=True)
class Endpoint:
    """``HOST:PORT`` (an IPv6 address in brackets). A host name makes its cluster
    ``STRICT_DNS`` (``Cluster.type``); an IP address keeps it ``STATIC``."""

    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> Endpoint:
        """:raises SettingsError: not ``HOST:PORT`` with a port in 1-65535."""
        host, _, port = text.strip().rpartition(":")
        host = host.strip("[]")
        if not host or not (port.isascii() and port.isdigit()) or not 0 < int(port) < 65536:
            raise SettingsError(f"expected HOST:PORT, got {text!r}")
        return cls(host, int(port))

    @classmethod
    def parse_list(cls, text: str) -> tuple[Endpoint, ...]:
        """``HOST:PORT[,HOST:PORT...]``. :raises SettingsError: an element is not one."""
        return tuple(cls.parse(part) for part in text.split(",") if part.strip())

    @classmethod
    def reachable(cls, listen: str) -> Endpoint:
        """Where a peer on the same host reaches a ``listen`` address: a wildcard host
        (``0.0.0.0``, ``::``) becomes ``127.0.0.1``."""
        endpoint = cls.parse(listen)
        if endpoint.host in ("0.0.0.0", "::"):
            return cls("127.0.0.1", endpoint.port)
        return endpoint

    @property
    def is_ip(self) -> bool:
        try:
            ipaddress.ip_address(self.host)
        except ValueError:
            return False
        return True

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True)
class Route:
    """One route to the upstream, authorised by extauthz with these ``context_extensions``
    (``CheckSettings.context_extensions`` of ``ExtAuthzPerRoute``: the per-route policy,
    docs/architecture.md). Exactly one of ``prefix`` and ``path`` is set."""

    prefix: str | None = None
    path: str | None = None
    context_extensions: Mapping[str, str] = field(default_factory=dict)


# the catch-all route without a route table: every request needs a session; "auto" picks the
# browser (redirect) or API (401) denial, "same_site: required" refuses cross-site writes
DEFAULT_ROUTES = (
    Route(prefix="/", context_extensions={"client": "auto", "same_site": "required"}),
)


def load_routes(path: Path) -> tuple[Route, ...]:
    """The route table of a TOML file, in order (the first match wins, as in Envoy)::

        [[routes]]
        prefix = "/edit/"                   # or: path = "/exact"
        context_extensions = { client = "auto", required_scopes = "write" }

    :raises SettingsError: unreadable, not TOML, an entry without exactly one of prefix/path,
        a non-string context value, an unknown key, or no routes.
    """
    try:
        doc = tomllib.loads(Path(path).read_text())
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise SettingsError(f"{path}: cannot read the route table: {exc}") from None
    if set(doc) != {"routes"} or not isinstance(doc["routes"], list) or not doc["routes"]:
        raise SettingsError(f"{path}: expected one or more [[routes]] tables and nothing else")
    return tuple(_route(path, i, entry) for i, entry in enumerate(doc["routes"]))


def _route(path: Path, index: int, entry: object) -> Route:
    where = f"{path}: routes[{index}]"
    if not isinstance(entry, dict):
        raise SettingsError(f"{where}: expected a table")
    unknown = set(entry) - {"prefix", "path", "context_extensions"}
    if unknown:
        raise SettingsError(f"{where}: unknown keys {sorted(unknown)}")
    prefix, exact = entry.get("prefix"), entry.get("path")
    if (prefix is None) == (exact is None):
        raise SettingsError(f"{where}: set exactly one of prefix and path")
    for value in (prefix, exact):
        if value is not None and (not isinstance(value, str) or not value.startswith("/")):
            raise SettingsError(f"{where}: a prefix or path starts with '/'")
    context = entry.get("context_extensions", {})
    if not isinstance(context, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in context.items()
    ):
        raise SettingsError(f"{where}: context_extensions maps names to strings")
    return Route(prefix=prefix, path=exact, context_extensions=dict(context))


@dataclass(frozen=True)
class ServiceInputs:
    """A front proxy or sidecar Envoy in front of ``upstream``, authorising with extauthz.

    From the extauthz settings: ``cookie_name`` (``session.cookie_name``), ``jwt_header``
    (``jwt.header``), ``session_update_header`` (``session_updates.header``), ``check_headers``
    (the request headers the Check reads, ``api_keys.header`` among them; empty: Envoy sends
    every header) and, unless given,
    the extauthz endpoints (``server.grpc_listen``, ``server.http_listen``). The rest is
    Envoy's own: ``listen`` and ``admin`` addresses, the upstream, the route table.
    """

    listen: Endpoint
    admin: Endpoint
    extauthz_grpc: tuple[Endpoint, ...]
    extauthz_http: tuple[Endpoint, ...]
    upstream: tuple[Endpoint, ...]
    cookie_name: str = "extauthz_session"
    jwt_header: str = "authorization"
    session_update_header: str = "x-extauthz-session-update"
    routes: tuple[Route, ...] = DEFAULT_ROUTES
    check_headers: tuple[str, ...] = ()


@dataclass(frozen=True)
class StickyInputs:
    """The front Envoy of the sticky strategy: consistent hashing over ``nodes`` (each node's
    sidecar listener) on an affinity cookie Envoy issues itself; no ext_authz here."""

    listen: Endpoint
    admin: Endpoint
    nodes: tuple[Endpoint, ...]
    jwt_header: str = "authorization"
    affinity_cookie: str = "extauthz_affinity"
