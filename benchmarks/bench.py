"""Benchmark the real stack through Envoy: no authorization, Envoy's own jwt_authn (ES256), a
no-op Python gRPC Check, and extauthz (opaque token -> session -> JWT) with its session cache
off and on, side by side from one run; measured the way operators measure.

    .venv/bin/python benchmarks/bench.py                       (or: make bench)
    .venv/bin/python benchmarks/bench.py --report docs/benchmarks-results.md --plots docs/benchmarks
    .venv/bin/python benchmarks/bench.py --smoke               (a few seconds per phase: checks)
    .venv/bin/python benchmarks/bench.py --soak 10             (10 minutes at 70 % of the peak)

What runs, all on 127.0.0.1 and on free ports, each process stopped by its PID at the end
(benchmarks/stack.py): its own ``redis-server``; ``python -m extauthz serve`` twice on the same
store and signing key (session cache on, the default, and ``EXTAUTHZ_CACHE_ENABLED=false``);
``benchmarks/noop_authz.py``, a Check that does nothing on the same Python gRPC stack (the
"bare gRPC round trip" of the hot-path budget); Envoy with ``benchmarks/envoy-bench.yaml``
(one listener per scenario, differing only by the auth step).

The phases, in order (docs/benchmarks.md):

1. **Throughput** (benchmarks/throughput.py): ``wrk -c<N>`` per scenario, closed loop, with the
   CPU time of each process per request (``/proc/<pid>/stat``).
2. **One connection** (benchmarks/latency.py): ``wrk -c1``, one request at a time: p50 ... p99.9
   and what each auth step adds over Envoy alone.
3. **Open loop** (benchmarks/latency.py): h2load at a fixed offered rate (``--open-loop-fraction``
   of the lower of the no-op server's and extauthz's measured peaks), latency from the
   intended send time.
4. **Scaling** (benchmarks/scaling.py): extauthz with 1, 2, ... ``server.workers``.
5. **Memory** (benchmarks/memory.py): RSS of each extauthz process after
   ``--checks-for-memory`` Checks.

Then the session store's figures (``benchmarks/store_bench.py``, when the repository has it),
the plots (``--plots DIR``) and the Markdown report (``--report FILE``). ``--soak MINUTES``
replaces the phases with a soak (benchmarks/soak.py).

Nothing is measured unless it is what it claims to be: before the load every scenario must
answer 200 with its credential and 401 without one and with a wrong one; after every run the
load generator's non-2xx and socket errors must be 0 and Envoy's own counters must show that
every request went through the auth step — otherwise the script exits 1: it never reports a
fast error path. Exit status: 0 success, 1 a check failed, 2 a tool is missing.
"""

from __future__ import annotations

import compileall
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

# harness/ is the repository's process harness, shared with the demo and the tests: start on
# free ports, wait until ready (bounded), logs to files, stop by PID.
from benchmarks.options import parse_args  # noqa: E402
from benchmarks.phases import run_phases, run_soak  # noqa: E402
from benchmarks.probes import parse_wrk  # noqa: E402
from benchmarks.report import extauthz_source, machine, tool_version  # noqa: E402
from benchmarks.report_md import render_markdown  # noqa: E402
from benchmarks.scenarios import (  # noqa: E402
    JWT_AUDIENCE,
    JWT_ISSUER,
    SCENARIOS,
    BenchError,
    EnvoyPorts,
    make_jwt_material,
    render_bench_config,
)
from benchmarks.stack import say, start_stack, verify  # noqa: E402
from benchmarks.throughput import check_run  # noqa: E402
from harness.envoy import envoy_version, find_envoy  # noqa: E402
from harness.process import ManagedProcess, ProcessError  # noqa: E402
from harness.redis import redis_binary  # noqa: E402

__all__ = [  # what tests/e2e/test_bench_config.py reads from this script
    "JWT_AUDIENCE",
    "JWT_ISSUER",
    "SCENARIOS",
    "EnvoyPorts",
    "check_run",
    "make_jwt_material",
    "parse_wrk",
    "render_bench_config",
]


def missing_tools(args: Any) -> list[str]:
    envoy_ok = bool(args.envoy and os.access(args.envoy, os.X_OK))
    return [what for what, ok in (
        ("wrk (apt-get install wrk, or `make wrk`)", shutil.which(args.wrk)),
        ("h2load (apt-get install nghttp2-client, or `make h2load`)", shutil.which(args.h2load)),
        ("redis-server (apt-get install redis-server, or `make redis`)", redis_binary()),
        ("envoy (`make venv` installs it, or pass --envoy)", envoy_ok),
    ) if not ok]  # fmt: skip


def header(report: dict[str, Any]) -> str:
    m, src = report["machine"], report["extauthz"]
    return "\n".join([
        f"\n{report['date']}  {m['cpus']} CPUs ({m['cpu_model']}), shared by wrk, Envoy, "
        f"extauthz and Redis; load average before the run {report['loadavg']}",
        f"Envoy {report['envoy']} (--concurrency {report['envoy_concurrency']}), "
        f"Python {m['python']}",
        f"extauthz {src['version']} from {src['path']}"
        + (f" at {src['commit'][:12]}" if "commit" in src else "")
        + (" WITH UNCOMMITTED CHANGES in extauthz/" if src.get("uncommitted_changes") else ""),
        f"command: {report['command']}\n",
    ])  # fmt: skip


def write_outputs(args: Any, report: dict[str, Any]) -> None:
    if args.plots:
        from benchmarks.plots import plot_all

        report["plots"] = [str(p) for p in plot_all(report, args.plots)]
        say(f"wrote {len(report['plots'])} plots into {args.plots}")
    if args.report:
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text(render_markdown(report, args.report))
        say(f"wrote {args.report}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        say(f"wrote {args.json}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv, __doc__.splitlines()[0])
    args.envoy = args.envoy or find_envoy()
    missing = missing_tools(args)
    if missing:
        for what in missing:
            say(f"missing: {what}")
        return 2
    # extauthz served as installed: pip byte-compiles a wheel's modules when it installs them;
    # this venv's editable install, under PYTHONDONTWRITEBYTECODE, would have every process
    # compile each module from source at start (0.3 MiB more resident, docs/benchmarks.md)
    compileall.compile_dir(REPO / "extauthz", quiet=1)

    # SIGTERM (e.g. from a test timeout) stops the children like Ctrl-C does
    def on_term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    command = shlex.join([Path(sys.executable).name, *sys.argv] if argv is None else argv)
    work_dir = Path(tempfile.mkdtemp(prefix="extauthz-bench-"))
    processes: list[ManagedProcess] = []
    ok = False
    started = time.monotonic()
    report: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": command,
        "machine": machine(),
        "loadavg": " ".join(Path("/proc/loadavg").read_text().split()[:3]),
        "extauthz": extauthz_source(),
        "envoy": envoy_version(args.envoy),
        "envoy_concurrency": args.envoy_concurrency,
        "wrk": tool_version([args.wrk, "--version"]),
        "h2load": tool_version([args.h2load, "--version"]),
        "redis": tool_version(["redis-server", "--version"]),
        "params": {"duration_s": args.duration, "warmup_s": args.warmup,
                   "connections": args.connections, "threads": args.threads,
                   "latency_s": args.latency_duration},  # fmt: skip
    }
    try:
        stack = start_stack(args, work_dir, processes)
        verify(stack)
        print(header(report))
        if args.soak:
            run_soak(args, stack, report)
        else:
            run_phases(args, stack, report)
        verify(stack)  # still the same answers after the load
        report["elapsed_s"] = time.monotonic() - started
        write_outputs(args, report)
        if report["problems"]:
            for p in report["problems"]:
                say(f"FAILED: {p}")
            return 1
        say(f"done in {report['elapsed_s']:.0f} s")
        ok = True
        return 0
    except (BenchError, ProcessError, subprocess.SubprocessError) as exc:
        say(f"FAILED: {exc}")
        return 1
    except KeyboardInterrupt:
        say("interrupted")
        return 130
    finally:
        for proc in reversed(processes):
            proc.stop()
        if ok and not args.keep:
            shutil.rmtree(work_dir, ignore_errors=True)
        else:
            say(f"logs and config kept in {work_dir}")


if __name__ == "__main__":
    sys.exit(main())
