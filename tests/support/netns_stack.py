"""The docker-compose topology's parts, each started in a host of a
:class:`~tests.support.netns.VirtualNetwork`.

Every process is the harness's own launcher (:class:`~tests.support.redis_nodes.RedisNode`,
:class:`~tests.support.redis_nodes.SentinelNode`, :class:`harness.extauthz.ExtauthzProcess`,
:class:`harness.envoy.EnvoyProcess`, the echo upstream) started with ``ip netns exec``. Servers
listen on their host's address, for the other hosts, and on the host's loopback, which the
test reaches through a :class:`~tests.support.netns.Portal` on the same port: so
``node.grpc_target``, ``redis_node.command(...)`` and the harness's readiness probes work as on
one machine, and see each host from inside. Ports are free ports of the test's own namespace
(what a portal needs).
"""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from extauthz._proto.extauthz.v1 import admin_pb2, admin_pb2_grpc
from harness import REPO_ROOT
from harness.envoy import EnvoyProcess
from harness.extauthz import EchoUpstreamProcess, ExtauthzProcess
from harness.ports import LOOPBACK, free_port
from harness.process import wait_until
from harness.stack import FRONT_PROXY
from tests.support.extauthz_nodes import CheckClient, keys_dir, write_settings
from tests.support.netns import Host, VirtualNetwork
from tests.support.redis_nodes import RedisNode, SentinelNode

JWT = {"issuer": "http://front.test", "audience": "netns-tests"}
SENTINEL_SERVICE = "extauthz"


def _reachable(host: Host) -> list[str]:
    return ["--bind", host.address, LOOPBACK, "--protected-mode", "no"]


def start_redis(host: Host, directory: Path, replicaof: tuple[str, int] | None = None) -> RedisNode:
    """A Redis data node on ``host`` (a replica of ``replicaof``, an address on the network)."""
    port = free_port()
    node = RedisNode(directory, port=port, replicaof=replicaof, extra_args=_reachable(host))
    host.launch(node, [port])
    return node


def start_sentinel(
    host: Host,
    directory: Path,
    primary: tuple[str, int],
    *,
    quorum: int = 2,
    down_after_ms: int = 1000,
    failover_timeout_ms: int = 3000,
) -> SentinelNode:
    """A Sentinel on ``host`` monitoring ``primary`` (an address on the network) as
    :data:`SENTINEL_SERVICE`."""
    port = free_port()
    sentinel = SentinelNode(
        directory, service_name=SENTINEL_SERVICE, primary=primary, quorum=quorum, port=port,
        down_after_ms=down_after_ms, failover_timeout_ms=failover_timeout_ms,
        extra_config=[f"bind {host.address} {LOOPBACK}", "protected-mode no"],
    )  # fmt: skip
    host.launch(sentinel, [port])
    return sentinel


def start_extauthz(
    host: Host, base: Path, name: str, store: Mapping[str, Any], **tables: Mapping[str, Any]
) -> ExtauthzProcess:
    """``extauthz serve`` on ``host`` (all addresses), node id ``name``, with ``store`` as its
    ``[store]`` table, the session cache on (as in docker-compose.yml) and ``Secure`` cookies
    (it listens beyond loopback)."""
    config = write_settings(
        base / f"{name}.toml",
        {
            "server": {"node_id": name, "health_check_interval_seconds": 0.2},
            "store": store,
            "session": {"cookie_secure": True},
            "cache": {"enabled": True},
            "jwt": {"keys_dir": str(keys_dir(base)), **JWT},
            **tables,
        },
    )
    node = ExtauthzProcess(config, base / "logs", name=name, listen_host="0.0.0.0")
    host.launch(node, [node.grpc_port, node.http_port])
    return node


@dataclass(frozen=True)
class FrontProxy:
    """The front Envoy and the port of its listener."""

    envoy: EnvoyProcess
    listen_port: int

    def get(self, token: str, path: str = "/hello", timeout: float = 3.0) -> int:
        """The HTTP status of ``GET path`` with ``Authorization: Bearer token`` (through the
        listener's portal)."""
        request = urllib.request.Request(
            f"http://{LOOPBACK}:{self.listen_port}{path}",
            headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as resp:
                return int(resp.status)
        except urllib.error.HTTPError as exc:
            exc.close()
            return int(exc.code)


def start_front_proxy(
    host: Host, envoy_binary: str, base: Path, nodes: Sequence[tuple[Host, ExtauthzProcess]]
) -> FrontProxy:
    """envoy/front-proxy.yaml on ``host``, rendered by deploy/render_front_proxy.py (as
    docker-compose.yml does) onto the nodes' addresses, with the echo upstream beside it."""
    echo_port, listen_port, admin_port = free_port(), free_port(), free_port()
    first_host, first = nodes[0]
    echo = EchoUpstreamProcess(
        base / "logs", port=echo_port, name="echo",
        jwks_url=f"http://{first_host.address}:{first.http_port}/.well-known/jwks.json",
        issuer=JWT["issuer"], audience=JWT["audience"],
    )  # fmt: skip
    host.launch(echo, [echo_port])
    out = base / "front-proxy.yaml"
    subprocess.run(
        [
            sys.executable, str(REPO_ROOT / "deploy" / "render_front_proxy.py"),
            "--source", str(FRONT_PROXY), "--out", str(out),
            "--listen", f"0.0.0.0:{listen_port}", "--admin", f"{LOOPBACK}:{admin_port}",
            "--grpc", ",".join(f"{h.address}:{n.grpc_port}" for h, n in nodes),
            "--http", ",".join(f"{h.address}:{n.http_port}" for h, n in nodes),
            "--upstream", f"{LOOPBACK}:{echo_port}",
        ],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    envoy = EnvoyProcess(envoy_binary, out, base / "logs", name="front-envoy")
    host.launch(envoy, [listen_port, admin_port])
    return FrontProxy(envoy, listen_port)


class Admin:
    """``SessionAdmin`` of one node (sync gRPC, the node's admin token)."""

    def __init__(self, node: ExtauthzProcess, timeout: float = 3.0) -> None:
        self.node = node
        self.timeout = timeout
        self._channel = grpc.insecure_channel(node.grpc_target)
        self._stub = admin_pb2_grpc.SessionAdminStub(self._channel)

    def create(self, sub: str) -> tuple[str, str]:
        """``(opaque token, sid)``. :raises grpc.RpcError: not acknowledged."""
        reply = self._stub.CreateSession(
            admin_pb2.CreateSessionRequest(sub=sub), metadata=self.node.admin_metadata,
            timeout=self.timeout,
        )  # fmt: skip
        return reply.access_token, reply.session.sid

    def revoke(self, sid: str) -> bool:
        """Whether the session was revoked (acknowledged). :raises grpc.RpcError: the
        revocation was not acknowledged (e.g. ``UNAVAILABLE``: not durable)."""
        reply = self._stub.RevokeSession(
            admin_pb2.RevokeSessionRequest(sid=sid), metadata=self.node.admin_metadata,
            timeout=self.timeout,
        )  # fmt: skip
        return bool(reply.revoked)

    def close(self) -> None:
        self._channel.close()


def live_read_leases(primary: RedisNode, prefix: str = "extauthz:") -> int:
    """How many nodes hold an unexpired read lease on ``primary`` (replicated strategy;
    expiries are Redis-clock milliseconds, :mod:`extauthz.store.redis.lease`)."""
    seconds, micros = primary.command("TIME")
    now_ms = int(seconds) * 1000 + int(micros) // 1000
    return int(primary.command("ZCOUNT", f"{prefix}replica-readers", now_ms, "+inf"))


def _down(entry: Mapping[str, Any]) -> bool:
    """Whether a Sentinel's entry for an instance flags it down or disconnected."""
    return bool(set(str(entry.get("flags", "")).split(",")) & {"s_down", "o_down", "disconnected"})


def wait_sentinels_agree(
    sentinels: Sequence[SentinelNode], primary: RedisNode, replicas: int, timeout: float = 20.0
) -> None:
    """Until every Sentinel names ``primary`` with plain ``master`` flags and knows
    ``replicas`` healthy replicas and every other Sentinel (a failover could happen)."""

    def agreed() -> bool:
        for sentinel in sentinels:
            master = sentinel.settled_master()
            if master is None or master[1] != primary.port:
                return False
            healthy = [r for r in sentinel.replicas() if not _down(r)]
            if len(healthy) < replicas or len(sentinel.other_sentinels()) < len(sentinels) - 1:
                return False
        return True

    wait_until(
        agreed, timeout=timeout, interval=0.1,
        description=f"Sentinels to agree on the primary :{primary.port}",
        diagnostics=lambda: "\n".join(s.tail(10) for s in sentinels),
    )  # fmt: skip


def settle(primary: RedisNode, replicas: int, timeout_ms: int = 5000) -> None:
    """A write ``replicas`` replicas acknowledge (``WAIT``): a replica acknowledges its first
    ``WAIT`` only at its next replication cron (see ``tests.support.extauthz_nodes.settle``)."""
    deadline = time.monotonic() + timeout_ms / 1000 + 5
    with primary.client(socket_timeout=timeout_ms / 1000 + 1) as client:
        while True:
            client.set("settle", "1")
            if int(client.execute_command("WAIT", replicas, timeout_ms)) >= replicas:
                break
            assert time.monotonic() < deadline, f"{replicas} replicas never acknowledged"
        client.delete("settle")


@dataclass
class Central:
    """docker-compose.yml's topology with the ``central`` strategy, every process on a host of
    its own (:func:`start_central`), with a :class:`Admin` and a ``Check`` client per node."""

    network: VirtualNetwork
    redis_hosts: list[Host]  # the original primary's first
    data_nodes: list[RedisNode]  # the original primary first, then the replicas
    sentinel_hosts: list[Host]
    sentinels: list[SentinelNode]
    node_hosts: list[Host]
    nodes: list[ExtauthzProcess]
    front: FrontProxy
    admins: list[Admin]
    checks: list[CheckClient]

    def primary_named(self, sentinels: Sequence[SentinelNode]) -> RedisNode | None:
        """The data node that all of ``sentinels`` name as the settled primary, or None."""
        named = {s.settled_master() for s in sentinels}
        if len(named) != 1:
            return None
        (address,) = named
        if address is None:
            return None
        return next(n for n in self.data_nodes if n.port == address[1])

    def close_clients(self) -> None:
        for admin in self.admins:
            admin.close()
        for client in self.checks:
            client.close()


def start_central(
    net: VirtualNetwork, base: Path, envoy_binary: str, *, down_after_ms: int
) -> Central:
    """Hosts ``redis-primary``, ``redis-replica-1/2``, ``sentinel-1/2/3`` (quorum 2,
    ``down_after_ms``), ``extauthz-1/2`` (Sentinel discovery, ``WAIT`` for one replica) and
    ``envoy``, with their processes; returns when the Sentinels agree and everything serves."""
    redis_hosts = [net.add_host(n) for n in ("redis-primary", "redis-replica-1", "redis-replica-2")]
    sentinel_hosts = [net.add_host(f"sentinel-{i}") for i in (1, 2, 3)]
    node_hosts = [net.add_host(f"extauthz-{i}") for i in (1, 2)]
    front_host = net.add_host("envoy")
    primary = start_redis(redis_hosts[0], base / "redis-primary")
    at = (redis_hosts[0].address, primary.port)
    replicas = [start_redis(h, base / h.name, replicaof=at) for h in redis_hosts[1:]]
    for replica in replicas:
        wait_until(replica.link_up, timeout=10, description=f"{replica!r} linked")
    settle(primary, 2)
    sentinels = [
        start_sentinel(h, base / h.name, at, down_after_ms=down_after_ms) for h in sentinel_hosts
    ]
    wait_sentinels_agree(sentinels, primary, replicas=2)
    addresses = zip(sentinel_hosts, sentinels, strict=True)
    store = {
        "strategy": "central",
        "backend": "redis",
        "sentinels": [f"{h.address}:{s.port}" for h, s in addresses],
        "sentinel_service": SENTINEL_SERVICE,
    }
    nodes = [start_extauthz(h, base, h.name, store) for h in node_hosts]
    front = start_front_proxy(
        front_host, envoy_binary, base, list(zip(node_hosts, nodes, strict=True))
    )
    return Central(
        net, redis_hosts, [primary, *replicas], sentinel_hosts, sentinels, node_hosts, nodes,
        front, [Admin(n) for n in nodes], [CheckClient(n.grpc_target) for n in nodes],
    )  # fmt: skip
