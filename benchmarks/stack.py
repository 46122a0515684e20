"""The benchmark's stack: its own Redis, extauthz twice (session cache on and off), the no-op
Check server and Envoy with ``benchmarks/envoy-bench.yaml``, each on free loopback ports and
stopped by its PID; and the checks that every scenario answers as it should before any load."""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from benchmarks.probes import http_get
from benchmarks.scenarios import (
    SCENARIOS,
    BenchError,
    EnvoyPorts,
    make_jwt_material,
    render_bench_config,
)
from harness.envoy import EnvoyProcess, envoy_version
from harness.extauthz import ExtauthzProcess, ensure_signing_key
from harness.ports import LOOPBACK, free_port
from harness.process import ManagedProcess
from harness.redis import RedisServer

REPO = Path(__file__).resolve().parents[1]


def say(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


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
    # one process each (server.workers = 1): the scenarios' clusters list one endpoint
    extauthz = ExtauthzProcess(settings, logs, env={"EXTAUTHZ_LOG_LEVEL": "warning"}, workers=1)
    processes.append(extauthz.start())
    say(f"extauthz pid {extauthz.pid} on gRPC port {extauthz.grpc_port}")
    token = extauthz.cli("sessions", "create", "--sub", "bench", "--target", extauthz.grpc_target)
    nocache = ExtauthzProcess(
        settings, logs, name="extauthz-nocache",
        env={"EXTAUTHZ_LOG_LEVEL": "warning", "EXTAUTHZ_CACHE_ENABLED": "false",
             "EXTAUTHZ_SERVER_NODE_ID": "bench-nocache"}, workers=1,
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
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            if (
                sample.name == "extauthz_session_updates_total"
                and sample.labels.get("result") == "applied"
                and sample.labels.get("reason") == "merge_patch"
            ):
                return int(sample.value)
    return 0


