"""Helpers for tests that run real processes (Redis, Envoy, extauthz, the echo upstream).

Every process is started on free loopback ports, has its stdout and stderr captured to files in
a temporary directory, is waited for with a bounded timeout, and is stopped by its own PID.
``tests/conftest.py`` turns these into fixtures and prints the log tails of failing tests.
"""

from __future__ import annotations

from .ports import free_port, wait_for_port
from .processes import (
    REPO_ROOT,
    EchoUpstreamProcess,
    EnvoyProcess,
    ExtauthzProcess,
    ManagedProcess,
    ProcessError,
    RedisServer,
    envoy_binaries,
    envoy_version,
    extauthz_cli,
    grpc_health_serving,
    validate_envoy_config,
)
from .stack import (
    DEMO_SETTINGS,
    FRONT_PROXY,
    Stack,
    StackPorts,
    render_front_proxy,
    start_stack,
)

__all__ = [
    "DEMO_SETTINGS",
    "FRONT_PROXY",
    "REPO_ROOT",
    "EchoUpstreamProcess",
    "EnvoyProcess",
    "ExtauthzProcess",
    "ManagedProcess",
    "ProcessError",
    "RedisServer",
    "Stack",
    "StackPorts",
    "envoy_binaries",
    "envoy_version",
    "extauthz_cli",
    "free_port",
    "grpc_health_serving",
    "render_front_proxy",
    "start_stack",
    "validate_envoy_config",
    "wait_for_port",
]
