"""The one ``redis-server`` launcher: a throw-away server on a loopback port, no persistence."""

from __future__ import annotations

import shutil
import socket
from collections.abc import Sequence
from pathlib import Path
from typing import Self

from .ports import LOOPBACK, free_port
from .process import ManagedProcess, ProcessError


def redis_binary() -> str | None:
    """``redis-server`` on PATH, or None."""
    return shutil.which("redis-server")


class RedisServer(ManagedProcess):
    """``redis-server`` on ``127.0.0.1:port`` with ``--save '' --appendonly no``.

    :param log_dir: where its stdout/stderr go (the server logs to stdout).
    :param port: a fixed port; default a free one, picked again when another process takes it
        between the pick and the bind. After the first start the port stays (restarts reuse it).
    :param data_dir: ``--dir``; default ``<log_dir>/<name>-data``.
    :param replicaof: ``(host, port)`` of a primary to replicate from.
    :param extra_args: further arguments, e.g. ``["--maxmemory", "10mb"]``.

    Ready when it answers ``PING`` with ``+PONG``. A server that is killed and started again
    comes back empty, like a cache node without persistence.
    """

    bind_attempts = 3

    def __init__(
        self,
        log_dir: Path,
        port: int | None = None,
        *,
        name: str = "redis",
        binary: str = "",
        data_dir: Path | None = None,
        replicaof: tuple[str, int] | None = None,
        extra_args: Sequence[str] = (),
    ) -> None:
        self._pinned = port is not None
        self.port = port or free_port()
        self.binary = binary or redis_binary() or "redis-server"
        self.data_dir = Path(data_dir) if data_dir is not None else Path(log_dir) / f"{name}-data"
        self.replicaof_at_start = replicaof
        self.extra_args = list(extra_args)
        super().__init__(name, [], log_dir, cwd=self.data_dir)
        self.ready_timeout = 10.0

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:<port>/0``."""
        return f"redis://{LOOPBACK}:{self.port}/0"

    @property
    def address(self) -> tuple[str, int]:
        return (LOOPBACK, self.port)

    def server_argv(self) -> list[str]:
        """The command line for the current port (a Sentinel overrides it)."""
        argv = [
            self.binary,
            "--port", str(self.port),
            "--bind", LOOPBACK,
            "--daemonize", "no",
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self.data_dir),
        ]  # fmt: skip
        if self.replicaof_at_start is not None:
            host, port = self.replicaof_at_start
            argv += ["--replicaof", host, str(port)]
        return argv + self.extra_args

    def prepare(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.argv = self.server_argv()

    def start(self) -> Self:
        """Start and wait for ``PING``; on a bind race for a port it picked, pick another.

        :raises ProcessError: it did not start (a pinned port that is taken, for one).
        """
        attempts = 1 if self._pinned else self.bind_attempts
        for attempt in range(attempts):
            try:
                super().start()
            except ProcessError as exc:
                if attempt + 1 < attempts and "Address already in use" in str(exc):
                    self.port = free_port()
                    continue
                raise
            self._pinned = True
            break
        return self

    def ping(self, timeout: float = 0.5) -> bool:
        """True when the server answers ``PING`` with ``+PONG`` (raw RESP, no client library)."""
        try:
            with socket.create_connection((LOOPBACK, self.port), timeout=timeout) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def is_ready(self) -> bool:
        return self.ping()
