"""``bench.py --soak MINUTES``: the default extauthz (session cache on) under a steady open-loop
load at 70 % of its measured peak for MINUTES, in windows; it fails on any error, on growth
of the resident memory of an extauthz process, or on a p99 that drifts upwards.

The bounds (defaults of :class:`SoakBounds`, options of bench.py):

* **RSS growth ≤ 5 MiB per process** between the end of the first window and the end of the
  last. By the end of the first window every cache is at its working size (the session cache
  holds the run's session, the JWT cache its token, grpc's and asyncio's free lists are
  warm), so what may still move is the allocator's own noise (arenas kept or returned), which
  stays within a few MiB. A leak of one small object per Check (≥ 50 bytes) at ~2,000 Checks/s
  grows the process by ≥ 6 MiB a minute: a one-minute soak sees it, a ten-minute one sees a
  leak of 5 bytes per Check.
* **p99 drift**: the last window's p99 (from the intended send time) must stay within
  1.5 × the first window's p99 + 1 ms. Queueing that builds up (a rate the process cannot
  keep any more, a cache that stops answering, GC pauses growing with the heap) moves the p99
  by multiples; the 1 ms absorbs the scheduler noise of a shared machine on sub-millisecond
  figures.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any

from benchmarks.latency import check_rate, open_loop
from benchmarks.memory import rss_by_process
from benchmarks.stack import Stack, say
from benchmarks.throughput import check_run

SOAK_SCENARIO = "ext_authz"


@dataclass(frozen=True)
class SoakBounds:
    rss_growth_mib: float = 5.0
    p99_factor: float = 1.5
    p99_slack_ms: float = 1.0


def windows_for(minutes: float) -> tuple[int, float]:
    """``(count, seconds)``: one-minute windows for soaks of five minutes or more, else five
    windows (at least 2 s each)."""
    total = minutes * 60.0
    if total >= 300:
        return int(total // 60), 60.0
    return 5, max(2.0, total / 5)


def soak(
    args: argparse.Namespace, stack: Stack, peak_rps: float, minutes: float
) -> dict[str, Any]:
    """Run the soak and judge it (:func:`judge_soak`); prints one line per window."""
    rate = args.soak_fraction * peak_rps
    count, seconds = windows_for(minutes)
    root = stack.extauthz.pid
    assert root is not None
    say(f"soak: {count} windows of {seconds:.0f} s at {rate:.0f} req/s "
        f"({args.soak_fraction:.0%} of the measured peak {peak_rps:.0f} req/s)")  # fmt: skip
    windows = []
    for i in range(count):
        run = open_loop(args, stack, SOAK_SCENARIO, rate, seconds)
        rss = {str(pid): v.get("VmRSS") for pid, v in rss_by_process(root).items()}
        run["rss_mib"] = rss
        run["problems"] = check_run(SOAK_SCENARIO, run) + check_rate(run)
        windows.append(run)
        pct = run["percentiles_ms"]
        say(f"soak window {i + 1}/{count}: {run['achieved_rps']:.0f} req/s, p50 {pct[50.0]:.2f} "
            f"p99 {pct[99.0]:.2f} p99.9 {pct[99.9]:.2f} max {pct[100.0]:.2f} ms, "
            f"errors {run['non_2xx'] + run['socket_errors']}, RSS MiB "
            + " ".join(f"{v:.1f}" for v in rss.values() if v is not None))  # fmt: skip
    bounds = SoakBounds(args.soak_rss_growth_mib, args.soak_p99_factor, args.soak_p99_slack_ms)
    return {"minutes": minutes, "rate": rate, "peak_rps": peak_rps, "window_s": seconds,
            "bounds": bounds.__dict__, "windows": windows,
            "problems": judge_soak(windows, bounds)}  # fmt: skip


def judge_soak(windows: list[dict[str, Any]], bounds: SoakBounds) -> list[str]:
    """What makes a soak fail: any window's problem (an error, a missed rate), an extauthz
    process whose RSS grew by more than ``bounds.rss_growth_mib`` from the first window to the
    last (or that disappeared), a last-window p99 above ``p99_factor × first + p99_slack_ms``.
    """
    problems = [f"soak window {i + 1}: {p}" for i, w in enumerate(windows) for p in w["problems"]]
    if len(windows) < 2:
        return [*problems, "soak: fewer than two windows, nothing to compare"]
    first, last = windows[0], windows[-1]
    for pid, start in first["rss_mib"].items():
        end = last["rss_mib"].get(pid)
        if start is None or end is None:
            problems.append(f"soak: extauthz process {pid} is gone")
        elif end - start > bounds.rss_growth_mib:
            problems.append(f"soak: extauthz process {pid} grew from {start:.1f} to {end:.1f} "
                            f"MiB (bound: {bounds.rss_growth_mib:g} MiB)")  # fmt: skip
    p99_first, p99_last = first["percentiles_ms"][99.0], last["percentiles_ms"][99.0]
    limit = bounds.p99_factor * p99_first + bounds.p99_slack_ms
    if p99_last > limit:
        problems.append(f"soak: p99 drifted from {p99_first:.2f} ms (first window) to "
                        f"{p99_last:.2f} ms (last), above {limit:.2f} ms")  # fmt: skip
    return problems
