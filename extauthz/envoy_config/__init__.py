"""``extauthz envoy-config front|sidecar|sticky``: a complete Envoy bootstrap for extauthz,
built from Envoy's typed API messages (xds-protos) and written as YAML.

The third adapter that speaks Envoy's protobuf, beside the ext_authz and ext_proc ones: those
translate requests at run time, this one writes Envoy's configuration. The settings-derived
values (ports, cookie and header names) come in as plain values from :mod:`extauthz.cli`
(:class:`SettingsValues`); Envoy's own (listen address, upstream, route table) are options.

This package's top holds the command line (:func:`add_parser`) and the plain values; the
generator proper (:mod:`.command`, :mod:`.bootstrap`, :mod:`.filters`, :mod:`.render`: Envoy's
config messages and YAML) loads when the command runs. ``extauthz serve`` builds the same
parser, and Envoy's config messages would cost each serving process about 3 MiB.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass

from extauthz.errors import SettingsError

from .model import DEFAULT_ROUTES, Endpoint, Route, ServiceInputs, StickyInputs, load_routes

KINDS = ("front", "sidecar", "sticky")
# Envoy's own addresses when not given: the ports of docs/architecture.md
DEFAULT_LISTEN = {
    "front": "127.0.0.1:8080", "sidecar": "127.0.0.1:10001", "sticky": "127.0.0.1:8080",
}  # fmt: skip
DEFAULT_ADMIN = {
    "front": "127.0.0.1:9901", "sidecar": "127.0.0.1:10901", "sticky": "127.0.0.1:9901",
}  # fmt: skip
DEFAULT_UPSTREAM = "127.0.0.1:9003"
DEFAULT_NODES = "127.0.0.1:10001,127.0.0.1:10002,127.0.0.1:10003"


@dataclass(frozen=True)
class SettingsValues:
    """What the generator takes from the extauthz settings: ``server.grpc_listen``,
    ``server.http_listen``, ``session.cookie_name``, ``jwt.header``, ``session_updates.header``,
    the count of ``server.workers`` (``Settings.worker_count``), and ``check_headers``, the
    request headers the Check reads (with ``api_keys.header``)."""

    grpc_listen: str = "127.0.0.1:9001"
    http_listen: str = "127.0.0.1:9002"
    cookie_name: str = "extauthz_session"
    jwt_header: str = "authorization"
    session_update_header: str = "x-extauthz-session-update"
    workers: int = 1
    check_headers: tuple[str, ...] = ()


def worker_endpoints(nodes: Sequence[Endpoint], workers: int) -> tuple[Endpoint, ...]:
    """Every worker's gRPC endpoint: worker ``i`` of a node listens on the node's port + ``i``
    (``server.workers``). Envoy keeps one HTTP/2 connection per Envoy worker thread per
    endpoint and spreads Checks over the endpoints (round robin), so one endpoint per extauthz
    process is what spreads them.

    :raises SettingsError: ``workers`` < 1, or a port past 65535.
    """
    if workers < 1:
        raise SettingsError(f"--workers: expected a count >= 1, got {workers}")
    out = tuple(Endpoint(n.host, n.port + i) for n in nodes for i in range(workers))
    if any(e.port > 65535 for e in out):
        raise SettingsError(f"--workers: {workers} workers from port {nodes[0].port} pass 65535")
    return out


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    """The ``envoy-config`` subcommand's parser (every option defaults to None: unset)."""
    p = sub.add_parser(
        "envoy-config", help="print an Envoy bootstrap (YAML) for these settings",
        description="Print a complete Envoy bootstrap for extauthz (docs/deploy.md, "
        "'Generating the Envoy config').",
    )  # fmt: skip
    p.add_argument("kind", choices=KINDS, help="front proxy, per-node sidecar, or sticky front")
    p.add_argument("--config", help="extauthz settings TOML (EXTAUTHZ_* variables override it)")
    p.add_argument("--listen", help="Envoy's listener HOST:PORT (front/sticky 127.0.0.1:8080, "
                   "sidecar 127.0.0.1:10001)")  # fmt: skip
    p.add_argument("--admin", help="Envoy's admin HOST:PORT (9901; sidecar 10901)")
    p.add_argument("--upstream", help="HOST:PORT[,...] of the upstream "
                   f"(default {DEFAULT_UPSTREAM})")  # fmt: skip
    p.add_argument("--extauthz-grpc", help="HOST:PORT[,...] of extauthz's gRPC port "
                   "(default: server.grpc_listen)")  # fmt: skip
    p.add_argument("--extauthz-http", help="HOST:PORT[,...] of extauthz's HTTP port "
                   "(default: server.http_listen)")  # fmt: skip
    p.add_argument("--workers", type=int, help="extauthz processes per node (default: "
                   "server.workers as this machine resolves it): each --extauthz-grpc "
                   "HOST:PORT becomes PORT, PORT+1, ... one endpoint per worker")  # fmt: skip
    p.add_argument("--routes", help="route table TOML ([[routes]] prefix|path, "
                   "context_extensions); default: one catch-all route, client=auto, "
                   "same_site=required")  # fmt: skip
    p.add_argument("--nodes", help="sticky: HOST:PORT,... of the node sidecars "
                   f"(default {DEFAULT_NODES})")  # fmt: skip
    p.add_argument("--out", help="write to this file instead of standard output")
    return p


__all__ = [
    "DEFAULT_ROUTES", "KINDS", "Endpoint", "Route", "ServiceInputs", "SettingsValues",
    "StickyInputs", "add_parser", "load_routes", "worker_endpoints",
]  # fmt: skip
