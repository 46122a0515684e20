"""The scaling run: the ``ext_authz`` scenario (session cache on) against one extauthz node run
with 1, 2, ... ``server.workers``.

Worker ``i`` serves gRPC on the ``server.grpc_listen`` port + ``i``; Envoy's cluster lists one
endpoint per worker (Envoy keeps one HTTP/2 connection per worker thread per endpoint, so one
port would not spread the Checks: docs/operations.md, 'Workers'). Each step starts its own
extauthz node (same settings, store and signing key as the main stack, so the run's session
is valid there) and its own Envoy with only that listener and that cluster, then measures it
like the throughput phase (wrk, CPU per request of Envoy and of every extauthz process).
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

import yaml

from benchmarks.probes import cpu_seconds, http_get, process_role, process_tree
from benchmarks.scenarios import BENCH_CONFIG, BenchError, EnvoyPorts
from benchmarks.stack import Stack, say
from benchmarks.throughput import check_run, measure
from harness.envoy import EnvoyProcess
from harness.extauthz import ExtauthzProcess
from harness.ports import free_port
from harness.process import ManagedProcess
from harness.stack import set_port, write_config

SCENARIO = "ext_authz"
CLUSTER = "extauthz_grpc"


def render_scaling_config(out_dir: Path, ports: EnvoyPorts, grpc_base: int, workers: int) -> Path:
    """``benchmarks/envoy-bench.yaml`` reduced to the ``ext_authz`` listener and its cluster,
    with one endpoint per worker (``grpc_base + i``)."""
    doc = yaml.safe_load(BENCH_CONFIG.read_text())
    set_port(doc["admin"]["address"]["socket_address"], ports.admin)
    resources = doc["static_resources"]
    resources["listeners"] = [x for x in resources["listeners"] if x["name"] == SCENARIO]
    resources["clusters"] = [c for c in resources["clusters"] if c["name"] == CLUSTER]
    if len(resources["listeners"]) != 1 or len(resources["clusters"]) != 1:
        raise BenchError(f"{BENCH_CONFIG}: no {SCENARIO} listener or {CLUSTER} cluster")
    set_port(resources["listeners"][0]["address"]["socket_address"], ports.listeners[SCENARIO])
    (locality,) = resources["clusters"][0]["load_assignment"]["endpoints"]
    template = locality["lb_endpoints"][0]
    locality["lb_endpoints"] = []
    for i in range(workers):
        endpoint = yaml.safe_load(yaml.safe_dump(template))
        set_port(endpoint["endpoint"]["address"]["socket_address"], grpc_base + i)
        locality["lb_endpoints"].append(endpoint)
    return write_config(doc, out_dir / f"envoy-scaling-{workers}.yaml")


def scaling_step(args: argparse.Namespace, stack: Stack, workers: int) -> dict[str, Any]:
    logs = stack.work_dir / "logs"
    # ready once every worker's gRPC port says SERVING
    node = ExtauthzProcess(
        stack.work_dir / "extauthz.toml", logs, name=f"extauthz-w{workers}", workers=workers,
        env={"EXTAUTHZ_LOG_LEVEL": "warning", "EXTAUTHZ_SERVER_NODE_ID": f"bench-w{workers}"},
    )  # fmt: skip
    ports = EnvoyPorts(free_port(), {SCENARIO: free_port()})
    config = render_scaling_config(stack.work_dir, ports, node.grpc_port, workers)
    envoy = EnvoyProcess(args.envoy, config, logs, name=f"envoy-w{workers}",
                         admin_port=ports.admin, concurrency=args.envoy_concurrency)  # fmt: skip
    started: list[ManagedProcess] = []
    try:
        started.append(node.start())
        started.append(envoy.start())
        step = dataclasses.replace(stack, extauthz=node, envoy=envoy, ports=ports, processes=[])
        status, body, _ = http_get(ports.listeners[SCENARIO], bearer=stack.credentials[SCENARIO])
        if status != 200:
            raise BenchError(f"scaling, {workers} workers: {status} {body[:200]!r}, not 200")
        if http_get(ports.listeners[SCENARIO])[0] != 401:
            raise BenchError(f"scaling, {workers} workers: no 401 without a credential")
        say(f"scaling: {workers} workers (pid {node.pid}), wrk -c{args.connections} "
            f"-d{args.duration}s")  # fmt: skip
        assert node.pid is not None
        before = {pid: cpu_seconds(pid) for pid in process_tree(node.pid)}
        result = measure(args, step, SCENARIO)
        result["worker_cpu_s"] = {
            str(pid): cpu_seconds(pid) - start
            for pid, start in before.items() if process_role(pid, node.pid) == "worker"
        } or {str(node.pid): cpu_seconds(node.pid) - before[node.pid]}  # fmt: skip
    finally:
        for proc in reversed(started):
            proc.stop()
    result["workers"] = workers
    return result


def check_spread(result: dict[str, Any], share: float = 0.1) -> list[str]:
    """Every worker must have done part of the work: at least ``share`` / workers of the CPU
    time the workers spent (else Envoy did not spread the Checks over the endpoints)."""
    cpu = result["worker_cpu_s"]
    if len(cpu) != result["workers"]:
        return [f"{len(cpu)} worker processes found, not {result['workers']}"]
    total = sum(cpu.values())
    idle = [pid for pid, s in cpu.items() if s < share * total / len(cpu)]
    return [f"worker pid {pid} answered (almost) no Check" for pid in idle]


def scaling_run(args: argparse.Namespace, stack: Stack, problems: list[str]) -> dict[str, Any]:
    """Every count of ``args.scaling`` in turn; each result's ``speedup`` is its req/s over
    the first step's."""
    base = {"connections": args.connections, "duration_s": args.duration,
            "envoy_concurrency": args.envoy_concurrency}  # fmt: skip
    runs = [scaling_step(args, stack, n) for n in args.scaling]
    for r in runs:
        r["speedup"] = r["rps"] / runs[0]["rps"] if runs[0]["rps"] else 0.0
        problems += [f"scaling, {r['workers']} workers: {p}"
                     for p in check_run(SCENARIO, r) + check_spread(r)]  # fmt: skip
    return base | {"runs": runs}
