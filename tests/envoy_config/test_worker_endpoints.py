"""``extauthz envoy-config`` and ``server.workers``: one ``extauthz_grpc`` endpoint per worker
(worker ``i`` of a node on the node's gRPC port + ``i``), from the settings or ``--workers``;
the HTTP cluster keeps one endpoint per node (its workers share the listener)."""

from __future__ import annotations

from pathlib import Path

import pytest

from extauthz.cli import main
from tests.envoy_config.test_generator import _clusters, _hosts, _run

REDIS_WORKERS = """
[server]
grpc_listen = "0.0.0.0:7001"
http_listen = "127.0.0.1:7100"
workers = 3
[store]
strategy = "central"
backend = "redis"
"""


def test_the_settings_give_one_grpc_endpoint_per_worker(tmp_path: Path) -> None:
    clusters = _clusters(_run(tmp_path, "front", settings=REDIS_WORKERS))
    grpc = ["127.0.0.1:7001", "127.0.0.1:7002", "127.0.0.1:7003"]
    assert _hosts(clusters["extauthz_grpc"]) == grpc
    assert _hosts(clusters["extauthz_http"]) == ["127.0.0.1:7100"]
    assert clusters["extauthz_grpc"].get("lb_policy", "ROUND_ROBIN") == "ROUND_ROBIN"  # default


def test_workers_option_spreads_each_node(tmp_path: Path) -> None:
    doc = _run(tmp_path, "sidecar", "--workers", "2", "--extauthz-grpc", "a:9001,b:9101")
    assert _hosts(_clusters(doc)["extauthz_grpc"]) == ["a:9001", "a:9002", "b:9101", "b:9102"]
    one = _run(tmp_path, "front", "--workers", "1", settings=REDIS_WORKERS)
    assert _hosts(_clusters(one)["extauthz_grpc"]) == ["127.0.0.1:7001"]


@pytest.mark.parametrize(
    "args",
    [
        ["front", "--workers", "0"],
        ["front", "--workers", "2", "--extauthz-grpc", "127.0.0.1:65535"],
        ["sticky", "--workers", "2"],  # the sticky front pins nodes: the sidecars spread
    ],
)
def test_bad_worker_counts_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str]
) -> None:
    config = tmp_path / "extauthz.toml"
    config.write_text("")
    assert main(["envoy-config", *args, "--config", str(config)]) == 2
    assert "--workers" in capsys.readouterr().err
