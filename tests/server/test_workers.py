"""``extauthz serve`` with ``server.workers = 2``, as real processes: a worker killed with SIGKILL
is started again and, until it serves, gRPC health is ``NOT_SERVING`` on the other worker too;
SIGTERM drains every worker (Checks in flight are answered) and the supervisor exits 0 with no
worker left; the supervisor killed with SIGKILL takes its workers with it; a worker's settings
error (its gRPC port taken) stops the node with exit status 2."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from envoy.service.auth.v3 import external_auth_pb2_grpc

from extauthz.server.shutdown import MARGIN_SECONDS
from harness import REPO_ROOT
from harness.extauthz import ensure_signing_key
from harness.ports import free_port, free_ports
from harness.stack import DEMO_SETTINGS
from tests.fixtures.core import bearer_request
from tests.support import (
    ExtauthzProcess,
    RedisServer,
    grpc_health_serving,
    port_accepts,
    wait_until,
)
from tests.support.tcp_proxy import TcpProxy

pytestmark = pytest.mark.e2e

GRACE = 3.0
# a fresh interpreter importing the node, on a busy 2-core machine
START_SECONDS = 60.0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (exited, not yet reaped by its parent) counts as gone
    with open(f"/proc/{pid}/stat") as fh:
        return fh.read().rsplit(")", 1)[1].split()[0] != "Z"


def worker_pids(node: ExtauthzProcess) -> dict[int, int]:
    """The latest pid of each worker, from the supervisor's log."""
    pids: dict[int, int] = {}
    for match in re.finditer(r"worker (\d+) started \(pid (\d+)\)", node.stderr_path.read_text()):
        pids[int(match[1])] = int(match[2])
    return pids


def start_node(tmp_path: Path, redis_url: str, **settings: str) -> ExtauthzProcess:
    keys = tmp_path / "keys"
    ensure_signing_key(keys)
    env = {
        "EXTAUTHZ_STORE_BACKEND": "redis", "EXTAUTHZ_STORE_REDIS_URL": redis_url,
        "EXTAUTHZ_STORE_KEY_PREFIX": f"workers-{uuid.uuid4().hex[:8]}:",
        "EXTAUTHZ_JWT_KEYS_DIR": str(keys), "EXTAUTHZ_SERVER_SHUTDOWN_GRACE_SECONDS": str(GRACE),
        **{f"EXTAUTHZ_{k.upper()}": v for k, v in settings.items()},
    }  # fmt: skip
    node = ExtauthzProcess(DEMO_SETTINGS, tmp_path / "logs", env=env, workers=2)
    node.ready_timeout = START_SECONDS
    return node.start()


@pytest.fixture
def node(tmp_path: Path, redis_server: RedisServer) -> Iterator[ExtauthzProcess]:
    started = start_node(tmp_path, redis_server.url)
    yield started
    started.stop()


def test_a_killed_worker_is_replaced_and_the_node_is_not_serving_until_it_is_back(
    node: ExtauthzProcess,
) -> None:
    first, second = node.grpc_ports
    before = worker_pids(node)
    assert set(before) == {0, 1} and all(_alive(pid) for pid in before.values())
    os.kill(before[1], signal.SIGKILL)
    wait_until(lambda: not grpc_health_serving(first), timeout=5, description="NOT_SERVING",
               diagnostics=lambda: node.tail(40))  # fmt: skip
    # until the new worker serves, the other one says NOT_SERVING: it never says SERVING while
    # the second port does not answer
    deadline = time.monotonic() + START_SECONDS
    while not (grpc_health_serving(first) and grpc_health_serving(second)):
        assert time.monotonic() < deadline, node.tail(60)
        if grpc_health_serving(first):
            assert port_accepts(second), "SERVING while a worker is down"
        time.sleep(0.05)
    after = worker_pids(node)
    assert after[0] == before[0] and after[1] != before[1] and _alive(after[1])
    log = node.stderr_path.read_text()
    assert f"worker 1 (pid {before[1]}) exited with -9; starting it again" in log


def test_sigterm_drains_every_worker_and_the_supervisor_exits_0(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    """Redis hangs (a frozen relay) while each worker has a Check in flight; SIGTERM; the
    Checks are answered once Redis answers again, within the grace, then every process ends."""
    with TcpProxy(redis_server.address) as proxy:
        node = start_node(
            tmp_path, proxy.url, cache_enabled="false", store_timeout_seconds="10",
            store_check_budget_ms="15000", server_ext_authz_timeout_ms="16000",
            server_health_check_interval_seconds="5",
        )  # fmt: skip
        try:
            token = node.create_session("drain")
            channels = [grpc.insecure_channel(f"127.0.0.1:{port}") for port in node.grpc_ports]
            stubs = [external_auth_pb2_grpc.AuthorizationStub(c) for c in channels]
            pids = worker_pids(node)
            proxy.freeze()
            in_flight = [stub.Check.future(bearer_request(token), timeout=30) for stub in stubs]
            time.sleep(0.3)
            assert not any(call.done() for call in in_flight)
            assert node.pid is not None
            os.kill(node.pid, signal.SIGTERM)
            time.sleep(0.5)
            assert not any(call.done() for call in in_flight)  # draining, still waiting
            proxy.thaw()
            for call in in_flight:
                reply = call.result(timeout=GRACE + MARGIN_SECONDS)
                assert reply.status.code == 0 and reply.HasField("ok_response")
            assert node.wait(GRACE + MARGIN_SECONDS + 5) == 0, node.tail(60)
            assert not any(_alive(pid) for pid in pids.values())
            assert "supervisor: every worker stopped" in node.stderr_path.read_text()
            for channel in channels:
                channel.close()
        finally:
            node.stop()


def test_the_workers_drain_when_the_supervisor_is_killed(node: ExtauthzProcess) -> None:
    pids = worker_pids(node)
    node.kill9()
    wait_until(
        lambda: not any(_alive(pid) for pid in pids.values()),
        timeout=GRACE + MARGIN_SECONDS + 5, description="the workers to exit",
        diagnostics=lambda: node.tail(40),
    )  # fmt: skip
    assert "the supervisor is gone; draining" in node.stderr_path.read_text()


def test_a_worker_that_cannot_bind_its_grpc_port_stops_the_node_with_2(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    """Worker 1's port (grpc_listen's + 1) is taken: a settings error, not a restart loop."""
    keys = tmp_path / "keys"
    ensure_signing_key(keys)
    first = free_ports(2)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", first + 1))
        taken.listen()
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("EXTAUTHZ_")},
            "EXTAUTHZ_STORE_BACKEND": "redis", "EXTAUTHZ_STORE_REDIS_URL": redis_server.url,
            "EXTAUTHZ_JWT_KEYS_DIR": str(keys), "EXTAUTHZ_SERVER_WORKERS": "2",
            "EXTAUTHZ_SERVER_GRPC_LISTEN": f"127.0.0.1:{first}",
            "EXTAUTHZ_SERVER_HTTP_LISTEN": f"127.0.0.1:{free_port()}",
            "EXTAUTHZ_ADMIN_ENABLED": "false",
        }  # fmt: skip
        done = subprocess.run(
            [sys.executable, "-m", "extauthz", "serve", "--config", str(DEMO_SETTINGS)],
            env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=START_SECONDS + 20,
            check=False,
        )  # fmt: skip
    assert done.returncode == 2, done.stderr[-3000:]
    assert f"server.grpc_listen: cannot listen on 127.0.0.1:{first + 1}" in done.stderr
    assert "stopped on a settings error; stopping" in done.stderr
    assert "starting it again" not in done.stderr
