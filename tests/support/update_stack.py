"""Two gateway nodes for the session-update tests: one Redis (strategy ``central``, session
cache on), one scripted upstream (:mod:`tests.support.scripted_upstream`), and per node an
extauthz and an Envoy running the repository's ``envoy/front-proxy.yaml`` on free ports.

The allowlist lets the upstream cluster (``upstream``) write ``theme`` and ``cart``; a rotated
token's grace is :data:`ROTATION_GRACE_SECONDS`.
"""

from __future__ import annotations

import http.client
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from harness import REPO_ROOT
from harness.envoy import EnvoyProcess, envoy_version
from harness.extauthz import ExtauthzProcess, add_user, ensure_signing_key
from harness.ports import LOOPBACK, free_port
from harness.process import ManagedProcess
from harness.redis import RedisServer
from harness.stack import DEMO_SETTINGS, StackPorts, generate_envoy_config
from tests.support.metrics_text import parse, value

ALLOWED_KEYS = "upstream=theme,upstream=cart"
USER, PASSWORD = "uma", "uma-password-1"
ROTATION_GRACE_SECONDS = 1.5


class ScriptedUpstream(ManagedProcess):
    def __init__(self, log_dir: Path) -> None:
        self.port = free_port()
        script = REPO_ROOT / "tests" / "support" / "scripted_upstream.py"
        super().__init__(
            "scripted-upstream",
            [sys.executable, str(script), str(self.port)],
            log_dir,
            cwd=REPO_ROOT,
            ready_port=self.port,
        )


@dataclass
class Node:
    extauthz: ExtauthzProcess
    envoy: EnvoyProcess
    listener: int

    def request(
        self, path: str, headers: dict[str, str] | None = None, method: str = "GET"
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        conn = http.client.HTTPConnection(LOOPBACK, self.listener, timeout=10)
        try:
            conn.request(method, path, headers=headers or {})
            resp = conn.getresponse()
            return resp.status, resp.getheaders(), resp.read()
        finally:
            conn.close()

    def metric(self, result: str, reason: str) -> int:
        """``extauthz_session_updates_total{result, reason}`` of this node (0 when absent)."""
        url = f"http://{LOOPBACK}:{self.extauthz.http_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as resp:
            text = resp.read().decode()
        found = value(parse(text), "extauthz_session_updates_total", result=result, reason=reason)
        return int(found or 0)


@dataclass
class UpdateStack:
    nodes: list[Node]
    upstream: ScriptedUpstream
    users_file: Path

    def token(self, sub: str = "alice") -> str:
        """A new bearer session of ``sub`` (``extauthz sessions create``)."""
        node = self.nodes[0].extauthz
        return node.cli("sessions", "create", "--sub", sub, "--target", node.grpc_target).strip()

    def processes(self) -> list[ManagedProcess]:
        return [self.upstream, *(p for n in self.nodes for p in (n.extauthz, n.envoy))]

    def stop(self) -> None:
        for proc in reversed(self.processes()):
            proc.stop()


def start_update_stack(
    envoy_binary: str,
    work_dir: Path,
    redis: RedisServer,
    nodes: int = 2,
    extra_env: dict[str, str] | None = None,
) -> UpdateStack:
    """``extra_env``: more extauthz settings (environment overrides) for every node.

    :raises ProcessError: a part did not start (the parts already started are stopped)."""
    log_dir, keys_dir = work_dir / "logs", work_dir / "keys"
    users_file = work_dir / "users.json"
    env = {
        "EXTAUTHZ_JWT_KEYS_DIR": str(keys_dir),
        "EXTAUTHZ_STORE_BACKEND": "redis",
        "EXTAUTHZ_STORE_STRATEGY": "central",
        "EXTAUTHZ_STORE_REDIS_URL": redis.url,
        "EXTAUTHZ_STORE_KEY_PREFIX": f"upd{free_port()}:",
        "EXTAUTHZ_CACHE_ENABLED": "true",
        "EXTAUTHZ_USERS_FILE": str(users_file),
        "EXTAUTHZ_RATELIMIT_ENABLED": "false",
        "EXTAUTHZ_SESSION_UPDATES_ALLOWED_KEYS": ALLOWED_KEYS,
        # a rotated token's grace: short, so that the tests see its end
        "EXTAUTHZ_SESSION_ROTATION_GRACE_SECONDS": str(ROTATION_GRACE_SECONDS),
        **(extra_env or {}),
    }
    ensure_signing_key(keys_dir)
    add_user(users_file, USER, PASSWORD)
    started: list[ManagedProcess] = []
    built: list[Node] = []
    try:
        upstream = ScriptedUpstream(log_dir)
        started.append(upstream.start())
        version = envoy_version(envoy_binary)
        for i in range(nodes):
            extauthz = ExtauthzProcess(
                DEMO_SETTINGS,
                log_dir,
                env={**env, "EXTAUTHZ_SERVER_NODE_ID": f"upd-{i}"},
                name=f"upd{i}-extauthz",
            )
            started.append(extauthz.start())
            ports = StackPorts(
                free_port(), free_port(), extauthz.grpc_port, extauthz.http_port, upstream.port
            )
            config = generate_envoy_config(ports, work_dir, name=f"front-{i}.yaml")
            envoy = EnvoyProcess(envoy_binary, config, log_dir, name=f"upd{i}-envoy-{version}")
            started.append(envoy.start())
            built.append(Node(extauthz, envoy, ports.listener))
    except BaseException:
        for proc in reversed(started):
            proc.stop()
        raise
    return UpdateStack(built, upstream, users_file)
