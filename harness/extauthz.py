"""extauthz as a process (``serve`` and its CLI) and the demo's echo upstream."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from . import REPO_ROOT
from .ports import LOOPBACK, free_port, free_ports, port_accepts
from .process import ManagedProcess, ProcessError


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


def extauthz_cli(
    *args: str,
    env: Mapping[str, str] | None = None,
    timeout: float = 30.0,
    input: str | None = None,  # noqa: A002 (subprocess.run's name)
) -> str:
    """Run ``python -m extauthz ARGS`` (``input`` on its stdin) and return its stdout, stripped.

    :raises ProcessError: non-zero exit; the message carries stderr.
    """
    proc = subprocess.run(
        [sys.executable, "-m", "extauthz", *args],
        input=input,
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


def ensure_signing_key(keys_dir: Path, env: Mapping[str, str] | None = None) -> bool:
    """``extauthz keys generate --dir keys_dir`` unless the directory already holds a key.

    Returns True when a key was generated.
    """
    keys_dir.mkdir(parents=True, exist_ok=True)
    if any(keys_dir.iterdir()):
        return False
    extauthz_cli("keys", "generate", "--dir", str(keys_dir), env=env, timeout=60)
    return True


def add_user(
    users_file: Path,
    name: str,
    password: str,
    roles: Sequence[str] = (),
    scopes: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
) -> None:
    """``extauthz users add --file F NAME --password-stdin [--role R] [--scope S]``.

    :raises ProcessError: the CLI refused (e.g. the user exists).
    """
    argv = ["users", "add", "--file", str(users_file), name, "--password-stdin"]
    for role in roles:
        argv += ["--role", role]
    for scope in scopes:
        argv += ["--scope", scope]
    extauthz_cli(*argv, env=env, timeout=60, input=password + "\n")


ADMIN_TOKEN_ENV = "EXTAUTHZ_ADMIN_TOKEN_FILE"  # serve's admin.token_file, and the CLI's


def write_admin_token(path: Path) -> Path:
    """Write a fresh random admin token to ``path`` (mode 0600, replacing what was there) and
    return ``path``: ``serve`` refuses to start without one (docs/authentication.md).

    The token goes into a new file, created 0600, that then takes the place of ``path``: a file
    that was there (perhaps readable by others) never holds it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fresh = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    fd = os.open(fresh, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(secrets.token_hex(32) + "\n")
    os.replace(fresh, path)
    return path


class ExtauthzProcess(ManagedProcess):
    """``python -m extauthz serve --config FILE`` with ``EXTAUTHZ_*`` overrides.

    The listen addresses are ``listen_host`` (default loopback) with ``grpc_port`` and
    ``http_port`` (as environment overrides, so the settings file stays the one under test). The
    admin token file is ``env``'s ``EXTAUTHZ_ADMIN_TOKEN_FILE``, or else a fresh one in
    ``log_dir`` (:func:`write_admin_token`); :meth:`cli` passes it on. Ready when both ports
    accept and gRPC health says SERVING, which the server reports once its session store
    answers. ``workers`` (``server.workers``, 1 unless given): worker ``i`` serves gRPC on
    ``grpc_port + i`` (:attr:`grpc_ports`, consecutive free ports unless ``grpc_port`` is
    given); ready when every one of them says SERVING.
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
        listen_host: str = LOOPBACK,
        workers: int = 1,
    ) -> None:
        self.workers = workers
        self.grpc_port = grpc_port or (free_ports(workers) if workers > 1 else free_port())
        self.http_port = http_port or free_port()
        full_env = dict(os.environ)
        full_env.update(env or {})
        if ADMIN_TOKEN_ENV not in (env or {}):
            token_file = write_admin_token(Path(log_dir).resolve() / f"{name}.admin-token")
            full_env[ADMIN_TOKEN_ENV] = str(token_file)
        full_env["EXTAUTHZ_SERVER_GRPC_LISTEN"] = f"{listen_host}:{self.grpc_port}"
        full_env["EXTAUTHZ_SERVER_HTTP_LISTEN"] = f"{listen_host}:{self.http_port}"
        full_env["PYTHONUNBUFFERED"] = "1"
        if "EXTAUTHZ_SERVER_WORKERS" not in (env or {}):
            full_env["EXTAUTHZ_SERVER_WORKERS"] = str(workers)
        argv = [sys.executable, "-m", "extauthz", "serve", "--config", str(config_path)]
        super().__init__(name, argv, log_dir, env=full_env, cwd=REPO_ROOT)
        self.ready_timeout = 30.0

    @property
    def grpc_ports(self) -> list[int]:
        """Every worker's gRPC port."""
        return [self.grpc_port + i for i in range(self.workers)]

    @property
    def grpc_target(self) -> str:
        return f"{LOOPBACK}:{self.grpc_port}"

    @property
    def jwks_url(self) -> str:
        return f"http://{LOOPBACK}:{self.http_port}/.well-known/jwks.json"

    def is_ready(self) -> bool:
        return port_accepts(self.http_port) and all(
            port_accepts(port) and grpc_health_serving(port) for port in self.grpc_ports
        )

    @property
    def admin_metadata(self) -> list[tuple[str, str]]:
        """gRPC metadata that admits an admin call to this node (its admin token)."""
        token = Path(self.env[ADMIN_TOKEN_ENV]).read_text().strip()
        return [("authorization", f"Bearer {token}")]

    def cli(self, *args: str, timeout: float = 30.0) -> str:
        """Run an ``extauthz`` subcommand with this server's environment (same store, keys,
        admin token)."""
        return extauthz_cli(*args, env=self.env, timeout=timeout)

    def create_session(self, sub: str, *args: str) -> str:
        """``extauthz sessions create --sub SUB ARGS`` against this node; the opaque token."""
        return self.cli("sessions", "create", "--sub", sub, "--target", self.grpc_target, *args)


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
        super().__init__(name, argv, log_dir, env=env, cwd=REPO_ROOT, ready_port=self.port)
