"""The sticky strategy as real processes: N nodes (extauthz with its own in-memory store, the echo
upstream, a sidecar Envoy running envoy/sidecar.yaml) behind a front Envoy running
envoy/sticky-front.yaml, every socket address moved to a free port.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from harness import REPO_ROOT
from harness.envoy import EnvoyProcess
from harness.extauthz import ExtauthzProcess, ensure_signing_key
from harness.ports import LOOPBACK, free_port
from harness.stack import Stack, set_port, start_stack, write_config

SIDECAR = REPO_ROOT / "envoy" / "sidecar.yaml"
STICKY_FRONT = REPO_ROOT / "envoy" / "sticky-front.yaml"
NODES_CLUSTER = "nodes"


def render_sticky_front(
    listener: int, admin: int, node_ports: list[int], out_dir: Path, source: Path = STICKY_FRONT
) -> Path:
    """envoy/sticky-front.yaml with its listener, admin and node endpoints on the given ports.

    :raises ValueError: the file does not have one listener and one ``nodes`` cluster, or it
        lists a different number of nodes than ``node_ports``.
    """
    doc: dict[str, Any] = yaml.safe_load(Path(source).read_text())
    set_port(doc["admin"]["address"]["socket_address"], admin)
    listeners = doc["static_resources"]["listeners"]
    if len(listeners) != 1:
        raise ValueError(f"{source}: expected one listener, found {len(listeners)}")
    set_port(listeners[0]["address"]["socket_address"], listener)
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
        set_port(address, port)
    return write_config(doc, Path(out_dir) / f"sticky-front-{listener}.yaml")


@dataclass
class StickyNode:
    """One node: its own extauthz (in-memory store), echo upstream and sidecar Envoy."""

    node_id: str
    stack: Stack

    @property
    def address(self) -> str:
        """The sidecar's address as the front Envoy names it (``%UPSTREAM_HOST%``)."""
        return f"{LOOPBACK}:{self.stack.ports.listener}"

    @property
    def extauthz(self) -> ExtauthzProcess:
        return self.stack.extauthz

    def kill9(self) -> None:
        """The node is lost: every one of its processes gets SIGKILL."""
        self.stack.kill9()

    def stop(self) -> None:
        self.stack.stop()


def start_sticky_node(
    envoy_binary: str, work_dir: Path, node_id: str, keys_dir: Path
) -> StickyNode:
    """Start one node; the processes already started are stopped if a later one fails."""
    env = {
        "EXTAUTHZ_SERVER_NODE_ID": node_id,
        # the node-loss test deliberately sends many lookups of unknown sessions
        "EXTAUTHZ_RATELIMIT_ENABLED": "false",
    }
    stack = start_stack(
        envoy_binary, work_dir, env=env, keys_dir=keys_dir, envoy_source=SIDECAR,
        name_prefix=f"{node_id}-", envoy_name=f"{node_id}-sidecar",
    )  # fmt: skip
    return StickyNode(node_id, stack)


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
    ensure_signing_key(keys_dir)
    nodes: list[StickyNode] = []
    try:
        for i in range(1, count + 1):
            nodes.append(start_sticky_node(envoy_binary, work_dir, f"node-{i}", keys_dir))
        listener, admin = free_port(), free_port()
        node_ports = [n.stack.ports.listener for n in nodes]
        config = render_sticky_front(listener, admin, node_ports, work_dir)
        front = EnvoyProcess(envoy_binary, config, work_dir / "logs", name="sticky-front")
        front.start()
    except BaseException:
        for node in nodes:
            node.stop()
        raise
    return StickyCluster(nodes, front, listener)
