"""A tiny OTLP/gRPC trace receiver for tests: it accepts what Envoy's OpenTelemetry tracer
exports (``opentelemetry.proto.collector.trace.v1.TraceService/Export``) and keeps the ids and
names of the spans. The messages are read with a subset of OTLP's schema (field numbers of
``opentelemetry/proto/trace/v1/trace.proto``), built here as descriptors: unknown fields are
skipped, so nothing else of OTLP is needed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

SERVICE = "opentelemetry.proto.collector.trace.v1.TraceService"
_BYTES = descriptor_pb2.FieldDescriptorProto.TYPE_BYTES
_STRING = descriptor_pb2.FieldDescriptorProto.TYPE_STRING
_MESSAGE = descriptor_pb2.FieldDescriptorProto.TYPE_MESSAGE
_REPEATED = descriptor_pb2.FieldDescriptorProto.LABEL_REPEATED
_OPTIONAL = descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL


def _request_class() -> Any:
    """ExportTraceServiceRequest → ResourceSpans → ScopeSpans → Span (ids and name only)."""
    schema = descriptor_pb2.FileDescriptorProto(
        name="tests/otlp_subset.proto", package="otlp_subset", syntax="proto3"
    )
    layout = {
        "Span": [("trace_id", 1, _BYTES, ""), ("span_id", 2, _BYTES, ""),
                 ("parent_span_id", 4, _BYTES, ""), ("name", 5, _STRING, "")],
        "ScopeSpans": [("spans", 2, _MESSAGE, "Span")],
        "ResourceSpans": [("scope_spans", 2, _MESSAGE, "ScopeSpans")],
        "Request": [("resource_spans", 1, _MESSAGE, "ResourceSpans")],
    }  # fmt: skip
    for name, fields in layout.items():
        message = schema.message_type.add(name=name)
        for field, number, kind, type_name in fields:
            added = message.field.add(name=field, number=number, type=kind, label=_OPTIONAL)
            if type_name:  # a repeated message field
                added.label, added.type_name = _REPEATED, f".otlp_subset.{type_name}"
    pool = descriptor_pool.DescriptorPool()
    pool.Add(schema)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("otlp_subset.Request"))


@dataclass(frozen=True)
class ExportedSpan:
    trace_id: str  # 32 hex digits
    span_id: str  # 16 hex digits
    parent_span_id: str  # "" for a root span
    name: str


class OtlpReceiver:
    """Register on a ``grpc.aio`` server (:meth:`add_to`); :attr:`spans` grows with every
    export it receives."""

    def __init__(self) -> None:
        self.spans: list[ExportedSpan] = []
        self._request = _request_class()

    async def _export(self, request: bytes, context: Any) -> bytes:
        message = self._request.FromString(request)
        for resource in message.resource_spans:
            for scope in resource.scope_spans:
                self.spans += [
                    ExportedSpan(s.trace_id.hex(), s.span_id.hex(), s.parent_span_id.hex(), s.name)
                    for s in scope.spans
                ]
        return b""  # an empty ExportTraceServiceResponse: everything accepted

    def add_to(self, server: grpc.aio.Server) -> None:
        handler = grpc.unary_unary_rpc_method_handler(self._export)  # raw bytes both ways
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(SERVICE, {"Export": handler}),)
        )
