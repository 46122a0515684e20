"""The HTTP filters and the access log of the generated Envoy configs, as typed Envoy API
messages (xds-protos). Every choice that is a contract with extauthz is explained here, since
the generated YAML carries no comments."""

from __future__ import annotations

import re
from collections.abc import Sequence

from envoy.config.accesslog.v3.accesslog_pb2 import AccessLog
from envoy.config.common.mutation_rules.v3.mutation_rules_pb2 import HeaderMutation as Mutation
from envoy.config.core.v3.config_source_pb2 import ApiVersion
from envoy.config.core.v3.grpc_service_pb2 import GrpcService
from envoy.extensions.access_loggers.stream.v3.stream_pb2 import StdoutAccessLog
from envoy.extensions.common.matching.v3.extension_matcher_pb2 import ExtensionWithMatcher
from envoy.extensions.filters.common.matcher.action.v3.skip_action_pb2 import SkipFilter
from envoy.extensions.filters.http.ext_authz.v3.ext_authz_pb2 import ExtAuthz
from envoy.extensions.filters.http.ext_proc.v3.ext_proc_pb2 import ExternalProcessor
from envoy.extensions.filters.http.ext_proc.v3.processing_mode_pb2 import ProcessingMode
from envoy.extensions.filters.http.header_mutation.v3.header_mutation_pb2 import HeaderMutation
from envoy.extensions.filters.http.router.v3.router_pb2 import Router
from envoy.extensions.filters.network.http_connection_manager.v3.http_connection_manager_pb2 import (  # noqa: E501
    HttpFilter,
)
from envoy.extensions.formatter.req_without_query.v3.req_without_query_pb2 import ReqWithoutQuery
from envoy.type.matcher.v3.http_inputs_pb2 import HttpResponseHeaderMatchInput
from envoy.type.v3.http_status_pb2 import StatusCode
from google.protobuf.any_pb2 import Any
from google.protobuf.message import Message
from xds.type.matcher.v3.matcher_pb2 import Matcher

EXT_AUTHZ = "envoy.filters.http.ext_authz"
# the name of the ext_proc filter as wrapped in its matcher: ExtProcPerRoute goes to this name
SESSION_UPDATE = "extauthz_session_update"
EXTAUTHZ_GRPC, EXTAUTHZ_HTTP, UPSTREAM = "extauthz_grpc", "extauthz_http", "upstream"
# every header extauthz adds for Envoy's eyes only starts with this
INTERNAL_PREFIX = "x-extauthz-"

# the access log fields every generated config writes (%REQ_WITHOUT_QUERY%: a client that puts
# a token in the query string, never used as a credential, must not get it written to the log)
_LOG_FIELDS = (
    ("start_time", "%START_TIME%"),
    ("request_id", "%REQ(X-REQUEST-ID)%"),
    ("method", "%REQ(:METHOD)%"),
    ("path", "%REQ_WITHOUT_QUERY(:PATH)%"),
    ("status", "%RESPONSE_CODE%"),
    ("flags", "%RESPONSE_FLAGS%"),
    ("duration_ms", "%DURATION%"),
    ("upstream_cluster", "%UPSTREAM_CLUSTER%"),
)
# the CheckResponse dynamic_metadata extauthz sets (docs/architecture.md)
EXT_AUTHZ_LOG_KEYS = ("decision", "reason", "sid", "store_strategy", "node_id", "session_cache")
# the sticky front: which node's sidecar answered, after how many attempts
STICKY_LOG_FIELDS = (
    ("upstream_host", "%UPSTREAM_HOST%"),
    ("attempts", "%UPSTREAM_REQUEST_ATTEMPT_COUNT%"),
)


def packed(message: Message) -> Any:
    """``message`` as a ``google.protobuf.Any`` (``typed_config``)."""
    out = Any()
    out.Pack(message)
    return out


def access_log(extra: Sequence[tuple[str, str]]) -> AccessLog:
    """One JSON object per request on stdout: the common fields, then ``extra``."""
    log = StdoutAccessLog()
    fmt = log.log_format
    fmt.formatters.add(name="envoy.formatter.req_without_query").typed_config.CopyFrom(
        packed(ReqWithoutQuery())
    )
    for key, value in (*_LOG_FIELDS, *extra):
        fmt.json_format.fields[key].string_value = value
    return AccessLog(name="envoy.access_loggers.stdout", typed_config=packed(log))


def ext_authz_log_fields() -> list[tuple[str, str]]:
    return [(k, f"%DYNAMIC_METADATA({EXT_AUTHZ}:{k})%") for k in EXT_AUTHZ_LOG_KEYS]


def header_mutation(extra_headers: Sequence[str] = ()) -> HttpFilter:
    """The response backstop: first in the list, so the LAST filter on the response path.
    Whatever ext_proc did (disabled on the route, skipped, failed), no ``x-extauthz-*`` header
    (the session update header included, and any of ``extra_headers``) leaves toward the client
    (docs/session-updates.md)."""
    config = HeaderMutation()
    rules = config.mutations.response_mutations
    rules.add().remove_on_match.key_matcher.prefix = INTERNAL_PREFIX
    for name in extra_headers:
        rules.append(Mutation(remove=name))
    return HttpFilter(name="envoy.filters.http.header_mutation", typed_config=packed(config))


def ext_authz(check_headers: Sequence[str] = ()) -> HttpFilter:
    """ext_authz over gRPC to ``extauthz_grpc``. An authz service that cannot answer (down,
    timeout 0.5 s, a gRPC error such as UNAVAILABLE from a store failover) is a 503
    (``status_on_error``), never an allow (``failure_mode_allow``) and never a 401.

    ``allowed_headers``: the ``CheckRequest`` carries only ``check_headers``, the request
    headers the Check reads (``extauthz.check.context.check_headers``), not every header of the
    request: less for Envoy to copy and serialise and for extauthz to parse per request
    (docs/benchmarks.md). Envoy fills method, scheme, host and path whatever the list says.
    Empty: no list, Envoy sends every header."""
    config = ExtAuthz(transport_api_version=ApiVersion.V3, failure_mode_allow=False)
    for name in check_headers:
        config.allowed_headers.patterns.add(exact=name)
    config.grpc_service.envoy_grpc.cluster_name = EXTAUTHZ_GRPC
    config.grpc_service.timeout.FromMilliseconds(500)
    config.status_on_error.code = StatusCode.ServiceUnavailable
    return HttpFilter(name=EXT_AUTHZ, typed_config=packed(config))


def _header_present(name: str, header: str, regex: str) -> Matcher.MatcherList.Predicate:
    predicate = Matcher.MatcherList.Predicate()
    single = predicate.single_predicate
    single.input.name = name
    single.input.typed_config.CopyFrom(packed(HttpResponseHeaderMatchInput(header_name=header)))
    single.value_match.safe_regex.google_re2.SetInParent()
    single.value_match.safe_regex.regex = regex
    return predicate


def set_cookie_regex(cookie_name: str) -> str:
    """RE2 for a ``set-cookie`` value that sets ``cookie_name``: Envoy joins repeated
    Set-Cookie lines with ",", so the name at the start of any of them, blanks around it
    (user agents trim them, RFC 6265 section 5.2)."""
    return rf"(?s)(?:.*,)?\s*{re.escape(cookie_name)}\s*=.*"


def session_update(cookie_name: str, update_header: str) -> HttpFilter:
    """Session updates from upstream responses (docs/session-updates.md): ext_proc on the same
    extauthz process and port as ext_authz, wrapped in a matcher (``ExtensionWithMatcher``) so
    that only a response carrying ``update_header`` (``session_updates.header``), or a
    Set-Cookie for ``cookie_name`` (``session.cookie_name``), opens a stream; every other
    response skips the filter. Fails closed like ext_authz: a processor that cannot answer
    turns such a response into a 503. The update is written (and every caching node told)
    before the answer: ``message_timeout`` 1 s."""
    proc = ExternalProcessor(failure_mode_allow=False, response_attributes=["xds.cluster_name"])
    proc.grpc_service.CopyFrom(GrpcService())
    proc.grpc_service.envoy_grpc.cluster_name = EXTAUTHZ_GRPC
    proc.grpc_service.timeout.FromSeconds(1)
    proc.status_on_error.code = StatusCode.ServiceUnavailable
    proc.message_timeout.FromSeconds(1)
    proc.processing_mode.request_header_mode = ProcessingMode.SKIP
    proc.processing_mode.response_header_mode = ProcessingMode.SEND
    proc.metadata_options.forwarding_namespaces.untyped.append(EXT_AUTHZ)
    for header in (update_header, "set-cookie"):
        proc.forward_rules.allowed_headers.patterns.add(exact=header)
    proc.mutation_rules.disallow_is_error.value = True

    wrapper = ExtensionWithMatcher()
    wrapper.extension_config.name = "envoy.filters.http.ext_proc"
    wrapper.extension_config.typed_config.CopyFrom(packed(proc))
    matcher = wrapper.xds_matcher.matcher_list.matchers.add()
    either = matcher.predicate.not_matcher.or_matcher.predicate
    either.append(_header_present("update_header", update_header, "(?s).*"))
    either.append(_header_present("session_cookie", "set-cookie", set_cookie_regex(cookie_name)))
    matcher.on_match.action.name = "skip"
    matcher.on_match.action.typed_config.CopyFrom(packed(SkipFilter()))
    return HttpFilter(name=SESSION_UPDATE, typed_config=packed(wrapper))


def router() -> HttpFilter:
    return HttpFilter(name="envoy.filters.http.router", typed_config=packed(Router()))
