"""Real Redis topologies for tests: primaries, replicas and Sentinels as processes.

Every process is a real ``redis-server`` (Redis 7) started on a free loopback port, in
its own temporary directory, and stopped by its PID (never by name). Nothing here touches
a Redis that this module did not start (in particular the one on 127.0.0.1:6379).

Typical use::

    with ReplicatedTopology(tmp_path, replicas=2, sentinels=3) as topo:
        topo.primary().kill9()
        new_primary = topo.wait_for_failover(old_primary_port, timeout=15)

Every wait is bounded by a deadline and raises :class:`TopologyTimeout` (an
``AssertionError``, so pytest shows it as a test failure) with the last observed state
and the tail of the relevant log file.

Data nodes run with ``--save '' --appendonly no``: a node that is killed and restarted
comes back empty, exactly like a cache node without persistence.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

__all__ = [
    "HOST",
    "REDIS_SERVER",
    "RedisNode",
    "ReplicatedTopology",
    "SentinelNode",
    "TopologyError",
    "TopologyTimeout",
    "free_port",
    "redis_server_available",
    "wait_until",
]

HOST = "127.0.0.1"
"""Every process binds to loopback only."""

REDIS_SERVER = os.environ.get("EXTAUTHZ_TEST_REDIS_SERVER", "/usr/bin/redis-server")
"""The ``redis-server`` binary (override with ``EXTAUTHZ_TEST_REDIS_SERVER``)."""

_POLL_INTERVAL = 0.05
_START_TIMEOUT = 10.0
_STOP_TIMEOUT = 5.0
# Ports a developer machine commonly uses for its own Redis; free_port() never hands them out.
_RESERVED_PORTS = frozenset({6379, 6380, 6390, 26379})

T = TypeVar("T")


class TopologyError(RuntimeError):
    """A process could not be started or the topology is not in the expected shape."""


class TopologyTimeout(AssertionError):
    """A bounded wait ran out of time."""


# --------------------------------------------------------------------------- helpers


def redis_server_available() -> bool:
    """True when the ``redis-server`` binary exists and is executable."""
    path = shutil.which(REDIS_SERVER)
    return path is not None and os.access(path, os.X_OK)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now (bind to port 0 and release it).

    There is an unavoidable race between releasing the port and the server binding it;
    :meth:`RedisNode.start` retries on a fresh port when the bind fails for that reason.
    """
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((HOST, 0))
            port: int = sock.getsockname()[1]
        if port not in _RESERVED_PORTS:
            return port
    raise TopologyError("could not find a free loopback port")


def wait_until(
    probe: Callable[[], T | None],
    *,
    timeout: float,
    description: str,
    interval: float = _POLL_INTERVAL,
    diagnostics: Callable[[], str] | None = None,
) -> T:
    """Call ``probe`` until it returns a truthy value, and return that value.

    Exceptions raised by ``probe`` (a node still starting, a refused connection...) count
    as "not yet". When ``timeout`` seconds have passed, raise :class:`TopologyTimeout`
    naming ``description``, the last value or exception, and ``diagnostics()`` if given.
    """
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            value = probe()
        except (redis.RedisError, OSError, TopologyError) as exc:
            last = exc
        else:
            if value:
                return value
            last = value
        if time.monotonic() >= deadline:
            extra = ""
            if diagnostics is not None:
                with contextlib.suppress(Exception):
                    extra = "\n" + diagnostics()
            raise TopologyTimeout(
                f"timed out after {timeout:.1f}s waiting for {description}; last: {last!r}{extra}"
            )
        time.sleep(interval)


def _probe_client(port: int, *, timeout: float = 1.0) -> redis.Redis:
    """A short-lived client that fails fast (no retries) for polling."""
    return redis.Redis(
        host=HOST,
        port=port,
        socket_connect_timeout=timeout,
        socket_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
        decode_responses=True,
    )


def _command(port: int, *args: Any, timeout: float = 1.0) -> Any:
    """Run one raw command against ``HOST:port`` and close the connection."""
    with _probe_client(port, timeout=timeout) as client:
        return client.execute_command(*args)


def _pairs(reply: Any) -> dict[str, Any]:
    """A map reply -> ``{key: value}``.

    RESP3 (redis-py 8's default protocol) delivers a map as a dict; RESP2 as a flat
    ``[k1, v1, k2, v2, ...]`` list. Both are accepted.
    """
    if isinstance(reply, dict):
        return {str(k): v for k, v in reply.items()}
    flat = list(reply)
    return {str(flat[i]): flat[i + 1] for i in range(0, len(flat) - 1, 2)}


def _parse_info(reply: Any) -> dict[str, str]:
    """An INFO reply -> ``{field: value as str}``.

    redis-py parses INFO into a typed dict; values are normalised to strings so callers do
    not depend on its type guessing. Raw text (no parser) is accepted too.
    """
    if isinstance(reply, dict):
        return {str(k): str(v) for k, v in reply.items()}
    result: dict[str, str] = {}
    for line in str(reply).splitlines():
        if line and not line.startswith("#") and ":" in line:
            key, _, value = line.partition(":")
            result[key] = value
    return result


def _tail(path: Path, lines: int = 15) -> str:
    try:
        content = path.read_text(errors="replace").splitlines()
    except OSError:
        return f"(no log at {path})"
    return f"--- last lines of {path} ---\n" + "\n".join(content[-lines:])


# Safety net: if a test crashes without closing its topology, kill what we started when
# the interpreter exits. Only processes started by this module are ever signalled.
_LIVE: "weakref.WeakSet[_Process]" = weakref.WeakSet()


@atexit.register
def _kill_leftovers() -> None:
    for proc in list(_LIVE):
        with contextlib.suppress(Exception):
            proc.kill9()


# --------------------------------------------------------------------------- processes


class _Process:
    """One ``redis-server`` child process, owned by PID."""

    kind = "redis-server"

    def __init__(self, directory: Path, port: int | None) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self._pinned_port = port is not None
        self.port: int = port if port is not None else free_port()
        self._proc: subprocess.Popen[bytes] | None = None

    # -- subclasses fill these in
    def _argv(self) -> list[str]:
        raise NotImplementedError

    @property
    def logfile(self) -> Path:
        return self.dir / "redis.log"

    @property
    def _stdio_file(self) -> Path:
        return self.dir / "stdio.log"

    # -- state
    @property
    def pid(self) -> int | None:
        """PID of the running process, or None when it is not running."""
        return self._proc.pid if self.running and self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def address(self) -> tuple[str, int]:
        return (HOST, self.port)

    def __repr__(self) -> str:
        state = f"pid={self.pid}" if self.running else "stopped"
        return f"<{type(self).__name__} {HOST}:{self.port} {state}>"

    def diagnostics(self) -> str:
        return f"{self!r}\n{_tail(self.logfile)}\n{_tail(self._stdio_file, 5)}"

    # -- lifecycle
    def start(self, timeout: float = _START_TIMEOUT) -> None:
        """Start the process and wait (bounded) until it answers PING.

        If the port was picked by :func:`free_port` and someone else grabbed it in the
        meantime, retry on a fresh port (a few times). A pinned port is never changed.
        """
        if self.running:
            raise TopologyError(f"{self!r} is already running")
        attempts = 1 if self._pinned_port else 3
        for attempt in range(attempts):
            try:
                self._spawn_and_wait(timeout)
                return
            except TopologyError as exc:
                if attempt + 1 < attempts and "Address already in use" in str(exc):
                    self.port = free_port()
                    continue
                raise

    def _spawn_and_wait(self, timeout: float) -> None:
        with open(self._stdio_file, "ab") as stdio:
            self._proc = subprocess.Popen(
                self._argv(),
                cwd=self.dir,
                stdin=subprocess.DEVNULL,
                stdout=stdio,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C in the test runner does not reach it
            )
        _LIVE.add(self)

        def answers() -> bool:
            if self._proc is not None and self._proc.poll() is not None:
                raise _Exited()
            return bool(_command(self.port, "PING", timeout=0.5))

        try:
            wait_until(
                answers,
                timeout=timeout,
                description=f"{self.kind} on port {self.port} to answer PING",
                diagnostics=self.diagnostics,
            )
        except _Exited:
            proc = self._proc
            assert proc is not None
            proc.wait(timeout=_STOP_TIMEOUT)
            raise TopologyError(
                f"{self.kind} on port {self.port} exited with code {proc.returncode} "
                f"during start\n{self.diagnostics()}"
            ) from None
        except TopologyTimeout:
            self.kill9()
            raise

    def stop(self, timeout: float = _STOP_TIMEOUT) -> None:
        """SIGTERM, wait up to ``timeout`` s, then SIGKILL. No-op when not running."""
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=_STOP_TIMEOUT)
        _LIVE.discard(self)

    def kill9(self) -> None:
        """SIGKILL the process (a crash: no shutdown, no goodbye to replicas/Sentinels)."""
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        proc.kill()
        proc.wait(timeout=_STOP_TIMEOUT)
        _LIVE.discard(self)

    def restart(self, timeout: float = _START_TIMEOUT) -> None:
        """Stop (if running) and start again on the same port, in the same directory."""
        self.stop()
        self._pinned_port = True
        self.start(timeout=timeout)

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
        """Run one raw command on a fresh connection (decoded RESP2 reply)."""
        return _command(self.port, *args, timeout=timeout)


class _Exited(Exception):
    """Internal: the child exited while we waited for it to come up."""


class RedisNode(_Process):
    """One ``redis-server`` data node (primary or replica) on a free loopback port.

    :param directory: working directory (``--dir``) and home of the log file.
    :param port: fixed port; default a free one.
    :param replicaof: ``(host, port)`` to start as a replica of.
    :param extra_args: further command-line arguments, e.g. ``["--maxmemory", "10mb"]``.
    """

    kind = "redis-server"

    def __init__(
        self,
        directory: Path | str,
        *,
        port: int | None = None,
        replicaof: tuple[str, int] | None = None,
        extra_args: Sequence[str] = (),
    ) -> None:
        super().__init__(Path(directory), port)
        self.initial_replicaof = replicaof
        self.extra_args = list(extra_args)

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:<port>/0``."""
        return f"redis://{HOST}:{self.port}/0"

    def _argv(self) -> list[str]:
        argv = [
            REDIS_SERVER,
            "--port", str(self.port),
            "--bind", HOST,
            "--daemonize", "no",
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self.dir),
            "--logfile", str(self.logfile),
            "--loglevel", "notice",
            # Full syncs start immediately instead of waiting 5 s for more replicas.
            "--repl-diskless-sync", "yes",
            "--repl-diskless-sync-delay", "0",
            "--repl-ping-replica-period", "1",
        ]  # fmt: skip
        if self.initial_replicaof is not None:
            host, port = self.initial_replicaof
            argv += ["--replicaof", host, str(port)]
        return argv + self.extra_args

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
        return _parse_info(self.command("INFO", "replication"))

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


class SentinelNode(_Process):
    """One Redis Sentinel (``redis-server <conf> --sentinel``) monitoring one primary.

    The config file is generated in ``directory`` and is rewritten by Sentinel itself as
    it learns the topology, so a restarted Sentinel remembers replicas and peers.
    """

    kind = "redis-sentinel"

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
        super().__init__(Path(directory), port)
        self.service_name = service_name
        self.monitored = primary
        self.quorum = quorum
        self.down_after_ms = down_after_ms
        self.failover_timeout_ms = failover_timeout_ms
        self.extra_config = list(extra_config)
        self._config_written = False

    @property
    def logfile(self) -> Path:
        return self.dir / "sentinel.log"

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
            f"logfile {self.logfile}",
            "sentinel resolve-hostnames no",
            "sentinel announce-hostnames no",
            f"sentinel monitor {svc} {host} {port} {self.quorum}",
            f"sentinel down-after-milliseconds {svc} {self.down_after_ms}",
            f"sentinel failover-timeout {svc} {self.failover_timeout_ms}",
            f"sentinel parallel-syncs {svc} 1",
            *self.extra_config,
        ]
        return "\n".join(lines) + "\n"

    def _argv(self) -> list[str]:
        # Written on the first start (and again if the port changed on a bind race);
        # on restart Sentinel's own rewritten config is kept.
        if not self._config_written or not self._pinned_port:
            self.config_file.write_text(self.config_text())
            self._config_written = True
        return [REDIS_SERVER, str(self.config_file), "--sentinel"]

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
        return _pairs(self.command("SENTINEL", "MASTER", self.service_name))

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
        return [_pairs(item) for item in self.command("SENTINEL", "REPLICAS", self.service_name)]

    def other_sentinels(self) -> list[dict[str, Any]]:
        """``SENTINEL SENTINELS <service>``: the peers this Sentinel knows."""
        return [_pairs(item) for item in self.command("SENTINEL", "SENTINELS", self.service_name)]

    def failover(self) -> None:
        """``SENTINEL FAILOVER <service>``: a forced, graceful failover (no agreement needed)."""
        self.command("SENTINEL", "FAILOVER", self.service_name)


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
        self.base_dir = Path(tempfile.mkdtemp(prefix="redis-topology-") if base_dir is None else base_dir)
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

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def start(self) -> ReplicatedTopology:
        deadline = time.monotonic() + self.start_timeout
        remaining = lambda: max(0.5, deadline - time.monotonic())  # noqa: E731

        primary = RedisNode(self.base_dir / "node-0", extra_args=self.node_args)
        self.original_primary = primary
        primary.start(timeout=remaining())
        for i in range(1, self.n_replicas + 1):
            node = RedisNode(
                self.base_dir / f"node-{i}", replicaof=primary.address, extra_args=self.node_args
            )
            self.replicas.append(node)
            node.start(timeout=remaining())
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
            sentinel.start(timeout=remaining())
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
                parts.append(f"{node!r} role={info.get('role')} master_port={info.get('master_port')}")
            except (redis.RedisError, OSError) as exc:
                parts.append(f"{node!r} unreachable: {exc!r}")
        for sentinel in self.sentinels:
            parts.append(_tail(sentinel.logfile, 12))
        return "\n".join(parts)

    def processes(self) -> Iterator[_Process]:
        yield from self.nodes
        yield from self.sentinels
