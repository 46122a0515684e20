"""The composition root's part for ``[tracing]``: settings in, the Check's
:class:`~extauthz.server.tracing.CheckTracing` out, or ``None`` when tracing is off (then
OpenTelemetry is not even imported)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from extauthz.errors import SettingsError
from extauthz.settings import Settings
from extauthz.settings.tracing import TracingExporter, TracingSettings

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import SpanProcessor
    from opentelemetry.sdk.trace.export import SpanExporter

    from extauthz.server.tracing import CheckTracing

OTLP_PACKAGE = "opentelemetry-exporter-otlp-proto-grpc"


def build_tracing(
    settings: Settings, exporter: SpanExporter | None = None
) -> CheckTracing | None:
    """The node's Check tracing, on a tracer provider of its own. ``exporter`` (a test's
    in-memory exporter, say) replaces ``tracing.exporter``; its spans are exported as each
    ends, where the configured exporters get them in batches.

    :raises SettingsError: ``tracing.exporter = "otlp"`` without its package installed.
    """
    t = settings.tracing
    if not t.enabled:
        return None
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    from extauthz.server.tracing import CheckTracing, new_provider

    processors: list[SpanProcessor] = []
    if exporter is not None:
        processors.append(SimpleSpanProcessor(exporter))
    else:
        configured = _exporter(t)
        if configured is not None:
            processors.append(BatchSpanProcessor(configured))
    return CheckTracing(
        new_provider(
            service_name=t.service_name,
            node_id=settings.node_id,
            sample_ratio=t.sample_ratio,
            processors=processors,
        )
    )


def _exporter(t: TracingSettings) -> SpanExporter | None:
    if t.exporter == TracingExporter.NONE:
        return None
    if t.exporter == TracingExporter.CONSOLE:
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    try:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (  # type: ignore[import-not-found,unused-ignore]
            OTLPSpanExporter,
        )
    except ImportError:
        raise SettingsError(
            f'tracing.exporter = "otlp" needs the package {OTLP_PACKAGE} (pip install '
            f"'extauthz[otlp]'), or set it to \"console\" or \"none\""
        ) from None
    exporter: SpanExporter = OTLPSpanExporter(
        endpoint=t.endpoint, insecure=t.endpoint.startswith("http://")
    )
    return exporter
