"""OpenTelemetry traces of Check, opt-in (``[tracing]``; docs/operations.md, 'Tracing').
Imported only when tracing is on: with it off, nothing of OpenTelemetry is loaded and a Check
pays one ``if`` (:class:`~extauthz.server.grpc_server.AuthorizationServicer`).

A Check continues the trace Envoy started. The W3C Trace Context (``traceparent`` and
``tracestate``, W3C Trace Context §3) comes from the gRPC call's metadata, where Envoy's tracer
puts the context of its own span for the ext_authz call, or, when the call carries none, from
the checked request's headers as Envoy forwarded them in the ``CheckRequest``
(:func:`~extauthz.check.envoy_adapter.trace_context`); both come from one source, read by
OpenTelemetry's ``TraceContextTextMapPropagator``.

Spans:

* ``extauthz.Check`` (kind ``SERVER``), a child of Envoy's span, with the attributes
  :data:`CHECK_ATTRIBUTES` (decision ``allow``, ``deny`` or ``unavailable``, the reason code,
  where the session was found, the credential's source, the session's kind, strategy, node);
* ``extauthz.store.get`` (kind ``CLIENT``), a child of it for each session lookup the Check
  asks of the store, with ``db.system.name`` (``redis`` or ``memory``) and
  ``extauthz.session_cache`` (``hit``: this node's cache answered; ``miss``, ``bypass``: the
  store did; ``off``).

No token, cookie, JWT, ``Authorization`` header or session id is ever an attribute or an
event: the attributes are those named here, exceptions are not recorded (a span's status
carries the exception's type only).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any, cast

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from extauthz import __version__
from extauthz.check.decisions import Decision
from extauthz.check.envoy_adapter import TRACE_CONTEXT_HEADERS, trace_context
from extauthz.errors import StoreUnavailable
from extauthz.store.cache import lookup_source
from extauthz.store.model import Session, SessionStore

CHECK_SPAN = "extauthz.Check"
STORE_SPAN = "extauthz.store.get"
# the decision metadata fields a Check span carries, as extauthz.<field>; never "sid"
CHECK_FIELDS = ("decision", "reason", "session_cache", "credential", "store_strategy", "node_id")
CHECK_ATTRIBUTES = (*(f"extauthz.{f}" for f in CHECK_FIELDS), "extauthz.session.kind")
STORE_ATTRIBUTES = ("db.system.name", "extauthz.session_cache")

# request: the CheckRequest, which only the Envoy adapter reads (docs/architecture.md)
Decide = Callable[[Any], Awaitable[Decision]]


def new_provider(
    *, service_name: str, node_id: str, sample_ratio: float, processors: list[SpanProcessor]
) -> TracerProvider:
    """A tracer provider of this node's own (OpenTelemetry's global one is left alone):
    ``service.name`` and ``service.instance.id`` (the node id) on every span; traces Envoy
    started follow its sampled flag, those extauthz starts are sampled at ``sample_ratio``."""
    provider = TracerProvider(
        resource=Resource.create(
            {
                "service.name": service_name,
                "service.version": __version__,
                "service.instance.id": node_id,
            }
        ),
        sampler=ParentBased(TraceIdRatioBased(sample_ratio)),
    )
    for processor in processors:
        provider.add_span_processor(processor)
    return provider


def _metadata_carrier(context: Any) -> dict[str, str]:
    """The Trace Context entries of the gRPC call's invocation metadata (none without)."""
    read = getattr(context, "invocation_metadata", None)
    found: dict[str, str] = {}
    for key, value in (read() if read is not None else None) or ():
        name = key.lower()
        if name in TRACE_CONTEXT_HEADERS and isinstance(value, str):
            found[name] = value
    return found if "traceparent" in found else {}


class CheckTracing:
    """The spans of Check (module docstring), made by ``provider``'s tracer."""

    def __init__(self, provider: TracerProvider) -> None:
        self.provider = provider
        self._tracer = provider.get_tracer("extauthz", __version__)
        self._propagator = TraceContextTextMapPropagator()

    def parent(self, request: Any, context: Any) -> Any:
        """The OpenTelemetry context Envoy's span gives (empty when it sent none)."""
        carrier: Mapping[str, str] = _metadata_carrier(context) or trace_context(request)
        return self._propagator.extract(carrier)

    async def check(self, request: Any, context: Any, decide: Decide) -> Decision:
        """``decide(request)`` in an ``extauthz.Check`` span.

        :raises StoreUnavailable: from ``decide`` (the span ends with an error status).
        """
        with self._tracer.start_as_current_span(
            CHECK_SPAN,
            context=self.parent(request, context),
            kind=SpanKind.SERVER,
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            try:
                decision = await decide(request)
            except StoreUnavailable:
                span.set_attribute("extauthz.decision", "unavailable")
                span.set_status(Status(StatusCode.ERROR, "session store unavailable"))
                raise
            except BaseException as exc:
                span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
                raise
            metadata = decision.metadata
            for field in CHECK_FIELDS:
                value = metadata.get(field)
                if value:
                    span.set_attribute(f"extauthz.{field}", value)
            return decision

    def traced_store(self, store: SessionStore) -> SessionStore:
        """``store`` whose lookups in a Check are ``extauthz.store.get`` spans."""
        return cast(SessionStore, TracedStore(store, self._tracer))

    def shutdown(self) -> None:
        """Export what is left and stop the exporters (the provider's span processors)."""
        self.provider.shutdown()


class TracedStore:
    """A :class:`~extauthz.store.model.SessionStore` whose ``get`` is a child span of the
    current Check span; outside a recorded span (a login, the admin API) it is ``store``
    itself. Every other operation goes to ``store`` unchanged."""

    def __init__(self, store: SessionStore, tracer: trace.Tracer) -> None:
        self._store = store
        self._tracer = tracer

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def get(self, token_hash: str) -> Session | None:
        check = trace.get_current_span()
        if not check.is_recording():
            return await self._store.get(token_hash)
        with self._tracer.start_as_current_span(
            STORE_SPAN,
            kind=SpanKind.CLIENT,
            attributes={"db.system.name": self._store.backend},
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            try:
                session = await self._store.get(token_hash)
            except StoreUnavailable:
                span.set_status(Status(StatusCode.ERROR, "session store unavailable"))
                raise
            span.set_attribute("extauthz.session_cache", lookup_source.get())
            if session is not None:
                check.set_attribute("extauthz.session.kind", session.kind)
            return session
