"""The one module that speaks Envoy protobuf: CheckRequest → RequestContext, Decision →
CheckResponse (extauthz.check.envoy_adapter)."""

from __future__ import annotations

import base64
import time
from pathlib import Path

import pytest
from envoy.config.core.v3.base_pb2 import HeaderMap, HeaderValue, HeaderValueOption
from envoy.service.auth.v3.external_auth_pb2 import CheckRequest
from google.protobuf import json_format
from google.rpc import code_pb2

from extauthz.check.decisions import Allow, Deny
from extauthz.check.envoy_adapter import to_check_response, to_request_context
from extauthz.errors import BadRequest, Reason
from extauthz.server.grpc_server import AuthorizationServicer
from tests.fixtures.core import (
    FakeServicerContext,
    build_harness,
    load_check_request,
    metadata,
    parse_check_request,
    response_headers,
)

OVERWRITE = HeaderValueOption.HeaderAppendAction.OVERWRITE_IF_EXISTS_OR_ADD
APPEND = HeaderValueOption.HeaderAppendAction.APPEND_IF_EXISTS_OR_ADD


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def test_request_context_from_a_check_request() -> None:
    ctx = to_request_context(load_check_request("api_bearer", TOKEN="tok"))
    assert (ctx.method, ctx.scheme, ctx.host) == ("GET", "https", "app.test")
    assert (ctx.path, ctx.query) == ("/api/items", "page=2")
    assert ctx.path_and_query == "/api/items?page=2"
    assert ctx.header("authorization") == "Bearer tok"
    assert ctx.header("x-request-id") == "abc"
    assert ctx.context_extensions == {"client": "auto"}
    assert ctx.peer_address == "10.0.0.7"


def test_header_names_are_lower_cased_and_the_method_upper_cased() -> None:
    ctx = to_request_context(load_check_request("mixed_case_headers", TOKEN="tok"))
    assert ctx.method == "GET"
    assert dict(ctx.headers) == {"authorization": "bEaReR tok", "accept": "application/json"}


def test_names_differing_only_in_case_are_joined_not_dropped() -> None:
    request = parse_check_request(
        {
            "attributes": {
                "request": {
                    "http": {
                        "method": "GET",
                        "path": "/",
                        "headers": {"Authorization": "Bearer a", "authorization": "Bearer b"},
                    }
                }
            }
        }
    )
    value = to_request_context(request).header("authorization")
    assert value is not None
    assert sorted(value.split(",")) == ["Bearer a", "Bearer b"]


def test_header_map_raw_values_are_decoded_and_repeats_joined() -> None:
    request = load_check_request(
        "header_map_raw", RAW1=b64(b"Bearer a"), RAW2=b64(b"Bearer \xff\xfe")
    )
    ctx = to_request_context(request)
    assert ctx.header("authorization") == "Bearer a,Bearer \ufffd\ufffd"


def test_a_check_without_method_or_path_is_a_bad_request() -> None:
    with pytest.raises(BadRequest) as caught:
        to_request_context(load_check_request("no_http"))
    assert caught.value.reason is Reason.MALFORMED_REQUEST


async def test_check_answers_a_bad_request_with_400(tmp_path: Path) -> None:
    h = build_harness(tmp_path)
    response = await AuthorizationServicer(h.authorizer).Check(
        load_check_request("no_http"), FakeServicerContext()
    )
    assert response.denied_response.status.code == 400
    assert response.status.code != code_pb2.OK
    assert response_headers(response)[-2:] == [
        (
            "www-authenticate",
            'Bearer realm="extauthz-test", error="invalid_request", '
            'error_description="check request without method or path"',
        ),
        ("content-type", "application/json"),
    ]
    assert metadata(response)["reason"] == "malformed_request"


def test_allow_becomes_an_ok_http_response() -> None:
    decision = Allow(
        headers_to_set=(("authorization", "Bearer j"), ("cookie", "a=1")),
        headers_to_remove=("x-remove",),
        response_headers_to_add=(("set-cookie", "s=1"), ("set-cookie", "t=2")),
        metadata={"decision": "allow", "sid": "s1"},
    )
    response = to_check_response(decision)
    assert response.status.code == code_pb2.OK
    assert not response.HasField("denied_response")
    ok = response.ok_response
    assert [(h.header.key, h.header.value, h.append_action) for h in ok.headers] == [
        ("authorization", "Bearer j", OVERWRITE),
        ("cookie", "a=1", OVERWRITE),
    ]
    assert not any(h.HasField("append") for h in ok.headers)  # the deprecated bool stays unset
    assert list(ok.headers_to_remove) == ["x-remove"]
    added = [(h.header.key, h.header.value, h.append_action) for h in ok.response_headers_to_add]
    assert added == [
        ("set-cookie", "s=1", APPEND),
        ("set-cookie", "t=2", APPEND),
    ]
    metadata = json_format.MessageToDict(response.dynamic_metadata)
    assert metadata == {"decision": "allow", "sid": "s1"}


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (401, code_pb2.UNAUTHENTICATED),
        (403, code_pb2.PERMISSION_DENIED),
        (302, code_pb2.PERMISSION_DENIED),
        (400, code_pb2.PERMISSION_DENIED),
        (429, code_pb2.PERMISSION_DENIED),
    ],
)
def test_deny_becomes_a_denied_http_response(status: int, code: int) -> None:
    decision = Deny(
        status,
        (("set-cookie", "a=; Max-Age=0"), ("set-cookie", "b=; Max-Age=0"), ("location", "/x")),
        '{"error":"x"}',
        {"decision": "deny"},
    )
    response = to_check_response(decision)
    assert response.status.code == code
    assert not response.HasField("ok_response")
    denied = response.denied_response
    assert denied.status.code == status
    assert [(h.header.key, h.header.value, h.append_action) for h in denied.headers] == [
        ("set-cookie", "a=; Max-Age=0", APPEND),
        ("set-cookie", "b=; Max-Age=0", APPEND),
        ("location", "/x", APPEND),
    ]
    assert denied.body == '{"error":"x"}'
    assert json_format.MessageToDict(response.dynamic_metadata) == {"decision": "deny"}


def test_repeated_header_lines_are_joined_with_their_own_separator() -> None:
    """Raw ``header_map`` entries are joined as Envoy joins ``headers``
    (``,``), except ``cookie``, whose lines are joined with ``; `` (RFC 6265 §5.4), so a
    rewrite of the cookie header never glues two cookies into one value."""
    request = CheckRequest()
    http = request.attributes.request.http
    http.method, http.path = "GET", "/"
    http.header_map.CopyFrom(
        HeaderMap(
            headers=[
                HeaderValue(key="cookie", raw_value=b"a=1"),
                HeaderValue(key="Cookie", raw_value=b"b=2; c=3"),
                HeaderValue(key="accept", raw_value=b"text/html"),
                HeaderValue(key="Accept", raw_value=b"*/*"),
            ]
        )
    )
    headers = to_request_context(request).headers
    assert headers == {"cookie": "a=1; b=2; c=3", "accept": "text/html,*/*"}


def test_many_repeated_header_lines_are_joined_in_linear_time() -> None:
    """A CheckRequest as large as the server takes (1 MiB) can carry some 80,000 header lines
    of one name; joining them one by one copied the growing value each time (about 1 s of a
    blocked event loop for one request). Everything that can reach the Check port could
    stall the node."""
    lines = 160_000
    request = CheckRequest()
    http = request.attributes.request.http
    http.method, http.path = "GET", "/"
    http.header_map.headers.extend(HeaderValue(key="x-a", value="a") for _ in range(lines))
    http.header_map.headers.extend(HeaderValue(key="cookie", value="c=1") for _ in range(3))
    started = time.monotonic()
    ctx = to_request_context(request)
    assert time.monotonic() - started < 1.0
    assert ctx.headers["x-a"] == ",".join(["a"] * lines)
    assert ctx.headers["cookie"] == "c=1; c=1; c=1"
