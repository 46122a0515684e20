"""``[tracing]``: OpenTelemetry traces of Check (docs/operations.md, 'Tracing'); off unless
``enabled``."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from urllib.parse import urlsplit

from extauthz.errors import SettingsError


class TracingExporter(enum.StrEnum):
    """Where finished spans go: ``otlp`` (OTLP over gRPC to ``endpoint``; needs the package
    ``opentelemetry-exporter-otlp-proto-grpc``, the ``otlp`` extra), ``console`` (JSON lines
    on stdout) or ``none`` (spans are made, Envoy's context is continued, nothing leaves)."""

    OTLP = "otlp"
    CONSOLE = "console"
    NONE = "none"


@dataclass(frozen=True)
class TracingSettings:
    """``sample_ratio``: the share of traces extauthz starts itself (a Check without a
    ``traceparent``); a Check that continues Envoy's trace follows Envoy's sampled flag.
    ``endpoint``: the OTLP/gRPC collector (``http://`` plain, ``https://`` TLS)."""

    enabled: bool = False
    exporter: TracingExporter = TracingExporter.OTLP
    endpoint: str = "http://127.0.0.1:4317"
    service_name: str = "extauthz"
    sample_ratio: float = 1.0


def validate_tracing(t: TracingSettings) -> None:
    """:raises SettingsError: a value out of range or malformed."""
    if not 0.0 <= t.sample_ratio <= 1.0:
        raise SettingsError("tracing.sample_ratio: must be between 0 and 1")
    if not t.service_name.strip():
        raise SettingsError("tracing.service_name: must not be empty")
    url = urlsplit(t.endpoint)
    well_formed = url.scheme in ("http", "https") and bool(url.netloc)
    if t.exporter == TracingExporter.OTLP and not well_formed:
        raise SettingsError(
            f"tracing.endpoint: expected http(s)://HOST:PORT, got {t.endpoint!r}"
        )
