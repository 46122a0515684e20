"""OpenTelemetry spans of Check ([tracing]; extauthz.server.tracing), collected with the SDK's
in-memory exporter on a node built by the composition root: the trace Envoy sends is continued
(the gRPC call's metadata first, else the request's headers), the store lookup is a child
span, no token, cookie, JWT or session id is ever an attribute, and with tracing off neither
OpenTelemetry's tracing SDK nor extauthz's tracing module is loaded."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from envoy.service.auth.v3.external_auth_pb2 import CheckRequest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from extauthz.check.envoy_adapter import trace_context
from extauthz.errors import StoreUnavailable
from extauthz.server.app import Components, build_components
from extauthz.server.grpc_server import AuthorizationServicer
from extauthz.server.tracing import CHECK_ATTRIBUTES, CHECK_SPAN, STORE_ATTRIBUTES, STORE_SPAN
from tests.fixtures.core import Aborted, FakeServicerContext, http_request
from tests.support.extauthz_nodes import node_settings
from tests.support.metrics_text import parse, value

MEMORY = {"strategy": "sticky", "backend": "memory"}
ENVOY_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
HEADER_PARENT = "00f067aa0ba902b7"  # the downstream request's span, in the request headers
CALL_PARENT = "b7ad6b7169203331"  # Envoy's span of the ext_authz call, in the gRPC metadata


def traceparent(span_id: str, trace_id: str = ENVOY_TRACE) -> str:
    return f"00-{trace_id}-{span_id}-01"


@dataclass
class Node:
    components: Components
    spans: InMemorySpanExporter
    check: AuthorizationServicer

    def finished(self, name: str) -> list[ReadableSpan]:
        return [s for s in self.spans.get_finished_spans() if s.name == name]


@pytest.fixture
async def traced_node(tmp_path: Path) -> AsyncIterator[Node]:
    settings = node_settings(tmp_path, "n1", MEMORY, tracing={"enabled": True, "exporter": "none"})
    spans = InMemorySpanExporter()
    components = build_components(settings, span_exporter=spans)
    assert components.tracing is not None
    await components.start()
    try:
        yield Node(components, spans, AuthorizationServicer(
            components.authorizer, tracing=components.tracing))  # fmt: skip
    finally:
        await components.close()


def _bearer(token: str, **headers: str) -> CheckRequest:
    headers = {"authorization": f"Bearer {token}", "accept": "application/json", **headers}
    return http_request(headers, context_extensions={"client": "api"}, source="127.0.0.1")


async def test_the_call_metadata_is_preferred_to_the_request_headers(traced_node: Node) -> None:
    token, session = await traced_node.components.sessions.create("alice")
    request = _bearer(token, traceparent=traceparent(HEADER_PARENT), tracestate="envoy=1")
    call = FakeServicerContext(metadata=(("traceparent", traceparent(CALL_PARENT)),))
    response = await traced_node.check.Check(request, call)
    assert response.HasField("ok_response")
    (span,) = traced_node.finished(CHECK_SPAN)
    assert span.kind == SpanKind.SERVER
    assert format(span.context.trace_id, "032x") == ENVOY_TRACE
    assert span.parent is not None and span.parent.is_remote
    assert format(span.parent.span_id, "016x") == CALL_PARENT
    attributes = dict(span.attributes or {})
    assert attributes["extauthz.decision"] == "allow"
    assert attributes["extauthz.reason"] == "session_valid"
    assert attributes["extauthz.credential"] == "bearer"
    assert attributes["extauthz.session.kind"] == "session"
    assert attributes["extauthz.session_cache"] == "off"
    assert set(attributes) <= set(CHECK_ATTRIBUTES)
    (lookup,) = traced_node.finished(STORE_SPAN)  # the store was asked once, within the Check
    assert lookup.parent is not None and lookup.parent.span_id == span.context.span_id
    assert lookup.kind == SpanKind.CLIENT
    assert dict(lookup.attributes or {}) == {
        "db.system.name": "memory", "extauthz.session_cache": "off"}  # fmt: skip
    assert set(lookup.attributes or {}) <= set(STORE_ATTRIBUTES)
    assert session.sid not in str(span.attributes) + str(lookup.attributes)


async def test_without_call_metadata_the_request_headers_carry_the_trace(traced_node: Node) -> None:
    request = _bearer("xat_bad", traceparent=traceparent(HEADER_PARENT))
    response = await traced_node.check.Check(request, FakeServicerContext())
    assert response.HasField("denied_response")
    (span,) = traced_node.finished(CHECK_SPAN)
    assert span.parent is not None and format(span.parent.span_id, "016x") == HEADER_PARENT
    assert format(span.context.trace_id, "032x") == ENVOY_TRACE
    assert dict(span.attributes or {})["extauthz.decision"] == "deny"
    assert traced_node.finished(STORE_SPAN) == []  # a malformed token never reaches the store


async def test_repeated_traceparent_lines_start_a_trace_of_their_own(traced_node: Node) -> None:
    """Two ``traceparent`` lines (``header_map``, Envoy's ``encode_raw_headers``): the Check
    follows neither, not whichever came last (W3C Trace Context §3.2.2.1); ``tracestate``
    lines are one list (§3.3.1.1)."""
    request = _bearer("xat_bad")
    lines = [("traceparent", traceparent(HEADER_PARENT)), ("tracestate", "a=1"),
             ("traceparent", traceparent(CALL_PARENT)), ("tracestate", "b=2")]  # fmt: skip
    for name, line in lines:
        entry = request.attributes.request.http.header_map.headers.add()
        entry.key, entry.raw_value = name, line.encode()
    assert trace_context(request) == {
        "traceparent": f"{traceparent(HEADER_PARENT)},{traceparent(CALL_PARENT)}",
        "tracestate": "a=1,b=2",
    }
    await traced_node.check.Check(request, FakeServicerContext())
    (span,) = traced_node.finished(CHECK_SPAN)
    assert span.parent is None
    assert format(span.context.trace_id, "032x") != ENVOY_TRACE


async def test_a_check_without_trace_context_starts_its_own(traced_node: Node) -> None:
    await traced_node.check.Check(_bearer("xat_bad"), FakeServicerContext())
    (span,) = traced_node.finished(CHECK_SPAN)
    assert span.parent is None


async def test_a_store_that_cannot_answer_ends_the_span_in_error(
    traced_node: Node, monkeypatch: pytest.MonkeyPatch
) -> None:
    token, _ = await traced_node.components.sessions.create("alice")

    async def down(token_hash: str) -> None:
        raise StoreUnavailable("store down")

    monkeypatch.setattr(traced_node.components.store, "get", down)
    with pytest.raises(Aborted):
        await traced_node.check.Check(_bearer(token), FakeServicerContext())
    (span,) = traced_node.finished(CHECK_SPAN)
    assert span.status.status_code == StatusCode.ERROR
    assert dict(span.attributes or {})["extauthz.decision"] == "unavailable"
    (lookup,) = traced_node.finished(STORE_SPAN)
    assert lookup.status.status_code == StatusCode.ERROR
    assert not span.events and not lookup.events  # exceptions are not recorded
    metrics = traced_node.components.authorizer.metrics
    assert metrics is not None
    count = "extauthz_check_duration_seconds_count"
    assert value(parse(metrics.render()), count, decision="unavailable") == 1


async def test_no_span_carries_a_token_cookie_jwt_or_session_id(traced_node: Node) -> None:
    """Every attribute and event of every span, against every secret the Check saw or made."""
    cookie_name = traced_node.components.authorizer.resolver.cookie.name
    token, session = await traced_node.components.sessions.create("alice", scopes=("read",))
    other, _ = await traced_node.components.sessions.create("alice")
    request = http_request(
        {"cookie": f"theme=dark; {cookie_name}={token}", "authorization": f"Bearer {other}",
         "accept": "text/html", "traceparent": traceparent(HEADER_PARENT)},
        context_extensions={"client": "browser"}, source="127.0.0.1",
    )  # fmt: skip
    answers = [
        await traced_node.check.Check(request, FakeServicerContext()),
        await traced_node.check.Check(_bearer(other), FakeServicerContext()),
    ]
    jwts = [h.header.value for a in answers if a.HasField("ok_response")
            for h in a.ok_response.headers]  # fmt: skip
    assert jwts, "no request was allowed: nothing minted to look for"
    secrets = [token, other, session.sid, *jwts, *(j.removeprefix("Bearer ") for j in jwts)]
    spans = traced_node.spans.get_finished_spans()
    assert len(spans) >= 3
    for span in spans:
        texts = [str(k) + "=" + str(v) for k, v in (span.attributes or {}).items()]
        texts += [e.name + str(dict(e.attributes or {})) for e in span.events]
        texts += [span.name, str(span.status.description)]
        for text in texts:
            for secret in secrets:
                assert secret not in text, (span.name, text)


@pytest.mark.e2e
def test_with_tracing_off_opentelemetry_is_not_loaded(tmp_path: Path) -> None:
    node_settings(tmp_path, "n1", MEMORY)  # writes n1.toml and a key
    code = textwrap.dedent(
        f"""
        import sys
        from extauthz.settings import load_settings
        from extauthz.server.app import build_components
        components = build_components(load_settings({str(tmp_path / "n1.toml")!r}, environ={{}}))
        assert components.tracing is None
        # (redis-py 8 loads OpenTelemetry's metrics API for its own observability; the
        # tracing SDK and extauthz's tracing module are ours to load, only when on)
        loaded = [m for m in sys.modules if m.startswith(("opentelemetry.sdk.trace",
                  "opentelemetry.trace.propagation.tracecontext", "extauthz.server.tracing"))]
        assert loaded == ["extauthz.server.tracing_wiring"], loaded
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
