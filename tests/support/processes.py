"""Real processes for tests: start on given ports, wait until ready, stop by PID.

Each :class:`ManagedProcess` writes its stdout and stderr to ``<log_dir>/<name>.stdout.log`` and
``<name>.stderr.log`` (appended across restarts) so that a failing test can show the tail.
Every wait is bounded; a process that exits while it is being waited for fails at once with its
log tail in the exception message.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Self

import yaml

from .ports import LOOPBACK, free_port, port_accepts

REPO_ROOT = Path(__file__).resolve().parents[2]

_started: list[ManagedProcess] = []


class ProcessError(RuntimeError):
    """A managed process failed to start, exited early or did not become ready in time."""


def started_processes() -> list[ManagedProcess]:
    """Every process started through this module in this test session (running or not)."""
    return list(_started)


def stop_all() -> None:
    """Stop every process this module started that still runs (last started first)."""
    for proc in reversed(_started):
        proc.stop()


def _tail(path: Path, lines: int) -> str:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return ""
    text = data[-64 * 1024 :].decode("utf-8", "replace")
    return "\n".join(text.splitlines()[-lines:])


class ManagedProcess:
    """One child process with captured output, started by :meth:`start`, stopped by PID."""

    ready_timeout: float = 20.0
    stop_timeout: float = 10.0

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log_dir: Path,
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.argv = [str(a) for a in argv]
        self.log_dir = Path(log_dir)
        self.env = dict(os.environ if env is None else env)
        self.cwd = cwd
        self.stdout_path = self.log_dir / f"{name}.stdout.log"
        self.stderr_path = self.log_dir / f"{name}.stderr.log"
        self._popen: subprocess.Popen[bytes] | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> Self:
        """Start the process and wait until :meth:`is_ready` (at most ``ready_timeout`` s).

        :raises ProcessError: it exited or did not become ready; it is stopped before raising.
        """
        if self.running:
            raise ProcessError(f"{self.name} is already running (pid {self.pid})")
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with open(self.stdout_path, "ab") as out, open(self.stderr_path, "ab") as err:
            err.write(f"--- {time.strftime('%H:%M:%S')} start: {' '.join(self.argv)}\n".encode())
            err.flush()
            self._popen = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                env=self.env,
                cwd=self.cwd,
                # own process group: a Ctrl-C in the terminal reaches only the test runner,
                # which then stops its children by PID
                start_new_session=True,
            )
        if self not in _started:
            _started.append(self)
        try:
            self.wait_until(self.is_ready, self.ready_timeout, "ready")
        except ProcessError:
            self.stop()
            raise
        return self

    def is_ready(self) -> bool:
        """Overridden: whether the started process serves; the default only needs it running."""
        return True

    def stop(self, timeout: float | None = None) -> int | None:
        """SIGTERM, wait up to ``timeout`` seconds, then SIGKILL. Returns the exit status."""
        popen = self._popen
        if popen is None:
            return None
        if popen.poll() is None:
            try:
                os.kill(popen.pid, signal.SIGTERM)
                popen.wait(self.stop_timeout if timeout is None else timeout)
            except subprocess.TimeoutExpired:
                os.kill(popen.pid, signal.SIGKILL)
                popen.wait(5)
            except ProcessLookupError:
                popen.wait(5)
        return popen.returncode

    def kill9(self) -> None:
        """SIGKILL: the process gets no chance to clean up (a crash, a lost node)."""
        popen = self._popen
        if popen is not None and popen.poll() is None:
            os.kill(popen.pid, signal.SIGKILL)
            popen.wait(5)

    def restart(self) -> Self:
        """Stop (if running) and start again with the same arguments and ports."""
        self.stop()
        return self.start()

    # -- state -------------------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        return None if self._popen is None else self._popen.pid

    @property
    def running(self) -> bool:
        return self._popen is not None and self._popen.poll() is None

    @property
    def returncode(self) -> int | None:
        return None if self._popen is None else self._popen.poll()

    def wait_until(self, predicate: Callable[[], bool], timeout: float, what: str) -> None:
        """Poll ``predicate`` until true; fail early when the process exits.

        :raises ProcessError: the process exited, or ``timeout`` seconds passed.
        """
        deadline = time.monotonic() + timeout
        while True:
            if not self.running:
                raise ProcessError(
                    f"{self.name} exited with status {self.returncode} before it was {what}\n"
                    f"{self.tail()}"
                )
            try:
                if predicate():
                    return
            except Exception:  # a probe that raises counts as "not yet"
                pass
            if time.monotonic() >= deadline:
                raise ProcessError(
                    f"{self.name} (pid {self.pid}) was not {what} within {timeout:.1f}s\n"
                    f"{self.tail()}"
                )
            time.sleep(0.05)

    def tail(self, lines: int = 40) -> str:
        """The last ``lines`` lines of stdout and of stderr, labelled."""
        parts = []
        for label, path in (("stdout", self.stdout_path), ("stderr", self.stderr_path)):
            text = _tail(path, lines)
            if text:
                parts.append(f"--- {self.name} {label} ({path}) ---\n{text}")
        return "\n".join(parts) or f"--- {self.name}: no output ---"

    def __repr__(self) -> str:
        state = "running" if self.running else f"exited {self.returncode}"
        return f"<{type(self).__name__} {self.name} pid={self.pid} {state}>"


# -- Redis ------------------------------------------------------------------------------------


def redis_binary() -> str | None:
    return shutil.which("redis-server")


class RedisServer(ManagedProcess):
    """A throw-away ``redis-server`` on a loopback port: no persistence, data dir in ``log_dir``."""

    def __init__(
        self, log_dir: Path, port: int | None = None, *, name: str = "redis", binary: str = ""
    ) -> None:
        self.port = port or free_port()
        binary = binary or redis_binary() or "redis-server"
        data_dir = Path(log_dir) / f"{name}-data"
        data_dir.mkdir(parents=True, exist_ok=True)
        argv = [
            binary,
            "--port", str(self.port),
            "--bind", LOOPBACK,
            "--save", "",
            "--appendonly", "no",
            "--dir", str(data_dir),
            "--daemonize", "no",
        ]  # fmt: skip
        super().__init__(name, argv, log_dir)
        self.ready_timeout = 10.0

    @property
    def url(self) -> str:
        return f"redis://{LOOPBACK}:{self.port}/0"

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


# -- Envoy ------------------------------------------------------------------------------------


def envoy_binaries() -> list[str]:
    """The Envoy binaries to test with: ``EXTAUTHZ_ENVOY_BINARIES`` (colon separated, as
    ``make test`` sets it to the oldest and newest supported version), else ``envoy`` on PATH,
    else none."""
    configured = os.environ.get("EXTAUTHZ_ENVOY_BINARIES", "")
    binaries = [part for part in configured.split(":") if part]
    if binaries:
        return binaries
    on_path = shutil.which("envoy")
    return [on_path] if on_path else []


@functools.lru_cache(maxsize=None)
def envoy_version(binary: str) -> str:
    """``1.40.0`` from ``envoy --version``; ``unknown`` when the binary cannot tell."""
    try:
        out = subprocess.run(
            [binary, "--version"], capture_output=True, text=True, timeout=30, check=False
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    match = re.search(r"/(\d+\.\d+\.\d+)/", out)
    return match.group(1) if match else "unknown"


def validate_envoy_config(binary: str, config_path: Path) -> subprocess.CompletedProcess[str]:
    """Run ``envoy --mode validate -c config_path``; the caller checks ``returncode``."""
    return subprocess.run(
        [binary, "--mode", "validate", "-c", str(config_path), "--disable-hot-restart",
         "--log-level", "warning"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )  # fmt: skip


def _admin_port(config_path: Path) -> int:
    doc = yaml.safe_load(Path(config_path).read_text())
    return int(doc["admin"]["address"]["socket_address"]["port_value"])


class EnvoyProcess(ManagedProcess):
    """``envoy -c config_path``; ready when the admin ``/ready`` endpoint answers ``LIVE``.

    Hot restart is disabled (no shared memory, so several Envoys can run at once), it runs with
    one worker thread, and its access log (stdout) is flushed every 100 ms.
    """

    def __init__(
        self,
        binary: str,
        config_path: Path,
        log_dir: Path,
        *,
        name: str = "envoy",
        admin_port: int | None = None,
        log_level: str = "warning",
        concurrency: int = 1,
    ) -> None:
        self.binary = binary
        self.config_path = Path(config_path)
        self.admin_port = admin_port or _admin_port(self.config_path)
        argv = [
            binary, "-c", str(self.config_path), "--disable-hot-restart",
            "--concurrency", str(concurrency), "--log-level", log_level,
            # access log lines reach the file within 100 ms instead of Envoy's default 10 s
            "--file-flush-interval-msec", "100",
        ]  # fmt: skip
        super().__init__(name, argv, log_dir)
        self.ready_timeout = 30.0

    def admin_get(self, path: str, timeout: float = 1.0) -> tuple[int, str]:
        """GET on the admin interface: ``(status, body)``."""
        url = f"http://{LOOPBACK}:{self.admin_port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def is_ready(self) -> bool:
        status, body = self.admin_get("/ready")
        return status == 200 and body.strip() == "LIVE"

    def access_log(self) -> list[dict[str, Any]]:
        """The JSON access-log lines Envoy has written to stdout so far."""
        entries = []
        for line in self.stdout_path.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                try:
                    entries.append(json.loads(line))
                except json.JSONDecodeError:
                    continue
        return entries


# -- extauthz and the echo upstream -------------------------------------------------------------


def grpc_health_serving(port: int, service: str = "", timeout: float = 1.0) -> bool:
    """True when ``grpc.health.v1.Health/Check`` on ``127.0.0.1:port`` answers SERVING."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(f"{LOOPBACK}:{port}") as channel:
        try:
            resp = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout
            )
        except grpc.RpcError:
            return False
    return bool(resp.status == health_pb2.HealthCheckResponse.SERVING)


def extauthz_cli(*args: str, env: Mapping[str, str] | None = None, timeout: float = 30.0) -> str:
    """Run ``python -m extauthz ARGS`` and return its stdout (stripped).

    :raises ProcessError: non-zero exit; the message carries stderr.
    """
    proc = subprocess.run(
        [sys.executable, "-m", "extauthz", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=dict(os.environ if env is None else env),
        cwd=REPO_ROOT,
        check=False,
    )
    if proc.returncode != 0:
        raise ProcessError(
            f"extauthz {' '.join(args)} exited {proc.returncode}\n{proc.stderr.strip()}"
        )
    return proc.stdout.strip()


class ExtauthzProcess(ManagedProcess):
    """``python -m extauthz serve --config FILE`` with ``EXTAUTHZ_*`` overrides.

    The listen addresses come from ``grpc_port``/``http_port`` (as environment overrides, so the
    settings file stays the one under test). Ready when both ports accept and gRPC health says
    SERVING, which the server reports once its session store answers.
    """

    def __init__(
        self,
        config_path: Path,
        log_dir: Path,
        *,
        grpc_port: int | None = None,
        http_port: int | None = None,
        env: Mapping[str, str] | None = None,
        name: str = "extauthz",
    ) -> None:
        self.grpc_port = grpc_port or free_port()
        self.http_port = http_port or free_port()
        full_env = dict(os.environ)
        full_env.update(env or {})
        full_env["EXTAUTHZ_SERVER_GRPC_LISTEN"] = f"{LOOPBACK}:{self.grpc_port}"
        full_env["EXTAUTHZ_SERVER_HTTP_LISTEN"] = f"{LOOPBACK}:{self.http_port}"
        full_env["PYTHONUNBUFFERED"] = "1"
        argv = [sys.executable, "-m", "extauthz", "serve", "--config", str(config_path)]
        super().__init__(name, argv, log_dir, env=full_env, cwd=REPO_ROOT)
        self.ready_timeout = 30.0

    @property
    def grpc_target(self) -> str:
        return f"{LOOPBACK}:{self.grpc_port}"

    def is_ready(self) -> bool:
        return (
            port_accepts(self.grpc_port)
            and port_accepts(self.http_port)
            and grpc_health_serving(self.grpc_port)
        )

    def cli(self, *args: str, timeout: float = 30.0) -> str:
        """Run an ``extauthz`` subcommand with this server's environment (same store, keys)."""
        return extauthz_cli(*args, env=self.env, timeout=timeout)


class EchoUpstreamProcess(ManagedProcess):
    """``demo/echo_upstream.py``: echoes each request as JSON and verifies its JWT."""

    def __init__(
        self,
        log_dir: Path,
        *,
        port: int | None = None,
        jwks_url: str,
        issuer: str,
        audience: str,
        name: str = "echo",
    ) -> None:
        self.port = port or free_port()
        argv = [
            sys.executable, str(REPO_ROOT / "demo" / "echo_upstream.py"),
            "--listen", f"{LOOPBACK}:{self.port}",
            "--jwks-url", jwks_url, "--issuer", issuer, "--audience", audience,
        ]  # fmt: skip
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        super().__init__(name, argv, log_dir, env=env, cwd=REPO_ROOT)

    def is_ready(self) -> bool:
        return port_accepts(self.port)
