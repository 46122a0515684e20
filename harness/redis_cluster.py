"""A throw-away Redis Cluster on loopback: N primaries with one replica each.

Every node is the harness's one ``redis-server`` launcher (:class:`harness.redis.RedisServer`)
with ``--cluster-enabled yes`` and its own ``nodes.conf`` in its own directory, no persistence.
A cluster node also listens on its bus port, ``port + 10000`` (https://redis.io/docs/latest/
operate/oss_and_stack/management/scaling/), so both ports are reserved before a start. The slots
are assigned by ``redis-cli --cluster create ... --cluster-replicas 1 --cluster-yes``; the cluster
is ready when every node reports ``cluster_state:ok``.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Self

import redis

from .ports import LOOPBACK, free_port_pair
from .process import ProcessError, wait_until
from .redis import RedisServer

BUS_PORT_OFFSET = 10000
"""A cluster node's bus port is its port plus this (Redis's fixed rule)."""

def free_cluster_port() -> int:
    """A loopback port that is free together with its bus port (``port + 10000``)
    (:func:`harness.ports.free_port_pair`).

    :raises OSError: none found.
    """
    return free_port_pair(BUS_PORT_OFFSET)


def cli_binary() -> str | None:
    """``redis-cli`` on PATH, or None."""
    return shutil.which("redis-cli")


class RedisCluster:
    """``primaries`` primaries with ``replicas`` replicas each, on loopback.

    :param log_dir: each node logs to ``<log_dir>/cluster-<port>.log`` and keeps its
        ``nodes.conf`` in ``<log_dir>/cluster-<port>-data``.
    :param node_timeout_ms: ``cluster-node-timeout``: how long a primary may be unreachable
        before its replica is promoted (Redis's default, 15000 ms, is far too slow for tests).
    """

    def __init__(
        self,
        log_dir: Path,
        *,
        primaries: int = 3,
        replicas: int = 1,
        node_timeout_ms: int = 1000,
    ) -> None:
        self.log_dir = Path(log_dir)
        self.replicas = replicas
        self.node_timeout_ms = node_timeout_ms
        self.nodes: list[RedisServer] = []
        for _ in range(primaries * (1 + replicas)):
            port = free_cluster_port()
            self.nodes.append(
                RedisServer(
                    self.log_dir,
                    port,
                    name=f"cluster-{port}",
                    extra_args=[
                        "--cluster-enabled", "yes",
                        "--cluster-config-file", "nodes.conf",
                        "--cluster-node-timeout", str(node_timeout_ms),
                    ],
                )
            )  # fmt: skip

    @property
    def startup_nodes(self) -> list[tuple[str, int]]:
        """Every node's ``(host, port)``."""
        return [node.address for node in self.nodes]

    @property
    def startup_setting(self) -> str:
        """``store.cluster_nodes`` as an environment value: ``"127.0.0.1:p1,127.0.0.1:p2,..."``."""
        return ",".join(f"{host}:{port}" for host, port in self.startup_nodes)

    def start(self, timeout: float = 30.0) -> Self:
        """Start every node, assign the slots, wait for ``cluster_state:ok`` everywhere.

        :raises ProcessError: a node did not start, or ``redis-cli --cluster create`` failed.
        :raises harness.process.WaitTimeout: the cluster was not ``ok`` within ``timeout``.
        """
        for node in self.nodes:
            node.start()
        cli = cli_binary() or "redis-cli"
        create = subprocess.run(
            [cli, "--cluster", "create",
             *(f"{host}:{port}" for host, port in self.startup_nodes),
             "--cluster-replicas", str(self.replicas), "--cluster-yes"],
            capture_output=True, text=True, timeout=timeout, check=False,
        )  # fmt: skip
        if create.returncode != 0:
            raise ProcessError(f"redis-cli --cluster create failed: {create.stdout[-2000:]}")
        self.wait_ok(timeout)
        self.settle()
        return self

    def settle(self, timeout_ms: int = 5000) -> None:
        """Wait until each primary's replicas acknowledge a write (``WAIT``): a replica that
        has just synced acknowledges its first ``WAIT`` only at its next replication cron,
        up to a second later, longer than a login waits.

        :raises ProcessError: a primary's replicas did not acknowledge within ``timeout_ms``.
        """
        roles = self.roles()
        for port, role in roles.items():
            if role != "primary":
                continue
            with redis.Redis(host=LOOPBACK, port=port, socket_timeout=timeout_ms / 1000 + 1) as r:
                for n in range(1000):  # a key of this primary's slots: the others say MOVED
                    try:
                        r.set(f"settle:{n}", "1")
                    except redis.ResponseError:
                        continue
                    acked = int(r.execute_command("WAIT", self.replicas, timeout_ms))
                    r.delete(f"settle:{n}")
                    break
                else:
                    raise ProcessError(f"no key of primary {port} found")
            if acked < self.replicas:
                raise ProcessError(f"primary {port}: {acked} of {self.replicas} replicas acked")

    def wait_ok(self, timeout: float = 30.0) -> None:
        """Until :meth:`ok`."""
        wait_until(
            self.ok, timeout=timeout, description="cluster_state:ok on every node", interval=0.1
        )

    def ok(self) -> bool:
        """Every running node reports ``cluster_state:ok``, and every running replica's link
        to its primary is up (``master_link_status:up``: it has the primary's data)."""
        running = [n for n in self.nodes if n.running]
        if not running:
            return False
        for node in running:
            if "cluster_state:ok" not in self.command(node.port, "CLUSTER", "INFO"):
                return False
            replication = self.command(node.port, "INFO", "replication")
            if "role:slave" in replication and "master_link_status:up" not in replication:
                return False
        return True

    def command(self, port: int, *args: str) -> str:
        """One command through ``redis-cli`` against ``127.0.0.1:port``: its text output
        (empty when the node does not answer within a second)."""
        try:
            done = subprocess.run(
                [cli_binary() or "redis-cli", "-h", LOOPBACK, "-p", str(port), *args],
                capture_output=True, text=True, timeout=1.0, check=False,
            )  # fmt: skip
        except subprocess.TimeoutExpired:
            return ""
        return done.stdout

    def roles(self) -> dict[int, str]:
        """Port -> ``"primary"`` or ``"replica"``, as the running nodes report it now
        (``CLUSTER NODES``, asked of the first node that answers)."""
        for node in self.nodes:
            if not node.running:
                continue
            text = self.command(node.port, "CLUSTER", "NODES")
            if not text:
                continue
            roles: dict[int, str] = {}
            for line in text.splitlines():
                fields = line.split()
                port = int(fields[1].split("@")[0].rpartition(":")[2])
                if "fail" in fields[2].split(","):
                    continue
                roles[port] = "primary" if "master" in fields[2] else "replica"
            return roles
        return {}

    def node(self, port: int) -> RedisServer:
        return next(n for n in self.nodes if n.port == port)

    def primary_for(self, key: str) -> RedisServer:
        """The node that serves ``key``'s slot now (``CLUSTER KEYSLOT`` then
        ``CLUSTER SHARDS``/``SLOTS``, asked of a running node)."""
        asker = next(n for n in self.nodes if n.running)
        slot = int(self.command(asker.port, "CLUSTER", "KEYSLOT", key).strip())
        lines = self.command(asker.port, "CLUSTER", "NODES").splitlines()
        for line in lines:
            fields = line.split()
            if "master" not in fields[2] or "fail" in fields[2]:
                continue
            for part in fields[8:]:
                low, _, high = part.partition("-")
                if low.isdigit() and int(low) <= slot <= int(high or low):
                    return self.node(int(fields[1].split("@")[0].rpartition(":")[2]))
        raise ProcessError(f"no primary serves slot {slot}")

    def replicas_of(self, primary: RedisServer) -> list[RedisServer]:
        """The running replicas of ``primary`` (``CLUSTER REPLICAS``)."""
        asker = next(n for n in self.nodes if n.running)
        node_id = self.command(primary.port, "CLUSTER", "MYID").strip()
        text = self.command(asker.port, "CLUSTER", "REPLICAS", node_id)
        ports = [int(line.split()[1].split("@")[0].rpartition(":")[2])
                 for line in text.splitlines() if line.strip()]  # fmt: skip
        return [self.node(p) for p in ports if self.node(p).running]

    def wait_for_failover(self, old: RedisServer, timeout: float = 20.0) -> None:
        """After ``old`` (a primary) was stopped: until the others flag it failed and report
        ``cluster_state:ok`` again (its replica owns its slots)."""
        wait_until(
            lambda: old.port not in self.roles() and self.ok(),
            timeout=timeout, description=f"failover of primary {old.port}", interval=0.05,
        )  # fmt: skip

    def rejoin(self, node: RedisServer, timeout: float = 30.0) -> None:
        """Start a stopped node again: it reads its ``nodes.conf`` and comes back as a replica
        (empty, no persistence; it syncs from its shard's primary)."""
        node.start()
        self.wait_ok(timeout)
        self.settle()

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
