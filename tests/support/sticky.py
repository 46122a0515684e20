"""The sticky strategy as real processes: N nodes (extauthz with its own in-memory store, the echo
upstream, a sidecar Envoy running envoy/sidecar.yaml) behind a front Envoy running
envoy/sticky-front.yaml, every socket address moved to a free port.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .ports import LOOPBACK, free_port
from .processes import (
    REPO_ROOT,
    EchoUpstreamProcess,
    EnvoyProcess,
    ExtauthzProcess,
    ManagedProcess,
    extauthz_cli,
)
from .stack import DEMO_SETTINGS, StackPorts, render_front_proxy

SIDECAR = REPO_ROOT / "envoy" / "sidecar.yaml"
STICKY_FRONT = REPO_ROOT / "envoy" / "sticky-front.yaml"
NODES_CLUSTER = "nodes"


def render_sidecar(ports: StackPorts, out_dir: Path, name: str) -> Path:
    """envoy/sidecar.yaml on ``ports`` (it has the front proxy's listener/cluster shape, so the
    same rewrite applies: listener, admin, extauthz_grpc, extauthz_http, upstream)."""
    return render_front_proxy(ports, out_dir, source=SIDECAR, name=name)


def render_sticky_front(
    listener: int, admin: int, node_ports: list[int], out_dir: Path, source: Path = STICKY_FRONT
) -> Path:
    """envoy/sticky-front.yaml with its listener, admin and node endpoints on the given ports.

    :raises ValueError: the file does not have one listener and one ``nodes`` cluster, or it
        lists a different number of nodes than ``node_ports``.
    """
    doc: dict[str, Any] = yaml.safe_load(Path(source).read_text())
    doc["admin"]["address"]["socket_address"]["port_value"] = admin
    listeners = doc["static_resources"]["listeners"]
    if len(listeners) != 1:
        raise ValueError(f"{source}: expected one listener, found {len(listeners)}")
    listeners[0]["address"]["socket_address"]["port_value"] = listener
    clusters = doc["static_resources"]["clusters"]
    if [c["name"] for c in clusters] != [NODES_CLUSTER]:
        raise ValueError(f"{source}: expected exactly the cluster {NODES_CLUSTER!r}")
    endpoints = [
        lb["endpoint"]["address"]["socket_address"]
        for locality in clusters[0]["load_assignment"]["endpoints"]
        for lb in locality["lb_endpoints"]
    ]
    if len(endpoints) != len(node_ports):
        raise ValueError(f"{source}: lists {len(endpoints)} nodes, the test runs {len(node_ports)}")
    for address, port in zip(endpoints, node_ports, strict=True):
        address["port_value"] = port
    out = Path(out_dir) / f"sticky-front-{listener}.yaml"
    out.write_text(yaml.safe_dump(doc, sort_keys=False))
    return out


@dataclass
class StickyNode:
    """One node: its own extauthz (in-memory store), echo upstream and sidecar Envoy."""

    node_id: str
    ports: StackPorts
    extauthz: ExtauthzProcess
    echo: EchoUpstreamProcess
    sidecar: EnvoyProcess

    @property
    def address(self) -> str:
        """The sidecar's address as the front Envoy names it (``%UPSTREAM_HOST%``)."""
        return f"{LOOPBACK}:{self.ports.listener}"

    def processes(self) -> list[ManagedProcess]:
        return [self.extauthz, self.echo, self.sidecar]

    def kill9(self) -> None:
        """The node is lost: every one of its processes gets SIGKILL."""
        for proc in self.processes():
            proc.kill9()

    def stop(self) -> None:
        for proc in reversed(self.processes()):
            proc.stop()


def start_sticky_node(
    envoy_binary: str, work_dir: Path, node_id: str, keys_dir: Path
) -> StickyNode:
    """Start one node; the processes already started are stopped if a later one fails."""
    log_dir = Path(work_dir) / "logs"
    ports = StackPorts.allocate()
    env = {
        "EXTAUTHZ_SERVER_NODE_ID": node_id,
        "EXTAUTHZ_STORE_STRATEGY": "sticky",
        "EXTAUTHZ_STORE_BACKEND": "memory",
        "EXTAUTHZ_JWT_KEYS_DIR": str(keys_dir),
        # the node-loss test deliberately sends many lookups of unknown sessions
        "EXTAUTHZ_RATELIMIT_ENABLED": "false",
    }
    with open(DEMO_SETTINGS, "rb") as fh:
        jwt_table = tomllib.load(fh)["jwt"]
    started: list[ManagedProcess] = []
    try:
        extauthz = ExtauthzProcess(
            DEMO_SETTINGS, log_dir, grpc_port=ports.grpc, http_port=ports.http, env=env,
            name=f"{node_id}-extauthz",
        )  # fmt: skip
        started.append(extauthz.start())
        echo = EchoUpstreamProcess(
            log_dir,
            port=ports.upstream,
            jwks_url=f"http://{LOOPBACK}:{ports.http}/.well-known/jwks.json",
            issuer=jwt_table["issuer"],
            audience=jwt_table["audience"],
            name=f"{node_id}-echo",
        )
        started.append(echo.start())
        config = render_sidecar(ports, work_dir, name=f"sidecar-{node_id}.yaml")
        sidecar = EnvoyProcess(envoy_binary, config, log_dir, name=f"{node_id}-sidecar")
        started.append(sidecar.start())
    except BaseException:
        for proc in reversed(started):
            proc.stop()
        raise
    return StickyNode(node_id, ports, extauthz, echo, sidecar)


@dataclass
class StickyCluster:
    nodes: list[StickyNode]
    front: EnvoyProcess
    listener: int

    def node_at(self, address: str) -> StickyNode:
        for node in self.nodes:
            if node.address == address:
                return node
        raise KeyError(address)

    def stop(self) -> None:
        self.front.stop()
        for node in self.nodes:
            node.stop()


def start_sticky_cluster(envoy_binary: str, work_dir: Path, count: int = 3) -> StickyCluster:
    """``count`` nodes (sharing one signing key, as a mounted secret would) and the front."""
    work_dir = Path(work_dir)
    keys_dir = work_dir / "keys"
    keys_dir.mkdir(parents=True, exist_ok=True)
    if not any(keys_dir.iterdir()):
        extauthz_cli("keys", "generate", "--dir", str(keys_dir), env=dict(os.environ))
    nodes: list[StickyNode] = []
    try:
        for i in range(1, count + 1):
            nodes.append(start_sticky_node(envoy_binary, work_dir, f"node-{i}", keys_dir))
        listener, admin = free_port(), free_port()
        config = render_sticky_front(listener, admin, [n.ports.listener for n in nodes], work_dir)
        front = EnvoyProcess(envoy_binary, config, work_dir / "logs", name="sticky-front")
        front.start()
    except BaseException:
        for node in nodes:
            node.stop()
        raise
    return StickyCluster(nodes, front, listener)
