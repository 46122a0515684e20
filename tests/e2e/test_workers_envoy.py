"""``server.workers`` through a real Envoy: the generated front proxy lists one ``extauthz_grpc``
endpoint per worker, and Envoy spreads Checks over them, so every worker answers some of 1,000
Checks; a worker killed meanwhile costs next to none. Which worker answered is the ``node_id``
of the CheckResponse's dynamic metadata (``<server.node_id>-w<i>``), which Envoy's access log
prints."""

from __future__ import annotations

import collections
import http.client
import os
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import RedisServer, Stack, start_stack, wait_until

pytestmark = pytest.mark.e2e

WORKERS = 2
CHECKS = 1000


@pytest.fixture(scope="module")
def stack(
    envoy_binary: str, redis_process: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    work = tmp_path_factory.mktemp("workers-stack")
    started = start_stack(
        envoy_binary, work, redis_url=redis_process.url, workers=WORKERS,
        env={"EXTAUTHZ_STORE_KEY_PREFIX": f"workers-{work.name}:"},
    )  # fmt: skip
    yield started
    started.stop()


def test_the_front_proxy_has_one_endpoint_per_worker(stack: Stack) -> None:
    import yaml

    config = yaml.safe_load(Path(stack.envoy.config_path).read_text())
    (cluster,) = [c for c in config["static_resources"]["clusters"] if c["name"] == "extauthz_grpc"]
    ports = [
        e["endpoint"]["address"]["socket_address"]["port_value"]
        for e in cluster["load_assignment"]["endpoints"][0]["lb_endpoints"]
    ]
    assert ports == [stack.ports.grpc + i for i in range(WORKERS)]


def test_envoy_spreads_checks_over_every_worker(stack: Stack) -> None:
    token = stack.create_session("spread")
    before = len(stack.envoy.access_log())
    conn = http.client.HTTPConnection("127.0.0.1", stack.ports.listener, timeout=10)
    statuses: collections.Counter[int] = collections.Counter()
    try:
        for _ in range(CHECKS):
            conn.request("GET", "/hello", headers={"Authorization": f"Bearer {token}"})
            response = conn.getresponse()
            response.read()
            statuses[response.status] += 1
    finally:
        conn.close()
    assert statuses == {200: CHECKS}, statuses

    def answered() -> list[dict[str, object]] | None:
        lines = [e for e in stack.envoy.access_log()[before:] if e.get("path") == "/hello"]
        return lines if len(lines) >= CHECKS else None

    lines = wait_until(answered, timeout=10, description=f"{CHECKS} access-log lines")
    per_worker = collections.Counter(str(line["node_id"]) for line in lines)
    print(f"Checks per worker ({stack.envoy.name}): {dict(sorted(per_worker.items()))}")
    assert set(per_worker) == {f"demo-1-w{i}" for i in range(WORKERS)}, per_worker
    assert all(count > 0 for count in per_worker.values())


def test_a_killed_worker_costs_envoy_next_to_no_checks(stack: Stack) -> None:
    """The dead worker's endpoint is ejected at its first refused connection (the generated
    cluster's outlier detection): the other worker answers meanwhile, until the supervisor has
    started a new one."""
    token = stack.create_session("kill")
    log = stack.extauthz.stderr_path
    pid = int(re.findall(r"worker 1 started \(pid (\d+)\)", log.read_text())[-1])
    serving_before = log.read_text().count("worker 1 serves")
    statuses: collections.Counter[int] = collections.Counter()
    conn = http.client.HTTPConnection("127.0.0.1", stack.ports.listener, timeout=10)
    try:
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 60
        while log.read_text().count("worker 1 serves") == serving_before:
            assert time.monotonic() < deadline, stack.extauthz.tail(40)
            conn.request("GET", "/hello", headers={"Authorization": f"Bearer {token}"})
            response = conn.getresponse()
            response.read()
            statuses[response.status] += 1
    finally:
        conn.close()
    print(f"while worker 1 was down ({stack.envoy.name}): {dict(statuses)}")
    assert set(statuses) <= {200, 503} and statuses[200] >= 50, statuses
    assert statuses[503] <= max(5, sum(statuses.values()) // 50), statuses
