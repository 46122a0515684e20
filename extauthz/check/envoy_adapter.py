"""The one module that speaks Envoy's protobuf types (from the ``xds-protos`` package).

* :func:`to_request_context` reads ``envoy.service.auth.v3.CheckRequest``
  (``attributes.request.http``, ``attributes.context_extensions``, ``attributes.source``).
* :func:`to_check_response` writes ``envoy.service.auth.v3.CheckResponse``: an
  ``OkHttpResponse`` with header mutations for :class:`Allow`, a ``DeniedHttpResponse`` for
  :class:`Deny`, and ``dynamic_metadata`` for both (Envoy emits it under the filter's
  namespace, ``envoy.filters.http.ext_authz``, for access logs).
"""

from __future__ import annotations

from collections.abc import Mapping

from envoy.config.core.v3.base_pb2 import HeaderValue, HeaderValueOption
from envoy.service.auth.v3.external_auth_pb2 import (
    CheckRequest,
    CheckResponse,
    DeniedHttpResponse,
    OkHttpResponse,
)
from envoy.type.v3.http_status_pb2 import HttpStatus
from google.protobuf.struct_pb2 import Struct
from google.rpc import code_pb2, status_pb2

from extauthz.check.context import RequestContext, join_headers
from extauthz.check.decisions import Allow, Decision, Deny
from extauthz.errors import BadRequest, Reason

_OVERWRITE = HeaderValueOption.HeaderAppendAction.OVERWRITE_IF_EXISTS_OR_ADD
_APPEND = HeaderValueOption.HeaderAppendAction.APPEND_IF_EXISTS_OR_ADD
_DENY_CODE = {401: code_pb2.UNAUTHENTICATED, 403: code_pb2.PERMISSION_DENIED}


def to_request_context(request: CheckRequest) -> RequestContext:
    """Translate a ``CheckRequest``.

    Header names are lower-cased; repeated headers, in ``header_map``
    (``encode_raw_headers``) or as names that differ only in case, are joined with ``,`` as
    Envoy joins them in ``headers`` (``cookie`` with ``; ``: :func:`join_headers`), so no
    copy is silently dropped.

    :raises BadRequest: the request has no HTTP method or path (not an HTTP check).
    """
    http = request.attributes.request.http
    if not http.method or not http.path:
        raise BadRequest(Reason.MALFORMED_REQUEST, "check request without method or path")
    pairs: list[tuple[str, str]]
    if http.header_map.headers:
        pairs = [
            (e.key, e.raw_value.decode("utf-8", "replace") if e.raw_value else e.value)
            for e in http.header_map.headers
        ]
    else:
        pairs = list(http.headers.items())
    headers = join_headers(pairs)
    path, _, query = http.path.partition("?")
    source = request.attributes.source.address.socket_address
    return RequestContext(
        method=http.method.upper(),
        scheme=http.scheme,
        host=http.host,
        path=path,
        query=query,
        headers=headers,
        context_extensions=dict(request.attributes.context_extensions),
        peer_address=source.address,
    )


def _metadata(values: Mapping[str, str]) -> Struct:
    struct = Struct()
    struct.update(values)
    return struct


def _option(name: str, value: str, action: int) -> HeaderValueOption:
    return HeaderValueOption(header=HeaderValue(key=name, value=value), append_action=action)


def to_check_response(decision: Decision) -> CheckResponse:
    """Translate the pipeline's decision into a ``CheckResponse``."""
    if isinstance(decision, Allow):
        return CheckResponse(
            status=status_pb2.Status(code=code_pb2.OK),
            ok_response=OkHttpResponse(
                headers=[_option(k, v, _OVERWRITE) for k, v in decision.headers_to_set],
                headers_to_remove=list(decision.headers_to_remove),
                response_headers_to_add=[
                    _option(k, v, _APPEND) for k, v in decision.response_headers_to_add
                ],
            ),
            dynamic_metadata=_metadata(decision.metadata),
        )
    assert isinstance(decision, Deny)
    return CheckResponse(
        status=status_pb2.Status(code=_DENY_CODE.get(decision.status, code_pb2.PERMISSION_DENIED)),
        denied_response=DeniedHttpResponse(
            status=HttpStatus(code=decision.status),
            headers=[_option(k, v, _APPEND) for k, v in decision.headers],
            body=decision.body,
        ),
        dynamic_metadata=_metadata(decision.metadata),
    )


TRACE_CONTEXT_HEADERS = ("traceparent", "tracestate")  # W3C Trace Context, §3


def trace_context(request: CheckRequest) -> dict[str, str]:
    """The checked request's W3C Trace Context headers (``traceparent``, ``tracestate``;
    lower-case names), those that are there, as Envoy forwarded them in
    ``attributes.request.http`` (``headers`` or ``header_map``)."""
    http = request.attributes.request.http
    if http.header_map.headers:
        return {
            e.key.lower(): e.raw_value.decode("utf-8", "replace") if e.raw_value else e.value
            for e in http.header_map.headers
            if e.key.lower() in TRACE_CONTEXT_HEADERS
        }
    return {k.lower(): v for k, v in http.headers.items() if k.lower() in TRACE_CONTEXT_HEADERS}
