"""The benchmark's phases in order (bench.py's docstring), each adding its results and its
problems to the report; and the soak that replaces them with ``--soak``."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.latency import added_latency, check_rate, one_connection, open_loop
from benchmarks.memory import memory_after_checks
from benchmarks.report import render_table
from benchmarks.report_md import (
    memory_section,
    one_connection_section,
    open_loop_section,
    scaling_section,
    targets_section,
)
from benchmarks.scaling import scaling_run
from benchmarks.scenarios import LABELS, SCENARIOS
from benchmarks.soak import soak
from benchmarks.stack import Stack, say
from benchmarks.throughput import check_run, measure

STORE_BENCH = Path(__file__).resolve().parent / "store_bench.py"
SMOKE_OPEN_LOOP_RATE = 200.0  # req/s: --smoke checks that the phase runs, not the machine
# a scenario runs open loop only when its closed-loop peak leaves this much headroom above the
# offered rate: past its peak an open-loop run only measures a queue growing until timeouts
HEADROOM = 1.25


def run_phases(args: argparse.Namespace, stack: Stack, report: dict[str, Any]) -> None:
    problems: list[str] = []
    report["problems"] = problems
    throughput = []
    for name in SCENARIOS:
        say(f"{name}: wrk -t{args.threads} -c{args.connections} -d{args.duration}s "
            f"(warm-up {args.warmup}s)")  # fmt: skip
        throughput.append(measure(args, stack, name))
    report["scenarios"] = throughput
    problems += [p for r in throughput for p in check_run(r["scenario"], r)]
    print(render_table(throughput) + "\n")

    latency = []
    for name in SCENARIOS:
        say(f"{name}: one connection, wrk -c1 -d{args.latency_duration}s")
        latency.append(one_connection(args, stack, name))
    added_latency(latency)
    report["one_connection"] = latency
    problems += [f"one connection: {p}" for r in latency for p in check_run(r["scenario"], r)]
    print(one_connection_section(report) + "\n")

    report["open_loop"] = open_loop_phase(args, stack, throughput, problems)
    print(open_loop_section(report) + "\n")

    if not args.no_scaling:
        report["scaling"] = scaling_run(args, stack, problems)
        print(scaling_section(report) + "\n")

    if args.checks_for_memory:
        say(f"memory: {args.checks_for_memory} Checks through the ext_authz scenario")
        report["memory"], found = memory_after_checks(args, stack, args.checks_for_memory)
        problems += found
        print(memory_section(report) + "\n")

    report["store_bench"] = store_bench(args, problems)
    print(targets_section(report) + "\n")


def open_loop_phase(
    args: argparse.Namespace, stack: Stack, throughput: list[dict[str, Any]], problems: list[str]
) -> dict[str, Any]:
    """Every scenario with headroom at one offered rate: ``--open-loop-fraction`` of the lower
    of the no-op server's and extauthz's (cache on) peaks, so that the two compared scenarios
    both run at it (at most :data:`SMOKE_OPEN_LOOP_RATE` with ``--smoke``)."""
    peaks = {r["scenario"]: r["rps"] for r in throughput}
    rate = args.open_loop_fraction * min(peaks["ext_authz_noop"], peaks["ext_authz"])
    if args.smoke:
        rate = min(rate, SMOKE_OPEN_LOOP_RATE)
    runs, skipped = [], []
    for name in SCENARIOS:
        if peaks[name] < HEADROOM * rate:
            reason = (f"its closed-loop peak, {peaks[name]:.0f} req/s, is below "
                      f"{HEADROOM} × the offered rate")  # fmt: skip
            skipped.append({"scenario": name, "label": LABELS[name], "reason": reason})
            say(f"{name}: open loop not run: {reason}")
            continue
        say(f"{name}: open loop, h2load at {rate:.0f} req/s for {args.open_loop_duration:g} s")
        run = open_loop(args, stack, name, rate, args.open_loop_duration)
        problems += [f"open loop: {p}" for p in check_run(name, run) + check_rate(run)]
        runs.append(run)
    return {"rate": rate, "fraction": args.open_loop_fraction,
            "duration_s": args.open_loop_duration, "runs": runs, "skipped": skipped}  # fmt: skip


def store_bench(args: argparse.Namespace, problems: list[str]) -> dict[str, Any]:
    """The session store's figures from ``benchmarks/store_bench.py`` (its ``--json``; 2,000
    sessions with ``--smoke``, its default otherwise), or a note that the repository has no
    such script yet."""
    if not STORE_BENCH.exists():
        return {"note": "Not measured: the repository has no `benchmarks/store_bench.py`."}
    say("session store: benchmarks/store_bench.py")
    with tempfile.TemporaryDirectory(prefix="store-bench-") as tmp:
        out = Path(tmp) / "store.json"
        argv = [sys.executable, str(STORE_BENCH), "--json", str(out),
                *(["--sessions", "2000"] if args.smoke else [])]  # fmt: skip
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=900, check=False)
        if proc.returncode != 0 or not out.exists():
            problems.append(f"store_bench.py exited {proc.returncode}: "
                            f"{proc.stderr.strip()[-500:]}")  # fmt: skip
            return {"note": f"`benchmarks/store_bench.py` failed (exit {proc.returncode})."}
        figures: dict[str, Any] = json.loads(out.read_text())
    return {"figures": figures, "output": proc.stdout.strip()}


def run_soak(args: argparse.Namespace, stack: Stack, report: dict[str, Any]) -> None:
    """Measure the peak of the ``ext_authz`` scenario (wrk, as the throughput phase), then
    :func:`benchmarks.soak.soak` at ``--soak-fraction`` of it."""
    say(f"soak: the peak of ext_authz first (wrk -c{args.connections} -d{args.duration}s)")
    peak = measure(args, stack, "ext_authz")
    report["scenarios"] = [peak]
    report["problems"] = check_run("ext_authz", peak)
    report["soak"] = soak(args, stack, peak["rps"], args.soak)
    report["problems"] += report["soak"]["problems"]
