"""Throughput: wrk (closed loop, many connections) against one scenario, with the CPU time of
each process over the run and Envoy's own counters, and the checks that every request went
through the auth step."""

from __future__ import annotations

import argparse
import time
from typing import Any

from benchmarks.probes import (
    children_cpu_seconds,
    envoy_counters,
    machine_busy_seconds,
    parse_wrk,
    redis_commands,
    run_wrk,
    tree_cpu_seconds,
)
from benchmarks.scenarios import LABELS
from benchmarks.stack import Stack, session_updates_applied


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
    cpu_before = {k: tree_cpu_seconds(pid) for k, pid in pids.items() if pid}
    wrk_before = children_cpu_seconds()
    busy_before = machine_busy_seconds()
    started = time.monotonic()
    out = run_wrk(args, port, bearer, args.duration)
    wall = time.monotonic() - started
    cpu = {k: tree_cpu_seconds(pid) - cpu_before[k] for k, pid in pids.items() if pid}
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



def snapshot(stack: Stack) -> tuple[dict[str, int], int]:
    """Envoy's counters and extauthz's applied session updates now (see :func:`add_counters`)."""
    return envoy_counters(stack.envoy), session_updates_applied(stack)


def add_counters(
    stack: Stack, name: str, before: tuple[dict[str, int], int], result: dict[str, Any]
) -> dict[str, Any]:
    """Put into ``result`` what Envoy and extauthz counted since ``before`` (a
    :func:`snapshot`): what :func:`check_run` compares with the load generator's count."""
    result["envoy_counters"] = auth_counters(name, before[0], envoy_counters(stack.envoy))
    result["session_updates_applied"] = session_updates_applied(stack) - before[1]
    return result
