"""A trace started by Envoy continues through the Check: a real Envoy (the generated front
proxy, with the connection manager's ``tracing`` on the OpenTelemetry tracer, exporting to a
tiny OTLP receiver) starts the trace; the request passes ext_authz to extauthz running in this
process with ``[tracing]`` on and the SDK's in-memory exporter, and reaches the echo upstream,
which shows the ``traceparent`` Envoy forwarded. The Check span is in that trace, and its
parent is one of the spans Envoy exported."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from aiohttp import web
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from extauthz.server.admin import SessionAdminServicer, StatusServicer, admin_guard
from extauthz.server.app import Components, build_components
from extauthz.server.grpc_server import build_server
from extauthz.server.health import HealthServicer
from extauthz.server.http_server import build_http_app
from extauthz.server.tracing import CHECK_SPAN, STORE_SPAN
from harness.envoy import EnvoyProcess, envoy_version
from harness.extauthz import EchoUpstreamProcess
from harness.ports import LOOPBACK, free_port
from harness.stack import StackPorts, generate_envoy_config
from tests.support.extauthz_nodes import TEST_TABLES, node_settings
from tests.support.otlp_receiver import OtlpReceiver

pytestmark = pytest.mark.e2e

COLLECTOR = "otlp_collector"


def with_tracing(config: Path, collector_port: int) -> Path:
    """The generated front proxy, with tracing on its connection manager: the OpenTelemetry
    tracer, exporting over gRPC to ``collector_port``; spans flushed one by one."""
    doc = yaml.safe_load(config.read_text())
    hcm = doc["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
    hcm["typed_config"]["tracing"] = {
        "provider": {
            "name": "envoy.tracers.opentelemetry",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig",
                "grpc_service": {"envoy_grpc": {"cluster_name": COLLECTOR}, "timeout": "1s"},
                "service_name": "front-proxy",
            },
        }
    }
    clusters = doc["static_resources"]["clusters"]
    grpc_cluster = next(c for c in clusters if c["name"] == "extauthz_grpc")
    collector = yaml.safe_load(yaml.safe_dump(grpc_cluster))  # an HTTP/2 cluster like it
    collector["name"] = collector["load_assignment"]["cluster_name"] = COLLECTOR
    endpoint = collector["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
    endpoint["address"]["socket_address"]["port_value"] = collector_port
    clusters.append(collector)
    doc["layered_runtime"] = {"layers": [{"name": "flush", "static_layer": {
        "tracing.opentelemetry.min_flush_spans": 1,
        "tracing.opentelemetry.flush_interval_ms": 200,
    }}]}  # fmt: skip
    out = config.with_name("front-traced.yaml")
    out.write_text(yaml.safe_dump(doc, sort_keys=False))
    return out


@dataclass
class TracedNode:
    """extauthz in this process: its components, Check spans, and what Envoy exported."""

    components: Components
    spans: InMemorySpanExporter
    envoy_spans: OtlpReceiver


@pytest.fixture
async def traced(tmp_path: Path, envoy_binary: str) -> AsyncIterator[tuple[TracedNode, int]]:
    ports = StackPorts.allocate()
    collector_port = free_port()
    settings = node_settings(
        tmp_path, "traced",
        {"strategy": "sticky", "backend": "memory"},
        server={"node_id": "traced", "grpc_listen": f"{LOOPBACK}:{ports.grpc}"},
        tracing={"enabled": True, "exporter": "none"},
    )  # fmt: skip
    spans = InMemorySpanExporter()
    components = build_components(settings, span_exporter=spans)
    guard = admin_guard(False, "")
    server, _ = build_server(
        settings.server.grpc_listen, components.authorizer,
        SessionAdminServicer(components.sessions, guard),
        StatusServicer(components.sessions, components.keyring, strategy="sticky",
                       node_id="traced"),
        HealthServicer(), tracing=components.tracing,
    )  # fmt: skip
    receiver = OtlpReceiver()
    collector = grpc.aio.server()
    receiver.add_to(collector)
    collector.add_insecure_port(f"{LOOPBACK}:{collector_port}")
    runner = web.AppRunner(build_http_app(components.keyring, components.auth))
    started: list[Any] = []
    try:
        await components.start()
        await server.start()
        await collector.start()
        await runner.setup()
        await web.TCPSite(runner, LOOPBACK, ports.http).start()
        logs = tmp_path / "logs"
        jwt = TEST_TABLES["jwt"]
        echo = EchoUpstreamProcess(
            logs, port=ports.upstream, jwks_url=f"http://{LOOPBACK}:{ports.http}/.well-known/jwks.json",
            issuer=jwt["issuer"], audience=jwt["audience"],
        )  # fmt: skip
        started.append(await asyncio.to_thread(echo.start))
        config = with_tracing(generate_envoy_config(ports, tmp_path), collector_port)
        name = f"envoy-{envoy_version(envoy_binary)}"
        envoy = EnvoyProcess(envoy_binary, config, logs, name=name)
        started.append(await asyncio.to_thread(envoy.start))
        yield TracedNode(components, spans, receiver), ports.listener
    finally:
        for proc in reversed(started):
            await asyncio.to_thread(proc.stop)
        await runner.cleanup()
        await collector.stop(0)
        await server.stop(0)
        await components.close()


def _get(port: int, path: str, headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(f"http://{LOOPBACK}:{port}{path}", headers=headers)
    with urllib.request.urlopen(request, timeout=10) as resp:
        return resp.status, json.loads(resp.read())


async def test_a_trace_started_by_envoy_continues_through_the_check(
    traced: tuple[TracedNode, int],
) -> None:
    node, listener = traced
    token, _ = await node.components.sessions.create("alice")
    status, echoed = await asyncio.to_thread(
        _get, listener, "/hello", {"authorization": f"Bearer {token}", "accept": "application/json"}
    )
    assert status == 200 and echoed["jwt"]["verified"], echoed
    (forwarded,) = echoed["headers"]["traceparent"]  # what Envoy sent upstream
    _, trace_id, upstream_parent, _ = forwarded.split("-")

    (check,) = [s for s in node.spans.get_finished_spans() if s.name == CHECK_SPAN]
    assert format(check.context.trace_id, "032x") == trace_id
    assert check.parent is not None and check.parent.is_remote
    parent = format(check.parent.span_id, "016x")
    assert (check.attributes or {})["extauthz.decision"] == "allow"
    (lookup,) = [s for s in node.spans.get_finished_spans() if s.name == STORE_SPAN]
    assert lookup.parent is not None and lookup.parent.span_id == check.context.span_id

    deadline = time.monotonic() + 15  # Envoy exports its spans when they end (flush: 1 span)
    while time.monotonic() < deadline:
        envoy_spans = {s.span_id: s for s in node.envoy_spans.spans if s.trace_id == trace_id}
        if parent in envoy_spans:
            break
        await asyncio.sleep(0.1)
    names = sorted(f"{s.name} {s.span_id}<-{s.parent_span_id}" for s in envoy_spans.values())
    assert parent in envoy_spans, f"the Check's parent {parent} is not Envoy's: {names}"
    # Envoy's span of the ext_authz call (its context came in the call's metadata), a child
    # of the request's span, which is the one the upstream was given
    assert "envoy.service.auth.v3.Authorization.Check" in envoy_spans[parent].name, names
    assert envoy_spans[parent].parent_span_id == upstream_parent, names
