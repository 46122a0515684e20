"""Latency the way operators measure it.

* **One connection, one request at a time** (wrk ``-c1``): what a single request costs end to
  end with nothing queued in front of it, at the percentiles of :data:`SPECTRUM`.
* **A fixed offered rate, open loop** (h2load ``--rps``, Debian's ``nghttp2-client``):
  requests leave on a schedule whatever the answers do, so a slow answer cannot hold back the
  requests behind it (wrk's closed loop would: coordinated omission). h2load speaks HTTP/2 to
  Envoy (prior knowledge, many streams per connection), so a request never waits for a free
  connection on the client side; it logs every request (``--log-file``: start, status,
  duration). Latency is counted from each request's *intended* send time: when h2load itself
  falls behind its schedule (the machine is busy), the k-th request sent is taken as due at
  ``t0 + k / rate`` and its lateness is added to its latency (:func:`open_loop_stats`).
"""

from __future__ import annotations

import argparse
import re
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.probes import SPECTRUM, h2load_headers, parse_percentiles, parse_wrk, run_wrk
from benchmarks.scenarios import LABELS, BenchError
from benchmarks.stack import Stack
from benchmarks.throughput import add_counters, snapshot
from harness.ports import LOOPBACK

H2LOAD_CLIENTS = 4  # HTTP/2 connections; each sends rate / H2LOAD_CLIENTS requests per second
H2LOAD_STREAMS = 256  # concurrent streams per connection: never the limit below overload


def _bearer(stack: Stack, name: str) -> str | list[str]:
    return stack.spread.get(name) or stack.credentials[name]


# -- one connection ---------------------------------------------------------------------------


def one_connection(args: argparse.Namespace, stack: Stack, name: str) -> dict[str, Any]:
    """wrk with one connection (one request at a time) for ``args.latency_duration`` s."""
    port = stack.ports.listeners[name]
    if args.warmup:
        run_wrk(args, port, _bearer(stack, name), 1, connections=1)
    before = snapshot(stack)
    out = run_wrk(args, port, _bearer(stack, name), args.latency_duration, connections=1,
                  percentiles=True)  # fmt: skip
    result = parse_wrk(out) | {"scenario": name, "label": LABELS[name]}
    result["percentiles_ms"] = parse_percentiles(out)
    return add_counters(stack, name, before, result)


def added_latency(results: list[dict[str, Any]], baseline: str = "direct") -> None:
    """Add to each one-connection result ``added_ms``: its percentiles minus the
    ``baseline`` scenario's (what the auth step adds over Envoy alone)."""
    base = next((r["percentiles_ms"] for r in results if r["scenario"] == baseline), None)
    if base is None:
        return
    for r in results:
        r["added_ms"] = {p: v - base[p] for p, v in r["percentiles_ms"].items() if p in base}


# -- open loop --------------------------------------------------------------------------------


def h2load_argv(
    h2load: str, port: int, bearer: str, rate: float, count: int, log_file: Path
) -> list[str]:
    """h2load sending ``count`` requests at ``rate`` per second in all, then waiting for every
    answer (``-n``, not ``--duration``, which would drop the requests still in flight at the
    end: the slowest ones)."""
    clients = H2LOAD_CLIENTS if rate >= 4 * H2LOAD_CLIENTS and count >= H2LOAD_CLIENTS else 1
    return [
        h2load, "-t1", f"-c{clients}", f"-m{H2LOAD_STREAMS}", f"--rps={rate / clients:.3f}",
        f"-n{count}", "-H", f"authorization: Bearer {bearer}", *h2load_headers(),
        f"--log-file={log_file}", f"http://{LOOPBACK}:{port}/",
    ]  # fmt: skip


def parse_h2load(out: str) -> dict[str, int]:
    """h2load's summary: request counts (``started``, ``done``, ``succeeded``, ``failed``,
    ``errored``, ``timeout``) and status classes (``2xx`` ... ``5xx``)."""
    match = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
                      r"(\d+) failed, (\d+) errored, (\d+) timeout", out)  # fmt: skip
    codes = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", out)
    if not match or not codes:
        raise BenchError(f"h2load: no request summary in its output:\n{out}")
    names = ("total", "started", "done", "succeeded", "failed", "errored", "timeout")
    return dict(zip(names, map(int, match.groups()), strict=True)) | dict(
        zip(("2xx", "3xx", "4xx", "5xx"), map(int, codes.groups()), strict=True)
    )


def read_h2load_log(path: Path) -> list[tuple[int, int, int]]:
    """``(start µs since the epoch, status, duration µs)`` per request of h2load's
    ``--log-file`` (status -1: the stream failed)."""
    rows = []
    for line in path.read_text().splitlines():
        start, status, duration = line.split("\t")[:3]
        rows.append((int(start), int(status), int(duration)))
    return rows


def percentile(sorted_values: Sequence[float], p: float) -> float:
    """The nearest-rank ``p``-th percentile (0 <= p <= 100) of ascending values."""
    if not sorted_values:
        return float("nan")
    rank = max(1, -(-len(sorted_values) * p // 100))  # ceil(n p / 100), at least the first
    return sorted_values[int(min(rank, len(sorted_values))) - 1]


def open_loop_stats(rows: list[tuple[int, int, int]], rate: float) -> dict[str, Any]:
    """Latency from the intended send time, in ms, at :data:`SPECTRUM` (and 100: the max).

    The schedule is one request every ``1 / rate`` s from the first start; the k-th request
    sent (in start order) is due at ``t0 + k / rate``, and when it left later its lateness is
    added to its measured latency (never subtracted when it left early: h2load's clients each
    keep their own timer, so the merged order is only roughly the schedule's).
    """
    rows = sorted(rows)
    t0 = rows[0][0] if rows else 0
    corrected, lags = [], []
    for k, (start, _status, duration) in enumerate(rows):
        lag = max(0.0, start - t0 - k * 1e6 / rate)
        lags.append(lag)
        corrected.append((duration + lag) / 1000.0)
    corrected.sort()
    spread = [*SPECTRUM, 100.0]
    return {
        "percentiles_ms": {p: percentile(corrected, p) for p in spread},
        "sender_lag_max_ms": max(lags, default=0.0) / 1000.0,
        "sent_span_s": (rows[-1][0] - t0) / 1e6 if rows else 0.0,
        "achieved_rps": (len(rows) - 1) * 1e6 / (rows[-1][0] - t0) if len(rows) > 1 else 0.0,
    }


def open_loop(
    args: argparse.Namespace, stack: Stack, name: str, rate: float, duration: float
) -> dict[str, Any]:
    """h2load at ``rate`` requests/s, ``rate × duration`` requests, against one scenario,
    checked like a wrk run: ``requests``, ``non_2xx``, ``socket_errors`` and Envoy's
    counters; plus the achieved rate and the latency from the intended send time
    (:func:`open_loop_stats`)."""
    bearer = _bearer(stack, name)
    token = bearer if isinstance(bearer, str) else bearer[0]
    count = max(2, round(rate * duration))
    with tempfile.TemporaryDirectory(prefix="h2load-") as tmp:
        log = Path(tmp) / "requests.tsv"
        argv = h2load_argv(args.h2load, stack.ports.listeners[name], token, rate, count, log)
        before = snapshot(stack)
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 60,
                              check=False)  # fmt: skip
        if proc.returncode != 0:
            raise BenchError(f"h2load exited {proc.returncode}: {proc.stderr.strip()}")
        rows = read_h2load_log(log)
    summary = parse_h2load(proc.stdout)
    result: dict[str, Any] = {"scenario": name, "label": LABELS[name], "rate": rate,
                              "duration_s": duration, "scheduled": count,
                              "h2load": summary}  # fmt: skip
    result["requests"] = len(rows)
    result["non_2xx"] = sum(1 for _, status, _ in rows if not 200 <= status < 300)
    # requests that got no answer at all
    result["socket_errors"] = max(summary["errored"] + summary["timeout"] + summary["failed"],
                                  count - len(rows))  # fmt: skip
    result |= open_loop_stats(rows, rate)
    return add_counters(stack, name, before, result)


def check_rate(result: dict[str, Any], tolerance: float = 0.9) -> list[str]:
    """The load generator must have kept the schedule: its requests left at no less than
    ``tolerance`` × the offered rate (else the figures describe a lighter load)."""
    if result["achieved_rps"] < tolerance * result["rate"]:
        return [f"{result['scenario']}: h2load sent {result['achieved_rps']:.0f} requests/s, "
                f"not the {result['rate']:.0f}/s offered: the machine could not keep the rate"]
    return []
