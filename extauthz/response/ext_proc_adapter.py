"""The one module of the response path that speaks Envoy's ext_proc protobuf
(``envoy.service.ext_proc.v3``, from the ``xds-protos`` package).

* :func:`to_response_context` reads a ``ProcessingRequest`` carrying ``response_headers``:
  the headers (``HttpHeaders.headers``, values in ``raw_value`` or ``value``), the
  ``xds.cluster_name`` response attribute (``ProcessingRequest.attributes``, or the older
  ``HttpHeaders.attributes``) and the Check's ``sid``/``decision``/``credential`` from
  ``metadata_context.filter_metadata["envoy.filters.http.ext_authz"]`` (forwarded by the
  filter's ``metadata_options.forwarding_namespaces.untyped``).
* :func:`to_processing_response` writes the ``HeadersResponse`` for it: ``remove_headers``,
  then ``set_headers`` with ``raw_value`` and ``append: true`` -- Envoy 1.36-1.40 leave a
  ``value``-only header empty and ignore ``append_action`` there (docs/session-updates.md).
* :func:`pass_through` answers any other phase unchanged.
"""

from __future__ import annotations

from envoy.config.core.v3.base_pb2 import HeaderValue, HeaderValueOption
from envoy.service.ext_proc.v3.external_processor_pb2 import (
    BodyResponse,
    CommonResponse,
    HeaderMutation,
    HeadersResponse,
    ProcessingRequest,
    ProcessingResponse,
    TrailersResponse,
)
from google.protobuf.wrappers_pb2 import BoolValue

from extauthz.response.processor import ResponseChanges, ResponseContext

EXT_AUTHZ_NAMESPACE = "envoy.filters.http.ext_authz"
CLUSTER_ATTRIBUTE = "xds.cluster_name"


def is_response_headers(request: ProcessingRequest) -> bool:
    return bool(request.WhichOneof("request") == "response_headers")


def _cluster(request: ProcessingRequest) -> str:
    for attributes in (request.attributes, request.response_headers.attributes):
        for struct in attributes.values():
            if CLUSTER_ATTRIBUTE in struct.fields:
                return str(struct.fields[CLUSTER_ATTRIBUTE].string_value)
    return ""


def to_response_context(request: ProcessingRequest, update_header: str) -> ResponseContext:
    """Translate the ``response_headers`` phase of one ext_proc stream.

    Header names are compared lower-cased; update values are kept as bytes (the domain
    decodes them strictly as UTF-8), ``Set-Cookie`` values decoded with ``surrogateescape``
    (:func:`to_processing_response` restores their bytes).
    """
    updates: list[str | bytes] = []
    cookies: list[str] = []
    name = update_header.lower()
    for header in request.response_headers.headers.headers:
        key = header.key.lower()
        if key == name:
            updates.append(header.raw_value if header.raw_value else header.value)
        elif key == "set-cookie":
            # surrogateescape: bytes that are not UTF-8 are written back as they came
            raw = (
                header.raw_value.decode("utf-8", "surrogateescape")
                if header.raw_value
                else header.value
            )
            cookies.append(raw)
    fields = request.metadata_context.filter_metadata[EXT_AUTHZ_NAMESPACE].fields
    return ResponseContext(
        cluster=_cluster(request),
        sid=fields["sid"].string_value if "sid" in fields else "",
        decision=fields["decision"].string_value if "decision" in fields else "",
        updates=tuple(updates),
        set_cookies=tuple(cookies),
        credential=fields["credential"].string_value if "credential" in fields else "",
    )


def to_processing_response(changes: ResponseChanges) -> ProcessingResponse:
    """The answer to the ``response_headers`` phase."""
    mutation = HeaderMutation(
        remove_headers=list(changes.remove),
        set_headers=[
            HeaderValueOption(
                header=HeaderValue(key=name, raw_value=value.encode("utf-8", "surrogateescape")),
                append=BoolValue(value=True),
            )
            for name, value in changes.append
        ],
    )
    return ProcessingResponse(
        response_headers=HeadersResponse(response=CommonResponse(header_mutation=mutation))
    )


def pass_through(request: ProcessingRequest) -> ProcessingResponse:
    """An empty answer of the phase ``request`` is in (nothing changed)."""
    phase = request.WhichOneof("request") or "request_headers"
    if phase.endswith("_headers"):
        return ProcessingResponse(**{phase: HeadersResponse()})
    if phase.endswith("_body"):
        return ProcessingResponse(**{phase: BodyResponse()})
    return ProcessingResponse(**{phase: TrailersResponse()})
