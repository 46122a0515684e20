"""Resident memory of the extauthz processes after a given number of Checks.

The issue's target: at most 80 MiB resident per worker after 1,000,000 Checks. The Checks are
driven through Envoy's ``ext_authz`` listener (session cache on, the default) by h2load as
fast as the stack answers (closed loop: ``-n`` requests over a few HTTP/2 connections), and
every extauthz process of the node (the one started and, with ``server.workers``, its worker
children) is read from ``/proc/<pid>/status``: ``VmRSS`` before and after, ``VmHWM`` (peak).
"""

from __future__ import annotations

import argparse
import subprocess
import time
from pathlib import Path
from typing import Any

from benchmarks.latency import parse_h2load
from benchmarks.probes import h2load_headers, process_role, process_tree
from benchmarks.scenarios import BenchError
from benchmarks.stack import Stack
from benchmarks.throughput import add_counters, check_run, snapshot
from harness.ports import LOOPBACK

TARGET_MIB_PER_WORKER = 80.0


def status_mib(pid: int) -> dict[str, float]:
    """``VmRSS`` and ``VmHWM`` of ``pid`` in MiB (``{}`` when it is gone)."""
    values: dict[str, float] = {}
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return values
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0]) / 1024.0  # kB
    return values


def rss_by_process(root: int) -> dict[int, dict[str, float]]:
    """:func:`status_mib` of every process of :func:`process_tree` of ``root``."""
    return {pid: status_mib(pid) for pid in process_tree(root)}


def drive_checks(args: argparse.Namespace, stack: Stack, name: str, count: int) -> dict[str, Any]:
    """``count`` requests through ``name``'s listener with h2load, closed loop, as many at once
    as wrk's connections (4 HTTP/2 connections, ``args.connections / 4`` streams each), checked
    like every run (no non-2xx, Envoy's counters cover them)."""
    clients = min(4, args.connections)
    streams = max(1, args.connections // clients)
    argv = [args.h2load, "-t1", f"-c{clients}", f"-m{streams}", f"-n{count}",
            "-H", f"authorization: Bearer {stack.credentials[name]}", *h2load_headers(),
            f"http://{LOOPBACK}:{stack.ports.listeners[name]}/"]  # fmt: skip
    before = snapshot(stack)
    started = time.monotonic()
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=max(120, count / 200),
                          check=False)  # fmt: skip
    elapsed = time.monotonic() - started
    if proc.returncode != 0:
        raise BenchError(f"h2load exited {proc.returncode}: {proc.stderr.strip()}")
    summary = parse_h2load(proc.stdout)
    result: dict[str, Any] = {"scenario": name, "requests": summary["succeeded"],
                              "non_2xx": summary["total"] - summary["2xx"],
                              "socket_errors": summary["errored"] + summary["timeout"],
                              "elapsed_s": elapsed, "rps": count / elapsed}  # fmt: skip
    return add_counters(stack, name, before, result)


def memory_after_checks(
    args: argparse.Namespace, stack: Stack, count: int
) -> tuple[dict[str, Any], list[str]]:
    """RSS of each process of the default extauthz before and after ``count`` Checks through
    the ``ext_authz`` scenario; and the problems of the run (:func:`check_run`)."""
    root = stack.extauthz.pid
    assert root is not None
    before = rss_by_process(root)
    run = drive_checks(args, stack, "ext_authz", count)
    after = rss_by_process(root)
    processes = [
        {"pid": pid, "role": process_role(pid, root),
         "rss_before_mib": before.get(pid, {}).get("VmRSS"), "rss_after_mib": v.get("VmRSS"),
         "hwm_mib": v.get("VmHWM")}  # fmt: skip
        for pid, v in after.items()
    ]
    workers = [p for p in processes if p["role"] == "worker"] or processes[:1]
    worst = max(float(p["rss_after_mib"] or 0.0) for p in workers)
    result = {"checks": count, "rps": run["rps"], "elapsed_s": run["elapsed_s"],
              "processes": processes, "max_worker_rss_mib": worst,
              "target_mib_per_worker": TARGET_MIB_PER_WORKER,
              "target_met": worst <= TARGET_MIB_PER_WORKER}  # fmt: skip
    return result, [f"memory run: {p}" for p in check_run("ext_authz", run)]
