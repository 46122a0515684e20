"""Test support: the repository's process harness (:mod:`harness`) plus what only tests use.

The processes themselves (Redis, Envoy, extauthz, the echo upstream, a whole stack) come from
the top-level ``harness`` package, shared with the demo and the benchmark, and are re-exported
here. The modules beside this one add test-only pieces: Redis topologies with replicas and
Sentinels, the sticky-strategy cluster, the login stack, gRPC clients, a TCP relay that injects
faults (latency, freeze, reset, drop, half-open, cut), and a virtual network of Linux network
namespaces whose hosts run the docker-compose topology and are partitioned by taking links
down. ``tests/conftest.py`` turns them into fixtures, prints the log tails of failing tests, and
(with :mod:`tests.support.e2e_guard`) fails a test that starts a process without the ``e2e``
marker.
"""

from __future__ import annotations

from harness import REPO_ROOT
from harness.envoy import EnvoyProcess, envoy_binaries, envoy_version, validate_envoy_config
from harness.extauthz import (
    EchoUpstreamProcess,
    ExtauthzProcess,
    extauthz_cli,
    grpc_health_serving,
)
from harness.ports import LOOPBACK, free_port, port_accepts
from harness.process import ManagedProcess, ProcessError, WaitTimeout, wait_until
from harness.redis import RedisServer, redis_binary
from harness.stack import (
    DEMO_SETTINGS,
    FRONT_PROXY,
    ROUTES,
    SIDECAR,
    Stack,
    StackPorts,
    generate_envoy_config,
    start_stack,
)

__all__ = [
    "DEMO_SETTINGS",
    "FRONT_PROXY",
    "ROUTES",
    "SIDECAR",
    "LOOPBACK",
    "REPO_ROOT",
    "EchoUpstreamProcess",
    "EnvoyProcess",
    "ExtauthzProcess",
    "ManagedProcess",
    "ProcessError",
    "RedisServer",
    "Stack",
    "StackPorts",
    "WaitTimeout",
    "envoy_binaries",
    "envoy_version",
    "extauthz_cli",
    "free_port",
    "grpc_health_serving",
    "port_accepts",
    "redis_binary",
    "generate_envoy_config",
    "start_stack",
    "validate_envoy_config",
    "wait_until",
]
