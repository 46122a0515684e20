"""The benchmark's arithmetic, without processes: h2load's output, latency from the intended send
time (coordinated omission), the soak's verdict, wrk's percentile lines and the report's
targets. ``tests/e2e/test_bench_config.py`` runs the whole benchmark briefly."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from benchmarks.latency import open_loop_stats, parse_h2load, percentile, read_h2load_log
from benchmarks.probes import parse_percentiles
from benchmarks.report_md import render_markdown, store_section, targets_section
from benchmarks.scenarios import BenchError
from benchmarks.soak import SoakBounds, judge_soak, windows_for

H2LOAD_OUTPUT = """\
finished in 2.00s, 200.00 req/s, 10.51KB/s
requests: 400 total, 404 started, 398 done, 395 succeeded, 5 failed, 2 errored, 1 timeout
status codes: 395 2xx, 0 3xx, 2 4xx, 1 5xx
traffic: 21.02KB (21528) total, 3.52KB (3600) headers (space savings 88.00%), 1.17KB (1200) data
"""


def test_parse_h2load_reads_counts_and_status_classes() -> None:
    summary = parse_h2load(H2LOAD_OUTPUT)
    assert summary["started"] == 404 and summary["done"] == 398
    assert (summary["failed"], summary["errored"], summary["timeout"]) == (5, 2, 1)
    assert (summary["2xx"], summary["4xx"], summary["5xx"]) == (395, 2, 1)
    with pytest.raises(BenchError):
        parse_h2load("finished in 2.00s")


def test_read_h2load_log(tmp_path: Path) -> None:
    log = tmp_path / "log.tsv"
    log.write_text("1700000000000000\t200\t812\n1700000000005000\t-1\t0\n")
    assert read_h2load_log(log) == [(1700000000000000, 200, 812), (1700000000005000, -1, 0)]


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50 and percentile(values, 99) == 99
    assert percentile(values, 99.9) == 100 and percentile(values, 0) == 1
    assert percentile(values, 100) == 100


def test_a_sender_that_keeps_its_schedule_adds_nothing() -> None:
    # 100 requests/s, each sent on time, each answered in 2 ms
    rows = [(1_000_000 + k * 10_000, 200, 2_000) for k in range(100)]
    stats = open_loop_stats(rows, rate=100.0)
    assert stats["sender_lag_max_ms"] == 0
    assert stats["percentiles_ms"][50.0] == stats["percentiles_ms"][100.0] == 2.0
    assert stats["achieved_rps"] == pytest.approx(100.0)


def test_latency_counts_from_the_intended_send_time() -> None:
    # the sender stalls for 200 ms after the 10th request; the requests it then sends late
    # were due earlier, and the wait counts into their latency (coordinated omission)
    rows = [(k * 10_000 + (200_000 if k >= 10 else 0), 200, 1_000) for k in range(100)]
    stats = open_loop_stats(rows, rate=100.0)
    assert stats["sender_lag_max_ms"] == pytest.approx(200.0)
    assert stats["percentiles_ms"][50.0] == pytest.approx(201.0)
    assert stats["percentiles_ms"][0.0] == pytest.approx(1.0)
    assert stats["achieved_rps"] < 90


def test_parse_percentiles_from_the_wrk_hook() -> None:
    out = "Running 1s test\npercentile 50 812\npercentile 99.9 12034\npercentile 0 91\n"
    assert parse_percentiles(out) == {50.0: 0.812, 99.9: 12.034, 0.0: 0.091}
    with pytest.raises(BenchError):
        parse_percentiles("Running 1s test\n")


def _window(p99: float, rss: dict[str, float | None], problems: list[str] | None = None
            ) -> dict[str, Any]:  # fmt: skip
    return {"percentiles_ms": {99.0: p99}, "rss_mib": rss, "problems": problems or []}


def test_a_steady_soak_passes() -> None:
    windows = [_window(2.0, {"1": 70.0}), _window(2.4, {"1": 71.0}), _window(2.6, {"1": 73.5})]
    assert judge_soak(windows, SoakBounds()) == []


@pytest.mark.parametrize(
    ("last", "wanted"),
    [
        (_window(2.0, {"1": 76.0}), "grew from 70.0 to 76.0 MiB"),
        (_window(4.5, {"1": 70.0}), "p99 drifted"),
        (_window(2.0, {}), "process 1 is gone"),
        (_window(2.0, {"1": 70.0}, ["3 non-2xx responses"]), "soak window 2: 3 non-2xx"),
    ],
)
def test_a_soak_fails_on_growth_drift_loss_or_error(last: dict[str, Any], wanted: str) -> None:
    problems = judge_soak([_window(2.0, {"1": 70.0}), last], SoakBounds())
    assert any(wanted in p for p in problems), problems


def test_soak_windows() -> None:
    assert windows_for(10) == (10, 60.0)
    assert windows_for(1) == (5, 12.0)
    assert windows_for(0.05) == (5, 2.0)


def _throughput(name: str, rps: float, cpu_us: float) -> dict[str, Any]:
    return {"scenario": name, "rps": rps, "cpu_us_per_request": {"extauthz": cpu_us}}


def test_targets_compare_extauthz_with_the_noop_server() -> None:
    report = {
        "scenarios": [
            _throughput("ext_authz_noop", 4000, 200), _throughput("ext_authz", 3600, 220)
        ],
        "one_connection": [
            {"scenario": "ext_authz_noop", "added_ms": {50.0: 0.4}},
            {"scenario": "ext_authz", "added_ms": {50.0: 0.6}},
        ],
    }
    text = targets_section(report)
    assert "| CPU per cached Check, × the no-op server's | 1.10 | ≤ 1.15 | met |" in text
    assert "| throughput, × the no-op server's | 0.90 | ≥ 0.85 | met |" in text
    assert "1.50 (0.600 vs 0.400 ms) | ≤ 1.15 | not met |" in text


def test_the_report_names_its_run_and_lists_problems(tmp_path: Path) -> None:
    report = {
        "date": "2026-11-30T20:00:00+0000", "command": "python benchmarks/bench.py",
        "machine": {"cpus": 2, "cpu_model": "x", "kernel": "6", "python": "3.11.7"},
        "extauthz": {"version": "0.1.0", "commit": "0123456789abcdef"}, "envoy": "1.40.0",
        "envoy_concurrency": 1, "wrk": "wrk 4.1.0", "redis": "Redis 7", "problems": ["boom"],
    }  # fmt: skip
    text = render_markdown(report, tmp_path / "r.md")
    assert "`0123456789ab`" in text and "Envoy 1.40.0" in text
    assert "## Problems (the run failed)\n\n* boom" in text


def test_the_store_figures_against_their_targets() -> None:
    figures = {"sessions": 2000, "concurrency": 50, "bytes_per_session": 388.2,
               "keys_per_session": 2.0, "creates_per_second": 4100,
               "python_cpu_us_per_create": 120.5, "redis_cpu_us_per_create": 30.1,
               "redis_version": "7.0.15", "processes": 2, "node_creates_per_second": 4900,
               "node_python_cpu_us_per_create": 130.0}  # fmt: skip
    text = store_section({"store_bench": {"figures": figures}})
    assert "| 388.2 | ≤ 400 | met |" in text
    # the target is per node (every worker process of one node at once), not per process
    assert "one process | 4100 |  |" in text
    assert "one node (2 processes at once) | 4900 | ≥ 5000 | not met |" in text
    figures["node_creates_per_second"] = 8200
    assert "| 8200 | ≥ 5000 | met |" in store_section({"store_bench": {"figures": figures}})
    note = store_section({"store_bench": {"note": "Not measured: no store_bench.py."}})
    assert note.endswith("Not measured: no store_bench.py.")
