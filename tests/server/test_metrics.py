"""/metrics: ``prometheus_client``'s exposition of the node's series, on a registry of each
node's own, and the workers' shared directory (multiprocess mode) when there is one."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from extauthz.check.decisions import Allow, Deny
from extauthz.server.metrics import GAUGE_MODES, Metrics, NodeState
from extauthz.strategies import StoreStrategy
from tests.support.metrics_text import families, parse, value


def test_the_active_strategy_is_the_only_one_set() -> None:
    s = parse(Metrics({"version": "1", "node_id": "n1", "store_strategy": "replicated"}).render())
    assert value(s, "extauthz_store_strategy", strategy="replicated") == 1
    assert value(s, "extauthz_store_strategy", strategy="central") == 0
    assert value(s, "extauthz_store_strategy", strategy="sticky") == 0
    info = {"version": "1", "node_id": "n1", "store_strategy": "replicated"}
    assert value(s, "extauthz_info", **info) == 1


def test_every_strategy_has_exactly_one_sample() -> None:
    s = parse(Metrics({"store_strategy": "sticky"}).render())
    found = {dict(labels)["strategy"]: v for (n, labels), v in s.items()
             if n == "extauthz_store_strategy"}  # fmt: skip
    assert sorted(found) == sorted(x.value for x in StoreStrategy)
    assert sum(found.values()) == 1


def test_decisions_are_counted_by_decision_and_reason() -> None:
    metrics = Metrics({"store_strategy": "central"})
    for _ in range(3):
        metrics.count_decision("allow", "session_valid")
    metrics.count_decision("deny", "unknown_session")
    s = parse(metrics.render())
    name = "extauthz_check_decisions_total"
    assert value(s, name, decision="allow", reason="session_valid") == 3
    assert value(s, name, decision="deny", reason="unknown_session") == 1
    metrics.count_decision("deny", "unknown_session")  # counted since the last scrape only once
    assert value(parse(metrics.render()), name, decision="deny", reason="unknown_session") == 2


def test_label_values_are_escaped() -> None:
    text = Metrics({"node_id": 'a"b\\c\nd', "store_strategy": "sticky"}).render()
    assert 'node_id="a\\"b\\\\c\\nd"' in text
    s = parse(text)  # one sample per line, or the parser would fail
    assert value(s, "extauthz_info", node_id='a"b\\c\nd', store_strategy="sticky") == 1


def test_session_updates_are_counted_by_result_and_reason() -> None:
    metrics = Metrics({"store_strategy": "central"})
    assert "extauthz_session_updates_total{" not in metrics.render()
    metrics.count_session_update("applied", "merge_patch")
    metrics.count_session_update("applied", "merge_patch")
    metrics.count_session_update("refused", "key_not_allowed")
    metrics.count_session_update("dropped_cookie", 'odd"cluster')
    text = metrics.render()
    assert families(text)["extauthz_session_updates"] == "counter"
    s = parse(text)
    name = "extauthz_session_updates_total"
    assert value(s, name, result="applied", reason="merge_patch") == 2
    assert value(s, name, result="refused", reason="key_not_allowed") == 1
    assert value(s, name, result="dropped_cookie", reason='odd"cluster') == 1


def test_check_latency_is_a_histogram_by_decision() -> None:
    metrics = Metrics({"store_strategy": "central"})
    metrics.observe_check(Allow(), time.perf_counter() - 0.0003)
    metrics.observe_check(Deny(401), time.perf_counter())
    metrics.observe_unavailable(time.perf_counter() - 0.2)
    text = metrics.render()
    assert families(text)["extauthz_check_duration_seconds"] == "histogram"
    s = parse(text)
    name = "extauthz_check_duration_seconds"
    for decision in ("allow", "deny", "unavailable"):
        assert value(s, f"{name}_count", decision=decision) == 1
    # buckets for 0.1 ms to 1 s: a 0.3 ms Check is not in the 0.25 ms bucket, is in 0.5 ms
    assert value(s, f"{name}_bucket", decision="allow", le="0.00025") == 0
    assert value(s, f"{name}_bucket", decision="allow", le="0.0005") == 1
    assert value(s, f"{name}_bucket", decision="unavailable", le="0.1") == 0
    assert value(s, f"{name}_bucket", decision="unavailable", le="1.0") == 1


def test_two_nodes_in_one_process_do_not_share_series() -> None:
    a, b = Metrics({"node_id": "a"}), Metrics({"node_id": "b"})
    a.count_login("signed_in")
    a.count_rate_limited("login:user")
    sa, sb = parse(a.render()), parse(b.render())
    assert value(sa, "extauthz_logins_total", outcome="signed_in") == 1
    assert value(sb, "extauthz_logins_total", outcome="signed_in") == 0
    assert value(sa, "extauthz_rate_limited_total", scope="login:user") == 1
    assert value(sb, "extauthz_rate_limited_total", scope="login:user") is None


# -- several workers: prometheus_client's multiprocess mode, with real processes ---------------

WORKER = textwrap.dedent(
    """
    import sys, time
    from extauthz.check.decisions import Allow
    from extauthz.server.metrics import Metrics, NodeState
    channel, offset = sys.argv[1], float(sys.argv[2])
    pools = {"primary": {"waits": 2, "exhausted": 1}}
    m = Metrics({"store_strategy": "central", "node_id": "n1"}, workers=2,
                multiprocess_dir=sys.argv[3], state=lambda: NodeState(channel, 0 if channel == "up"
                else 4.0, 3, offset, cache_hits=5), redis_pools=lambda: pools,
                signing_key_age=lambda: offset + 100)
    m.count_decision("allow", "session_valid")
    m.count_decision("allow", "session_valid")
    m.observe_check(Allow(), time.perf_counter())
    m.count_login("signed_in")
    m.store_observer("primary")("get", 0.001)
    m.sync()
    """
)
SCRAPE = textwrap.dedent(
    """
    import sys
    from extauthz.server.metrics import Metrics
    m = Metrics({"store_strategy": "central", "node_id": "n1"}, workers=2,
                multiprocess_dir=sys.argv[1])
    sys.stdout.write(m.render())
    """
)


def _python(code: str, *args: str, directory: Path) -> str:
    env = dict(os.environ, PROMETHEUS_MULTIPROC_DIR=str(directory))
    done = subprocess.run(
        [sys.executable, "-c", code, *args], env=env, capture_output=True, text=True,
        timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.e2e
def test_a_scrape_adds_up_every_workers_series(tmp_path: Path) -> None:
    """Two worker processes write into one directory, a third answers the scrape."""
    _python(WORKER, "up", "0.25", str(tmp_path), directory=tmp_path)
    _python(WORKER, "down", "-0.5", str(tmp_path), directory=tmp_path)
    text = _python(SCRAPE, str(tmp_path), directory=tmp_path)
    s = parse(text)
    name = "extauthz_check_decisions_total"
    assert value(s, name, decision="allow", reason="session_valid") == 4  # summed
    assert value(s, "extauthz_check_duration_seconds_count", decision="allow") == 2
    assert value(s, "extauthz_logins_total", outcome="signed_in") == 2
    assert value(s, "extauthz_store_operation_duration_seconds_count", operation="get",
                 role="primary") == 2  # fmt: skip
    assert value(s, "extauthz_cache_hits_total") == 10
    assert value(s, "extauthz_redis_pool_exhausted_total", role="primary") == 2
    # gauges, by their modes: one worker's channel down shows; the oldest key shows
    assert GAUGE_MODES["extauthz_cache_channel_up"] == "livemin"
    assert value(s, "extauthz_cache_channel_up") == 0
    assert value(s, "extauthz_cache_channel_down_seconds") == 4.0
    assert value(s, "extauthz_signing_key_age_seconds") == 100.25
    assert value(s, "extauthz_clock_offset_seconds") == -0.5  # the most recent
    # the node's configuration once, from the worker that answered (no pid label)
    assert value(s, "extauthz_workers") == 2
    assert value(s, "extauthz_info", store_strategy="central", node_id="n1") == 1
    assert value(s, "extauthz_store_strategy", strategy="central") == 1
    assert not any("pid" in dict(labels) for _, labels in s)


def test_without_the_directory_a_process_keeps_its_own_registry(tmp_path: Path) -> None:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        pytest.skip("this test process runs in multiprocess mode")
    metrics = Metrics({"store_strategy": "central"}, state=lambda: NodeState("up"))
    metrics.count_decision("allow", "session_valid")
    s = parse(metrics.render())
    assert value(s, "extauthz_check_decisions_total", decision="allow",
                 reason="session_valid") == 1  # fmt: skip
    assert value(s, "extauthz_cache_channel_up") == 1
    assert list(tmp_path.iterdir()) == []
