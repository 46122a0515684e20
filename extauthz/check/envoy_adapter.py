"""The one module that speaks Envoy's protobuf types (from the ``xds-protos`` package).

* :func:`to_request_context` reads ``envoy.service.auth.v3.CheckRequest``
  (``attributes.request.http``, ``attributes.context_extensions``, ``attributes.source``).
* :func:`to_check_response` writes ``envoy.service.auth.v3.CheckResponse``: an
  ``OkHttpResponse`` with header mutations for :class:`Allow`, a ``DeniedHttpResponse`` for
  :class:`Deny`, and ``dynamic_metadata`` for both (Envoy emits it under the filter's
  namespace, ``envoy.filters.http.ext_authz``, for access logs).

Both run once per Check (docs/benchmarks.md, 'Where a cached Check's time goes'): the
messages are filled in place rather than built from nested constructors, and the few distinct
``dynamic_metadata`` values (one per session and cache outcome) are kept serialized in a
bounded cache instead of being rebuilt field by field into a ``Struct``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from functools import lru_cache
from typing import Any

from envoy.config.core.v3.base_pb2 import HeaderValueOption
from envoy.service.auth.v3.external_auth_pb2 import CheckRequest, CheckResponse
from google.protobuf.struct_pb2 import Struct
from google.rpc import code_pb2

from extauthz.check.context import RequestContext, join_headers
from extauthz.check.decisions import Allow, Decision, Deny
from extauthz.errors import BadRequest, Reason

_OVERWRITE = HeaderValueOption.HeaderAppendAction.OVERWRITE_IF_EXISTS_OR_ADD
_APPEND = HeaderValueOption.HeaderAppendAction.APPEND_IF_EXISTS_OR_ADD
_DENY_CODE = {401: code_pb2.UNAUTHENTICATED, 403: code_pb2.PERMISSION_DENIED}
# distinct dynamic_metadata values kept serialized: a few per live session (the cache outcome
# varies), so this covers the busy sessions of a node
_METADATA_CACHE_SIZE = 4096


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
    headers: dict[str, str]
    if http.header_map.headers:
        headers = join_headers(_header_map_lines(http))
    else:
        fields = http.headers
        headers = {name: fields[name] for name in fields}  # dict(map) is twice as slow in upb
        names = "\n".join(headers)
        if names != names.lower():  # Envoy sends lower-case names; anyone else may not
            headers = join_headers(headers.items())
    path, _, query = http.path.partition("?")
    source = request.attributes.source.address.socket_address
    extensions = request.attributes.context_extensions
    return RequestContext(
        method=http.method.upper(),
        scheme=http.scheme,
        host=http.host,
        path=path,
        query=query,
        headers=headers,
        context_extensions={k: extensions[k] for k in extensions},
        peer_address=source.address,
    )


def _header_map_lines(http: Any) -> Iterator[tuple[str, str]]:
    """``(name, value)`` of each entry of ``http.header_map`` (Envoy's ``encode_raw_headers``:
    the value in ``raw_value``, else in ``value``)."""
    for e in http.header_map.headers:
        yield e.key, e.raw_value.decode("utf-8", "replace") if e.raw_value else e.value


@lru_cache(maxsize=_METADATA_CACHE_SIZE)
def _serialized_metadata(items: tuple[tuple[str, str], ...]) -> bytes:
    struct = Struct()
    for key, value in items:
        struct.fields[key].string_value = value
    return struct.SerializeToString(deterministic=True)


def _add_options(options: Any, headers: Sequence[tuple[str, str]], action: int) -> None:
    """Append one ``HeaderValueOption`` per header to the repeated field ``options``."""
    for name, value in headers:
        option = options.add()
        option.header.key = name
        option.header.value = value
        option.append_action = action


def to_check_response(decision: Decision) -> CheckResponse:
    """Translate the pipeline's decision into a ``CheckResponse``."""
    response = CheckResponse()
    response.dynamic_metadata.MergeFromString(
        _serialized_metadata(tuple(decision.metadata.items()))
    )
    if isinstance(decision, Allow):
        response.status.code = code_pb2.OK
        ok = response.ok_response
        ok.SetInParent()
        _add_options(ok.headers, decision.headers_to_set, _OVERWRITE)
        ok.headers_to_remove.extend(decision.headers_to_remove)
        _add_options(ok.response_headers_to_add, decision.response_headers_to_add, _APPEND)
        return response
    assert isinstance(decision, Deny)
    response.status.code = _DENY_CODE.get(decision.status, code_pb2.PERMISSION_DENIED)
    denied = response.denied_response
    denied.status.code = decision.status
    _add_options(denied.headers, decision.headers, _APPEND)
    denied.body = decision.body
    return response


TRACE_CONTEXT_HEADERS = ("traceparent", "tracestate")  # W3C Trace Context, §3


def trace_context(request: CheckRequest) -> dict[str, str]:
    """The checked request's W3C Trace Context headers (``traceparent``, ``tracestate``;
    lower-case names), those that are there, as Envoy forwarded them in
    ``attributes.request.http`` (``headers`` or ``header_map``).

    Repeated lines are joined with ``,`` as :func:`to_request_context` joins them (and as
    Envoy does in ``headers``): ``tracestate`` lines make one list (W3C Trace Context §3.3.1.1),
    and two ``traceparent`` lines make a value that is not a ``traceparent``, so the Check
    starts a trace of its own instead of following whichever line came last (§3.2.2.1)."""
    http = request.attributes.request.http
    if http.header_map.headers:
        lines = _header_map_lines(http)
        return join_headers((k, v) for k, v in lines if k.lower() in TRACE_CONTEXT_HEADERS)
    fields = http.headers
    return join_headers((k, fields[k]) for k in fields if k.lower() in TRACE_CONTEXT_HEADERS)
