"""Real Redis topologies for tests: one primary, replicas and Sentinels as processes.

Every process is a real ``redis-server`` (Redis 7) started on a free loopback port through
:mod:`harness.redis`, in its own directory, and stopped by its PID (never by name). Nothing
here touches a Redis that it did not start (in particular the one on 127.0.0.1:6379).

Typical use::

    with ReplicatedTopology(tmp_path, replicas=2, sentinels=3) as topo:
        topo.primary().kill9()
        new_primary = topo.wait_for_failover(old_primary_port, timeout=15)

Every wait is bounded by a deadline and raises :class:`TopologyTimeout` with the last observed
state and the tail of the relevant logs.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import redis

from harness.ports import free_port
from harness.process import wait_until
from tests.support.redis_nodes import (
    HOST,
    RedisNode,
    SentinelNode,
    TopologyError,
    TopologyTimeout,
    needs_redis_server,
    redis_server_available,
)

__all__ = [
    "HOST",
    "RedisNode",
    "ReplicatedTopology",
    "SentinelNode",
    "TopologyError",
    "TopologyTimeout",
    "free_port",
    "needs_redis_server",
    "redis_server_available",
    "wait_until",
]


# --------------------------------------------------------------------------- topology


def _healthy(entry: dict[str, Any]) -> bool:
    flags = set(str(entry.get("flags", "")).split(","))
    return not flags & {"s_down", "o_down", "disconnected"}


class ReplicatedTopology:
    """One primary, N replicas and optionally M Sentinels, as real processes.

    Use as a context manager (or call :meth:`start` / :meth:`close`). :meth:`start`
    returns only when every replica reports ``master_link_status:up`` and, with
    Sentinels, when every Sentinel knows the primary, all replicas (healthy) and all
    other Sentinels — i.e. when a failover could actually happen.

    :param base_dir: parent directory; default a fresh temporary directory, removed on close.
    :param replicas: number of replicas (N).
    :param sentinels: number of Sentinels (M); 0 for plain replication.
    :param quorum: Sentinel quorum; default a majority of ``sentinels``.
    :param down_after_ms: Sentinel ``down-after-milliseconds``.
    :param failover_timeout_ms: Sentinel ``failover-timeout``.
    :param node_args: extra ``redis-server`` arguments for every data node.
    :param start_timeout: bound for the whole start-up (processes and convergence).
    """

    def __init__(
        self,
        base_dir: Path | str | None = None,
        *,
        replicas: int = 2,
        sentinels: int = 0,
        service_name: str = "extauthz",
        quorum: int | None = None,
        down_after_ms: int = 500,
        failover_timeout_ms: int = 2000,
        node_args: Sequence[str] = (),
        start_timeout: float = 20.0,
    ) -> None:
        if replicas < 0 or sentinels < 0:
            raise ValueError("replicas and sentinels must be >= 0")
        self._own_dir = base_dir is None
        self.base_dir = Path(base_dir or tempfile.mkdtemp(prefix="redis-topology-"))
        self.service_name = service_name
        self.n_replicas = replicas
        self.n_sentinels = sentinels
        self.quorum = quorum if quorum is not None else sentinels // 2 + 1
        self.down_after_ms = down_after_ms
        self.failover_timeout_ms = failover_timeout_ms
        self.node_args = list(node_args)
        self.start_timeout = start_timeout
        self.original_primary: RedisNode | None = None
        self.replicas: list[RedisNode] = []
        self.sentinels: list[SentinelNode] = []

    # -- lifecycle
    def __enter__(self) -> ReplicatedTopology:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def start(self) -> ReplicatedTopology:
        deadline = time.monotonic() + self.start_timeout

        def remaining() -> float:
            return max(0.5, deadline - time.monotonic())

        def start(proc: RedisNode | SentinelNode) -> None:
            proc.ready_timeout = remaining()
            proc.start()

        primary = RedisNode(self.base_dir / "node-0", extra_args=self.node_args)
        self.original_primary = primary
        start(primary)
        for i in range(1, self.n_replicas + 1):
            node = RedisNode(
                self.base_dir / f"node-{i}", replicaof=primary.address, extra_args=self.node_args
            )
            self.replicas.append(node)
            start(node)
        for node in self.replicas:
            wait_until(
                node.link_up,
                timeout=remaining(),
                description=f"replica {node.port} to report master_link_status:up",
                diagnostics=node.diagnostics,
            )
        for i in range(self.n_sentinels):
            sentinel = SentinelNode(
                self.base_dir / f"sentinel-{i}",
                service_name=self.service_name,
                primary=primary.address,
                quorum=self.quorum,
                down_after_ms=self.down_after_ms,
                failover_timeout_ms=self.failover_timeout_ms,
            )
            self.sentinels.append(sentinel)
            start(sentinel)
        if self.sentinels:
            self.wait_sentinels_converged(timeout=remaining())
        return self

    def close(self) -> None:
        """Kill every process this topology started (Sentinels first), by PID."""
        for proc in [*self.sentinels, *self.nodes]:
            with contextlib.suppress(Exception):
                proc.kill9()
        if self._own_dir:
            shutil.rmtree(self.base_dir, ignore_errors=True)

    # -- membership
    @property
    def nodes(self) -> list[RedisNode]:
        """All data nodes: the original primary first, then the replicas."""
        return ([self.original_primary] if self.original_primary else []) + self.replicas

    def node_for_port(self, port: int) -> RedisNode:
        for node in self.nodes:
            if node.port == port:
                return node
        raise TopologyError(f"no data node of this topology listens on port {port}")

    def sentinel_addresses(self) -> list[tuple[str, int]]:
        """``[(host, port), ...]`` of every Sentinel, for ``redis.sentinel.Sentinel(...)``."""
        return [s.address for s in self.sentinels]

    def _running_sentinels(self) -> list[SentinelNode]:
        return [s for s in self.sentinels if s.running]

    def primary(self) -> RedisNode:
        """The current primary: as reported by the Sentinels (the ``SENTINEL MASTER``
        address most running Sentinels give, i.e. what redis-py's ``Sentinel`` would
        connect to), or the original primary when there are no Sentinels."""
        if not self.sentinels:
            assert self.original_primary is not None
            return self.original_primary
        votes: dict[int, int] = {}
        for sentinel in self._running_sentinels():
            with contextlib.suppress(redis.RedisError, OSError):
                port = int(sentinel.master_state()["port"])
                votes[port] = votes.get(port, 0) + 1
        if not votes:
            raise TopologyError("no running Sentinel reports a primary")
        return self.node_for_port(max(votes, key=lambda port: votes[port]))

    def current_replicas(self) -> list[RedisNode]:
        """Running data nodes other than :meth:`primary`."""
        primary = self.primary()
        return [n for n in self.nodes if n is not primary and n.running]

    # -- waits
    def wait_sentinels_converged(self, timeout: float = 15.0) -> None:
        """Until every running Sentinel reports the same primary, knows every running
        replica as healthy, and knows every other running Sentinel."""

        def converged() -> bool:
            sentinels = self._running_sentinels()
            primary_ports = {s.settled_master() for s in sentinels}
            if len(primary_ports) != 1 or None in primary_ports:
                return False
            (addr,) = primary_ports
            assert addr is not None
            expected_replicas = {n.port for n in self.nodes if n.running and n.port != addr[1]}
            for sentinel in sentinels:
                known = {int(r["port"]) for r in sentinel.replicas() if _healthy(r)}
                if not expected_replicas <= known:
                    return False
                peers = {int(p["port"]) for p in sentinel.other_sentinels()}
                if not {s.port for s in sentinels if s is not sentinel} <= peers:
                    return False
            return True

        wait_until(
            converged,
            timeout=timeout,
            interval=0.1,
            description="Sentinels to agree on the primary and know all replicas and peers",
            diagnostics=self.diagnostics,
        )

    def wait_for_failover(self, old_primary_port: int, timeout: float = 15.0) -> RedisNode:
        """Until every running Sentinel has finished failing over to one primary other
        than ``old_primary_port`` (see :meth:`SentinelNode.settled_master`) and that node
        answers ``ROLE`` with ``master``; return it.

        After this returns, redis-py's ``Sentinel.discover_master`` finds the new primary.
        A still-running old primary may remain a (stale) master for ~10 s more until
        Sentinel reconfigures it; use :meth:`wait_replica_of` for that.
        """

        def promoted() -> RedisNode | None:
            answers = {s.settled_master() for s in self._running_sentinels()}
            if len(answers) != 1:
                return None
            (addr,) = answers
            if addr is None or addr[1] == old_primary_port:
                return None
            node = self.node_for_port(addr[1])
            return node if node.role() == "master" else None

        return wait_until(
            promoted,
            timeout=timeout,
            interval=0.1,
            description=f"Sentinels to fail over away from port {old_primary_port}",
            diagnostics=self.diagnostics,
        )

    def wait_replica_of(self, node: RedisNode, primary: RedisNode, timeout: float = 15.0) -> None:
        """Until ``node`` is a replica of ``primary`` with its link up."""

        def attached() -> bool:
            info = node.replication_info()
            return (
                info.get("role") == "slave"
                and int(info.get("master_port", -1)) == primary.port
                and info.get("master_link_status") == "up"
            )

        wait_until(
            attached,
            timeout=timeout,
            description=f"{node!r} to replicate from {primary!r}",
            diagnostics=lambda: node.diagnostics() + "\n" + self.diagnostics(),
        )

    def wait_replicas_synced(self, timeout: float = 10.0) -> None:
        """Until every running replica of the current primary has its link up and has
        processed the primary's replication stream up to the offset seen at the call."""
        primary = self.primary()
        target = int(primary.replication_info()["master_repl_offset"])
        replicas = [n for n in self.nodes if n is not primary and n.running]

        def synced() -> bool:
            for node in replicas:
                info = node.replication_info()
                if info.get("role") != "slave" or info.get("master_link_status") != "up":
                    return False
                if int(info.get("master_port", -1)) != primary.port:
                    return False
                if int(info.get("slave_repl_offset", -1)) < target:
                    return False
            return True

        wait_until(
            synced,
            timeout=timeout,
            description=f"replicas {[n.port for n in replicas]} to reach offset {target}",
            diagnostics=self.diagnostics,
        )

    # -- debugging
    def diagnostics(self) -> str:
        """Roles of every node and the tail of every Sentinel log (for failure messages)."""
        parts: list[str] = []
        for node in self.nodes:
            try:
                info = node.replication_info() if node.running else {}
                role, master_port = info.get("role"), info.get("master_port")
                parts.append(f"{node!r} role={role} master_port={master_port}")
            except (redis.RedisError, OSError) as exc:
                parts.append(f"{node!r} unreachable: {exc!r}")
        for sentinel in self.sentinels:
            parts.append(sentinel.tail(12))
        return "\n".join(parts)

    def processes(self) -> Iterator[RedisNode | SentinelNode]:
        yield from self.nodes
        yield from self.sentinels
