"""bench.py's command line: every phase's parameters, and the short ones of ``--smoke``."""

from __future__ import annotations

import argparse
import os
from pathlib import Path


def _workers(text: str) -> list[int]:
    counts = [int(part) for part in text.split(",") if part.strip()]
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError("a comma-separated list of worker counts, each ≥ 1")
    return counts


def parse_args(argv: list[str] | None, description: str) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=description)
    add = p.add_argument
    add("--duration", type=int, default=10, help="seconds of measured wrk load per scenario")
    add("--warmup", type=int, default=2, help="seconds of unmeasured load before each")
    add("--connections", type=int, default=32, help="wrk connections (-c)")
    add("--threads", type=int, default=1, help="wrk threads (-t)")
    add("--latency-duration", type=int, default=5,
        help="seconds of one-connection load per scenario (wrk -c1)")  # fmt: skip
    add("--open-loop-fraction", type=float, default=0.5,
        help="the open-loop rate as a fraction of the lower of the no-op server's and "
             "extauthz's (cache on) measured peaks (0.5)")  # fmt: skip
    add("--open-loop-duration", type=float, default=10.0,
        help="seconds of open-loop load per scenario (10)")  # fmt: skip
    add("--scaling", type=_workers, metavar="N,N,...",
        default=list(range(1, (os.cpu_count() or 1) + 1)),
        help="server.workers counts of the scaling run (default: 1 to the CPU count)")
    add("--no-scaling", action="store_true", help="skip the scaling run")
    add("--checks-for-memory", type=int, default=200_000, metavar="N",
        help="Checks driven before reading each extauthz process's RSS (0: skip; the issue's "
             "target is stated after 1000000)")  # fmt: skip
    add("--soak", type=float, metavar="MINUTES",
        help="instead of the phases: MINUTES of open-loop load on extauthz at --soak-fraction "
             "of its peak; fails on any error, RSS growth or p99 drift")  # fmt: skip
    add("--soak-fraction", type=float, default=0.7, help="the soak's rate, × the peak (0.7)")
    add("--soak-rss-growth-mib", type=float, default=5.0,
        help="the soak fails when an extauthz process grows by more (MiB, first to last window)")
    add("--soak-p99-factor", type=float, default=1.5,
        help="the soak fails when the last window's p99 > this × the first's + the slack")
    add("--soak-p99-slack-ms", type=float, default=1.0, help="see --soak-p99-factor")
    add("--envoy", help="Envoy binary (default: beside this Python, else on PATH)")
    add("--envoy-concurrency", type=int, default=1, help="Envoy worker threads")
    add("--wrk", default="wrk", help="wrk binary")
    add("--h2load", default="h2load", help="h2load binary (Debian's nghttp2-client)")
    add("--smoke", action="store_true",
        help="a second or two per scenario and phase, 4 connections, no warm-up: only checks "
             "that every phase runs and every scenario answers as it should")  # fmt: skip
    add("--json", type=Path, metavar="OUT", help="also write the results as JSON")
    add("--report", type=Path, metavar="FILE", help="write the results as Markdown")
    add("--plots", type=Path, metavar="DIR", help="write a latency plot (PNG) per scenario")
    add("--keep", action="store_true", help="keep the work directory (logs, config)")
    args = p.parse_args(argv)
    if args.smoke:
        args.duration, args.warmup, args.connections = 1, 0, min(args.connections, 4)
        args.latency_duration, args.open_loop_duration = 1, 2.0
        args.checks_for_memory = min(args.checks_for_memory, 2000)
        args.scaling = [n for n in args.scaling if n <= 2][:2]
        if args.soak:
            args.soak = min(args.soak, 0.2)
    if args.duration < 1 or args.connections < 1 or args.threads < 1 or args.warmup < 0:
        p.error("--duration, --connections and --threads must be at least 1")
    if args.connections < args.threads:
        p.error("--connections must be at least --threads (wrk needs one per thread)")
    if args.latency_duration < 1 or args.open_loop_duration < 1 or args.checks_for_memory < 0:
        p.error("--latency-duration and --open-loop-duration must be at least 1")
    if not 0 < args.open_loop_fraction <= 1 or not 0 < args.soak_fraction <= 1:
        p.error("--open-loop-fraction and --soak-fraction must be in (0, 1]")
    if args.soak is not None and args.soak <= 0:
        p.error("--soak needs a positive number of minutes")
    return args
