"""The sticky strategy as real processes: N nodes (extauthz with its own in-memory store, the echo
upstream, a sidecar Envoy running envoy/sidecar.yaml) behind a front Envoy running
envoy/sticky-front.yaml, both as ``extauthz envoy-config`` generates them on free ports.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from extauthz.cli import main as extauthz_main
from harness.envoy import EnvoyProcess
from harness.extauthz import ExtauthzProcess, ensure_signing_key
from harness.ports import LOOPBACK, free_port
from harness.stack import DEMO_SETTINGS, Stack, start_stack

NODES_CLUSTER = "nodes"


def generate_sticky_front(listener: int, admin: int, node_ports: list[int], out_dir: Path) -> Path:
    """``extauthz envoy-config sticky`` (as for envoy/sticky-front.yaml) with its listener,
    admin and node sidecars on the given loopback ports; the path written.

    :raises ValueError: the command refused its inputs.
    """
    out = Path(out_dir) / f"sticky-front-{listener}.yaml"
    argv = [
        "envoy-config", "sticky", "--config", str(DEMO_SETTINGS),
        "--listen", f"{LOOPBACK}:{listener}", "--admin", f"{LOOPBACK}:{admin}",
        "--nodes", ",".join(f"{LOOPBACK}:{port}" for port in node_ports), "--out", str(out),
    ]  # fmt: skip
    if extauthz_main(argv) != 0:
        raise ValueError(f"extauthz {' '.join(argv)} failed")
    return out


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
        envoy_binary, work_dir, env=env, keys_dir=keys_dir, envoy_kind="sidecar",
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
        config = generate_sticky_front(listener, admin, node_ports, work_dir)
        front = EnvoyProcess(envoy_binary, config, work_dir / "logs", name="sticky-front")
        front.start()
    except BaseException:
        for node in nodes:
            node.stop()
        raise
    return StickyCluster(nodes, front, listener)
