"""Redis data nodes and Sentinels for topology tests, on :class:`harness.redis.RedisServer`.

Each node is the harness's one ``redis-server`` launcher (free loopback port, no persistence,
stopped by PID) with what topology tests need on top: a redis-py client, raw commands, the
replication state, and Sentinel's view of the primary. Replies are read so that RESP2 and RESP3
(redis-py 8's default) answers give the same result.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from harness.ports import LOOPBACK
from harness.process import WaitTimeout
from harness.redis import RedisServer, redis_binary

HOST = LOOPBACK
TopologyTimeout = WaitTimeout
"""What a bounded wait of a topology raises (:class:`harness.process.WaitTimeout`)."""


class TopologyError(RuntimeError):
    """The topology is not in the expected shape (e.g. no node listens on a reported port)."""


def redis_server_available() -> bool:
    """True when a ``redis-server`` binary is on PATH."""
    return redis_binary() is not None


def _command(port: int, *args: Any, timeout: float = 1.0) -> Any:
    """Run one raw command against ``HOST:port`` on a fail-fast connection and close it."""
    client = redis.Redis(
        host=HOST,
        port=port,
        socket_connect_timeout=timeout,
        socket_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
        decode_responses=True,
    )
    with client:
        return client.execute_command(*args)


def pairs(reply: Any) -> dict[str, Any]:
    """A map reply -> ``{key: value}``: a dict (RESP3) or a flat ``[k1, v1, ...]`` (RESP2)."""
    if isinstance(reply, dict):
        return {str(k): v for k, v in reply.items()}
    flat = list(reply)
    return {str(flat[i]): flat[i + 1] for i in range(0, len(flat) - 1, 2)}


def parse_info(reply: Any) -> dict[str, str]:
    """An INFO reply (redis-py's parsed dict, or raw text) -> ``{field: value as str}``."""
    if isinstance(reply, dict):
        return {str(k): str(v) for k, v in reply.items()}
    result: dict[str, str] = {}
    for line in str(reply).splitlines():
        if line and not line.startswith("#") and ":" in line:
            key, _, value = line.partition(":")
            result[key] = value
    return result


class _RedisProcess(RedisServer):
    """A :class:`RedisServer` whose directory holds its data and its logs."""

    def __init__(self, directory: Path | str, name: str, **kwargs: Any) -> None:
        directory = Path(directory)
        super().__init__(directory, name=name, data_dir=directory, **kwargs)

    @property
    def dir(self) -> Path:
        return self.data_dir

    def __repr__(self) -> str:
        state = f"pid={self.pid}" if self.running else "stopped"
        return f"<{type(self).__name__} {HOST}:{self.port} {state}>"

    def diagnostics(self) -> str:
        return f"{self!r}\n{self.tail(15)}"

    def client(self, **kwargs: Any) -> redis.Redis:
        """A new sync ``redis.Redis`` for this process (the caller closes it).

        Defaults: ``decode_responses=True``, 2 s socket timeouts; ``kwargs`` override.
        """
        options: dict[str, Any] = {
            "host": HOST,
            "port": self.port,
            "decode_responses": True,
            "socket_connect_timeout": 2.0,
            "socket_timeout": 2.0,
        }
        options.update(kwargs)
        return redis.Redis(**options)

    def command(self, *args: Any, timeout: float = 2.0) -> Any:
        """Run one raw command on a fresh connection (decoded reply)."""
        return _command(self.port, *args, timeout=timeout)


class RedisNode(_RedisProcess):
    """One ``redis-server`` data node (primary or replica) on a free loopback port.

    :param directory: working directory (``--dir``) and home of its logs.
    :param port: fixed port; default a free one.
    :param replicaof: ``(host, port)`` to start as a replica of.
    :param extra_args: further command-line arguments, e.g. ``["--maxmemory", "10mb"]``.
    """

    def __init__(
        self,
        directory: Path | str,
        *,
        port: int | None = None,
        replicaof: tuple[str, int] | None = None,
        extra_args: Sequence[str] = (),
    ) -> None:
        args = [
            "--loglevel", "notice",
            # Full syncs start immediately instead of waiting 5 s for more replicas.
            "--repl-diskless-sync", "yes",
            "--repl-diskless-sync-delay", "0",
            "--repl-ping-replica-period", "1",
            *extra_args,
        ]  # fmt: skip
        super().__init__(directory, "redis", port=port, replicaof=replicaof, extra_args=args)

    # -- replication
    def replicaof(self, host: str | None, port: int | None = None) -> None:
        """``REPLICAOF host port``; ``replicaof(None)`` is ``REPLICAOF NO ONE``."""
        if host is None:
            self.command("REPLICAOF", "NO", "ONE")
        else:
            if port is None:
                raise ValueError("port is required with a host")
            self.command("REPLICAOF", host, port)

    def role(self) -> str:
        """``master`` or ``slave`` (first element of ``ROLE``)."""
        return str(self.command("ROLE")[0])

    def replication_info(self) -> dict[str, str]:
        """``INFO replication`` as a dict of raw strings."""
        return parse_info(self.command("INFO", "replication"))

    def master_port(self) -> int | None:
        """The port this node replicates from, or None when it is a primary."""
        info = self.replication_info()
        if info.get("role") != "slave":
            return None
        return int(info["master_port"])

    def link_up(self) -> bool:
        """True when this node is a replica whose link to its primary is up."""
        info = self.replication_info()
        return info.get("role") == "slave" and info.get("master_link_status") == "up"


class SentinelNode(_RedisProcess):
    """One Redis Sentinel (``redis-server <conf> --sentinel``) monitoring one primary.

    The config file is generated in ``directory`` and is rewritten by Sentinel itself as
    it learns the topology, so a restarted Sentinel remembers replicas and peers.
    """

    def __init__(
        self,
        directory: Path | str,
        *,
        service_name: str,
        primary: tuple[str, int],
        quorum: int,
        port: int | None = None,
        down_after_ms: int = 500,
        failover_timeout_ms: int = 2000,
        extra_config: Sequence[str] = (),
    ) -> None:
        super().__init__(directory, "sentinel", port=port)
        self.service_name = service_name
        self.monitored = primary
        self.quorum = quorum
        self.down_after_ms = down_after_ms
        self.failover_timeout_ms = failover_timeout_ms
        self.extra_config = list(extra_config)
        self._config_port: int | None = None

    @property
    def config_file(self) -> Path:
        return self.dir / "sentinel.conf"

    def config_text(self) -> str:
        host, port = self.monitored
        svc = self.service_name
        lines = [
            f"port {self.port}",
            f"bind {HOST}",
            "daemonize no",
            f"dir {self.dir}",
            "sentinel resolve-hostnames no",
            "sentinel announce-hostnames no",
            f"sentinel monitor {svc} {host} {port} {self.quorum}",
            f"sentinel down-after-milliseconds {svc} {self.down_after_ms}",
            f"sentinel failover-timeout {svc} {self.failover_timeout_ms}",
            f"sentinel parallel-syncs {svc} 1",
            *self.extra_config,
        ]
        return "\n".join(lines) + "\n"

    def server_argv(self) -> list[str]:
        # Written on the first start (and again if the port changed on a bind race);
        # on restart Sentinel's own rewritten config is kept.
        if self._config_port != self.port:
            self.dir.mkdir(parents=True, exist_ok=True)
            self.config_file.write_text(self.config_text())
            self._config_port = self.port
        return [self.binary, str(self.config_file), "--sentinel"]

    # -- queries (raw replies, independent of redis-py's response parsing)
    def master_address(self) -> tuple[str, int] | None:
        """``SENTINEL GET-MASTER-ADDR-BY-NAME``.

        Careful: during a failover this already returns the *promoted* replica while
        ``SENTINEL MASTER`` (which redis-py's ``Sentinel.discover_master`` reads) still
        names the old primary until ``+switch-master``. Use :meth:`settled_master` to
        know what clients will actually be sent to.
        """
        reply = self.command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.service_name)
        if not reply:
            return None
        return (str(reply[0]), int(reply[1]))

    def master_state(self) -> dict[str, Any]:
        """``SENTINEL MASTER <service>`` as a dict of raw strings."""
        return pairs(self.command("SENTINEL", "MASTER", self.service_name))

    def settled_master(self) -> tuple[str, int] | None:
        """The primary this Sentinel reports once no failover is in progress: the
        ``SENTINEL MASTER`` address when its flags are plain ``master`` (no
        ``failover_in_progress``, ``s_down``, ``o_down``) and ``GET-MASTER-ADDR-BY-NAME``
        agrees; otherwise None."""
        state = self.master_state()
        if set(str(state.get("flags", "")).split(",")) != {"master"}:
            return None
        address = (str(state["ip"]), int(state["port"]))
        return address if self.master_address() == address else None

    def replicas(self) -> list[dict[str, Any]]:
        """``SENTINEL REPLICAS <service>``: one dict of raw strings per known replica."""
        return [pairs(item) for item in self.command("SENTINEL", "REPLICAS", self.service_name)]

    def other_sentinels(self) -> list[dict[str, Any]]:
        """``SENTINEL SENTINELS <service>``: the peers this Sentinel knows."""
        return [pairs(item) for item in self.command("SENTINEL", "SENTINELS", self.service_name)]

    def failover(self) -> None:
        """``SENTINEL FAILOVER <service>``: a forced, graceful failover (no agreement needed)."""
        self.command("SENTINEL", "FAILOVER", self.service_name)


needs_redis_server = pytest.mark.skipif(
    not redis_server_available(), reason="redis-server binary not installed"
)
"""Module mark of the topology tests: they need the real ``redis-server``."""
