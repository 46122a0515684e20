"""The repository's front proxy on chosen ports, with extauthz and the echo upstream behind it.

One stack is what ``make demo`` runs and what the end-to-end tests run on free ports: extauthz
(``demo/extauthz.toml`` plus ``EXTAUTHZ_*`` overrides), the echo upstream verifying the JWT
against extauthz's JWKS, and Envoy running ``envoy/front-proxy.yaml`` (or the sidecar) as
``extauthz envoy-config`` generates it for the stack's ports. Redis, when used, is the caller's.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from . import REPO_ROOT
from .envoy import EnvoyProcess, envoy_version
from .extauthz import EchoUpstreamProcess, ExtauthzProcess, ensure_signing_key
from .ports import LOOPBACK, free_port, free_ports
from .process import ManagedProcess

FRONT_PROXY = REPO_ROOT / "envoy" / "front-proxy.yaml"
SIDECAR = REPO_ROOT / "envoy" / "sidecar.yaml"
DEMO_SETTINGS = REPO_ROOT / "demo" / "extauthz.toml"
# the route tables of envoy/front-proxy.yaml and envoy/sidecar.yaml (see the Makefile)
ROUTES = {
    "front": REPO_ROOT / "envoy" / "front-proxy-routes.toml",
    "sidecar": REPO_ROOT / "envoy" / "sidecar-routes.toml",
}


@dataclass(frozen=True)
class StackPorts:
    """Where each part of one stack listens (all on 127.0.0.1)."""

    listener: int
    admin: int
    grpc: int
    http: int
    upstream: int

    @classmethod
    def allocate(cls, workers: int = 1) -> StackPorts:
        """Fresh free ports for every part (``workers`` consecutive ones from ``grpc``)."""
        grpc = free_ports(workers) if workers > 1 else free_port()
        return cls(free_port(), free_port(), grpc, free_port(), free_port())

    @classmethod
    def defaults(cls) -> StackPorts:
        """The ports written in envoy/front-proxy.yaml and docs/architecture.md."""
        return cls(listener=8080, admin=9901, grpc=9001, http=9002, upstream=9003)


def set_port(socket_address: dict[str, Any], port: int) -> None:
    """Set ``port_value`` of an Envoy ``SocketAddress`` mapping (the benchmark's own config,
    benchmarks/envoy-bench.yaml, is rewritten this way).

    :raises ValueError: it has no ``port_value`` (a named port or a pipe would be missed).
    """
    if "port_value" not in socket_address:
        raise ValueError(f"socket address without port_value: {socket_address!r}")
    socket_address["port_value"] = port


def write_config(doc: Mapping[str, Any], out: Path) -> Path:
    """Write an Envoy config document as YAML (the directory is created); return ``out``."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(yaml.safe_dump(dict(doc), sort_keys=False))
    return out


def generate_envoy_config(
    ports: StackPorts,
    out_dir: Path,
    kind: str = "front",
    *,
    routes: Path | None = None,
    settings_path: Path = DEMO_SETTINGS,
    name: str | None = None,
    workers: int = 1,
) -> Path:
    """``extauthz envoy-config KIND`` for this stack's ports; the path of the file written.

    The same command and inputs that made envoy/front-proxy.yaml or envoy/sidecar.yaml (the
    settings, the route table of ``ROUTES[kind]`` unless ``routes`` is given), only with the
    stack's ports: what the tests run is what ships. ``workers``: extauthz processes behind
    ``ports.grpc`` (one endpoint each, ``--workers``).

    :raises ValueError: the command refused its inputs (its message is on stderr).
    """
    from extauthz.cli import main

    out = Path(out_dir) / (name or f"{kind}-{ports.listener}.yaml")
    at = f"{LOOPBACK}:"
    argv = [
        "envoy-config", kind, "--config", str(settings_path),
        "--listen", f"{at}{ports.listener}", "--admin", f"{at}{ports.admin}",
        "--upstream", f"{at}{ports.upstream}", "--extauthz-grpc", f"{at}{ports.grpc}",
        "--extauthz-http", f"{at}{ports.http}", "--workers", str(workers),
        "--routes", str(routes or ROUTES[kind]), "--out", str(out),
    ]  # fmt: skip
    if main(argv) != 0:
        raise ValueError(f"extauthz {' '.join(argv)} failed")
    return out


@dataclass
class Stack:
    """One running stack on its own ports. Stop it with :meth:`stop`."""

    ports: StackPorts
    work_dir: Path
    extauthz: ExtauthzProcess
    echo: EchoUpstreamProcess
    envoy: EnvoyProcess

    @property
    def base_url(self) -> str:
        return f"http://{LOOPBACK}:{self.ports.listener}"

    def create_session(self, sub: str, *args: str) -> str:
        """``extauthz sessions create --sub SUB ARGS`` against this stack; the opaque token."""
        return self.extauthz.create_session(sub, *args)

    def processes(self) -> list[ManagedProcess]:
        return [self.extauthz, self.echo, self.envoy]

    def kill9(self) -> None:
        """Every process of the stack gets SIGKILL (a lost node)."""
        for proc in self.processes():
            proc.kill9()

    def stop(self) -> None:
        for proc in reversed(self.processes()):
            proc.stop()


def start_stack(
    envoy_binary: str,
    work_dir: Path,
    *,
    redis_url: str | None = None,
    settings_path: Path = DEMO_SETTINGS,
    env: Mapping[str, str] | None = None,
    ports: StackPorts | None = None,
    keys_dir: Path | None = None,
    log_dir: Path | None = None,
    envoy_kind: str = "front",
    envoy_routes: Path | None = None,
    name_prefix: str = "",
    envoy_name: str | None = None,
    workers: int = 1,
) -> Stack:
    """Start extauthz (``settings_path`` plus overrides), the echo upstream and Envoy running
    the ``envoy_kind`` config (front or sidecar; ``envoy_routes``: another route table)
    generated for ``ports`` (default: free ones).

    ``redis_url`` selects the Redis store at that URL; without it the in-memory store (sticky)
    is used. A signing key is generated into ``keys_dir`` (default ``work_dir/keys``) when none
    is there. Logs go to ``log_dir`` (default ``work_dir/logs``), each process named
    ``<name_prefix>extauthz``, ``<name_prefix>echo`` and ``envoy_name`` (default
    ``envoy-<version>``). ``workers``: extauthz processes (``server.workers``; more than one
    needs ``redis_url``), each an endpoint of Envoy's ``extauthz_grpc`` cluster.

    :raises ProcessError: a part did not start; the parts already started are stopped.
    """
    work_dir = Path(work_dir)
    log_dir = log_dir or work_dir / "logs"
    keys_dir = keys_dir or work_dir / "keys"
    ports = ports or StackPorts.allocate(workers)
    overrides = {"EXTAUTHZ_JWT_KEYS_DIR": str(keys_dir)}
    if redis_url:
        overrides |= {"EXTAUTHZ_STORE_BACKEND": "redis", "EXTAUTHZ_STORE_REDIS_URL": redis_url}
    else:
        overrides |= {"EXTAUTHZ_STORE_BACKEND": "memory", "EXTAUTHZ_STORE_STRATEGY": "sticky"}
    overrides |= env or {}
    full_env = dict(os.environ) | overrides
    ensure_signing_key(keys_dir, env=full_env)

    with open(settings_path, "rb") as fh:
        jwt_table = tomllib.load(fh).get("jwt", {})
    issuer = full_env.get("EXTAUTHZ_JWT_ISSUER", jwt_table.get("issuer", ""))
    audience = full_env.get("EXTAUTHZ_JWT_AUDIENCE", jwt_table.get("audience", ""))

    started: list[ManagedProcess] = []
    try:
        extauthz = ExtauthzProcess(
            settings_path, log_dir, grpc_port=ports.grpc, http_port=ports.http, env=overrides,
            name=f"{name_prefix}extauthz", workers=workers,
        )  # fmt: skip
        started.append(extauthz.start())
        echo = EchoUpstreamProcess(
            log_dir, port=ports.upstream, jwks_url=extauthz.jwks_url, issuer=issuer,
            audience=audience, name=f"{name_prefix}echo",
        )  # fmt: skip
        started.append(echo.start())
        config = generate_envoy_config(
            ports, work_dir, envoy_kind, routes=envoy_routes, settings_path=settings_path,
            workers=workers,
        )
        name = envoy_name or f"envoy-{envoy_version(envoy_binary)}"
        envoy = EnvoyProcess(envoy_binary, config, log_dir, name=name)
        started.append(envoy.start())
    except BaseException:
        for proc in reversed(started):
            proc.stop()
        raise
    return Stack(ports, work_dir, extauthz, echo, envoy)
