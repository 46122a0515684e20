"""The Envoy configs in envoy/: validated by every supported Envoy binary, the settings that
matter asserted structurally, and the front proxy run for real against a fake authz service.

The fake (a plain grpc servicer of envoy.service.auth.v3.Authorization) lets these tests pin
Envoy's side of the contract without extauthz itself: what happens on allow, deny and error,
which routes skip authz, and that the ext_authz dynamic metadata reaches the access log.
"""

from __future__ import annotations

import http.client
import json
import threading
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from envoy.config.core.v3 import base_pb2
from envoy.service.auth.v3 import external_auth_pb2 as auth_pb2
from envoy.service.auth.v3 import external_auth_pb2_grpc as auth_grpc
from envoy.type.v3 import http_status_pb2
from google.protobuf import struct_pb2
from google.rpc import code_pb2, status_pb2

from extauthz.check.context import check_headers
from tests.support import (
    FRONT_PROXY,
    REPO_ROOT,
    EchoUpstreamProcess,
    EnvoyProcess,
    Stack,
    StackPorts,
    generate_envoy_config,
    validate_envoy_config,
)

ENVOY_CONFIGS = sorted((REPO_ROOT / "envoy").glob("*.yaml"))
EXT_AUTHZ = "envoy.filters.http.ext_authz"
EXT_AUTHZ_TYPE = "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz"
PER_ROUTE_TYPE = "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute"


# -- validation by the real binaries ----------------------------------------------------------


def test_front_proxy_is_among_the_validated_configs() -> None:
    assert FRONT_PROXY in ENVOY_CONFIGS


@pytest.mark.e2e
@pytest.mark.parametrize("config", ENVOY_CONFIGS, ids=lambda p: p.name)
def test_config_validates(envoy_binary: str, config: Path) -> None:
    result = validate_envoy_config(envoy_binary, config)
    assert result.returncode == 0, f"{config.name} rejected:\n{result.stdout}\n{result.stderr}"
    assert "OK" in result.stdout


@pytest.mark.e2e
def test_validation_rejects_a_broken_config(envoy_binary: str, tmp_path: Path) -> None:
    # the validation test above must be able to fail: a misspelt field is an error
    doc = yaml.safe_load(FRONT_PROXY.read_text())
    hcm = _hcm(doc)
    hcm["normalise_path"] = hcm.pop("normalize_path")
    broken = tmp_path / "broken.yaml"
    broken.write_text(yaml.safe_dump(doc))
    assert validate_envoy_config(envoy_binary, broken).returncode != 0


@pytest.mark.e2e
def test_rendered_front_proxy_validates(envoy_binary: str, tmp_path: Path) -> None:
    rendered = generate_envoy_config(StackPorts.allocate(), tmp_path)
    result = validate_envoy_config(envoy_binary, rendered)
    assert result.returncode == 0, result.stderr


# -- structure of envoy/front-proxy.yaml --------------------------------------------------------


def _front() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(FRONT_PROXY.read_text())
    return doc


def _hcm(doc: dict[str, Any]) -> dict[str, Any]:
    (listener,) = doc["static_resources"]["listeners"]
    (chain,) = listener["filter_chains"]
    (hcm_filter,) = [
        f for f in chain["filters"] if f["name"] == "envoy.filters.network.http_connection_manager"
    ]
    typed: dict[str, Any] = hcm_filter["typed_config"]
    return typed


def _ext_authz(doc: dict[str, Any]) -> dict[str, Any]:
    filters = _hcm(doc)["http_filters"]
    names = [f["name"] for f in filters]
    assert names[-1] == "envoy.filters.http.router"
    assert names.count(EXT_AUTHZ) == 1
    config: dict[str, Any] = filters[names.index(EXT_AUTHZ)]["typed_config"]
    assert config["@type"] == EXT_AUTHZ_TYPE
    return config


def _routes(doc: dict[str, Any]) -> list[dict[str, Any]]:
    (vhost,) = _hcm(doc)["route_config"]["virtual_hosts"]
    routes: list[dict[str, Any]] = vhost["routes"]
    return routes


def _route(doc: dict[str, Any], **match: str) -> dict[str, Any]:
    (route,) = [r for r in _routes(doc) if r["match"] == match]
    return route


def _authz_disabled(route: dict[str, Any]) -> bool:
    per_route = route.get("typed_per_filter_config", {}).get(EXT_AUTHZ, {})
    return per_route.get("@type") == PER_ROUTE_TYPE and per_route.get("disabled") is True


def test_ext_authz_fails_closed_with_503() -> None:
    config = _ext_authz(_front())
    assert config["transport_api_version"] == "V3"
    assert config["failure_mode_allow"] is False
    assert config["status_on_error"]["code"] in ("ServiceUnavailable", 503)
    assert config.get("include_peer_certificate", False) is False  # proto3 default: left out
    assert config["grpc_service"]["envoy_grpc"]["cluster_name"] == "extauthz_grpc"
    timeout = config["grpc_service"]["timeout"]
    assert timeout.endswith("s") and 0 < float(timeout[:-1]) <= 1.0


def test_connection_manager_normalises_paths() -> None:
    hcm = _hcm(_front())
    assert hcm["normalize_path"] is True
    assert hcm["merge_slashes"] is True
    assert hcm["path_with_escaped_slashes_action"] == "REJECT_REQUEST"
    assert hcm["generate_request_id"] is True


def test_access_log_prints_the_ext_authz_metadata() -> None:
    (log,) = _hcm(_front())["access_log"]
    fmt = json.dumps(log["typed_config"]["log_format"])
    for key in ("decision", "reason", "sid", "store_strategy", "node_id"):
        assert f"%DYNAMIC_METADATA({EXT_AUTHZ}:{key})%" in fmt
    for operator in ("%REQ(:METHOD)%", "%REQ_WITHOUT_QUERY(:PATH)%", "%RESPONSE_CODE%"):
        assert operator in fmt
    assert "%REQ(:PATH)%" not in fmt  # the query string may carry a token: never logged


@pytest.mark.parametrize("prefix", ["/.well-known/", "/auth/"])
def test_login_and_jwks_routes_skip_authz(prefix: str) -> None:
    route = _route(_front(), prefix=prefix)
    assert route["route"]["cluster"] == "extauthz_http"
    assert _authz_disabled(route)


def test_everything_else_needs_authz() -> None:
    doc = _front()
    catch_all = _routes(doc)[-1]
    assert catch_all["match"] == {"prefix": "/"}
    assert catch_all["route"]["cluster"] == "upstream"
    assert not _authz_disabled(catch_all)
    settings = catch_all["typed_per_filter_config"][EXT_AUTHZ]["check_settings"]
    assert settings["context_extensions"]["client"] == "auto"
    # exactly the JWKS, the auth service and the static health route are exempt
    exempt = [r["match"] for r in _routes(doc) if _authz_disabled(r)]
    assert exempt == [{"path": "/health/direct"}, {"prefix": "/.well-known/"}, {"prefix": "/auth/"}]


def test_authz_cluster_speaks_http2() -> None:
    (cluster,) = [
        c for c in _front()["static_resources"]["clusters"] if c["name"] == "extauthz_grpc"
    ]
    options = cluster["typed_extension_protocol_options"][
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
    ]
    assert "http2_protocol_options" in options["explicit_http_config"]


def test_internal_headers_are_removed_from_responses() -> None:
    removed = _hcm(_front())["route_config"]["response_headers_to_remove"]
    assert "authorization" in removed


def _differences(a: Any, b: Any, path: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict) and a.keys() == b.keys():
        return [d for k in a for d in _differences(a[k], b[k], f"{path}.{k}")]
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        pairs = enumerate(zip(a, b, strict=True))
        return [d for i, (x, y) in pairs for d in _differences(x, y, f"{path}[{i}]")]
    return [] if a == b else [path]


def test_the_tests_config_differs_from_the_shipped_one_only_in_ports(tmp_path: Path) -> None:
    ports = StackPorts(listener=18080, admin=19901, grpc=19001, http=19002, upstream=19003)
    rendered = yaml.safe_load(generate_envoy_config(ports, tmp_path).read_text())
    changed = _differences(_front(), rendered)
    assert len(changed) == 5
    assert all(p.endswith(".socket_address.port_value") for p in changed), changed
    text = json.dumps(rendered)
    for port in (18080, 19901, 19001, 19002, 19003):
        assert f'"port_value": {port}' in text


# -- the front proxy running, with a fake authz service ----------------------------------------


@dataclass
class FakeAuthz:
    """Answers by path prefix: /deny -> 401, /unavailable -> gRPC UNAVAILABLE, else allow.

    Not derived from the generated servicer, which xds-protos ships without types:
    ``add_AuthorizationServicer_to_server`` needs only ``Check``.
    """

    requests: list[auth_pb2.CheckRequest] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def Check(  # noqa: N802 (gRPC method name)
        self, request: auth_pb2.CheckRequest, context: grpc.ServicerContext
    ) -> auth_pb2.CheckResponse:
        with self.lock:
            self.requests.append(request)
        path = request.attributes.request.http.path
        if path.startswith("/unavailable"):
            context.abort(grpc.StatusCode.UNAVAILABLE, "session store unavailable")
        if path.startswith("/deny"):
            return auth_pb2.CheckResponse(
                status=status_pb2.Status(code=code_pb2.UNAUTHENTICATED),
                denied_response=auth_pb2.DeniedHttpResponse(
                    status=http_status_pb2.HttpStatus(code=http_status_pb2.Unauthorized),
                    headers=[_header("www-authenticate", 'Bearer realm="test"')],
                    body='{"error":"invalid_token"}',
                ),
                dynamic_metadata=_metadata("deny", "invalid_token", ""),
            )
        return auth_pb2.CheckResponse(
            status=status_pb2.Status(code=code_pb2.OK),
            ok_response=auth_pb2.OkHttpResponse(
                headers=[_header("authorization", "Bearer fake.jwt.value")],
            ),
            dynamic_metadata=_metadata("allow", "ok", "sid-123"),
        )


def _header(key: str, value: str) -> base_pb2.HeaderValueOption:
    return base_pb2.HeaderValueOption(
        header=base_pb2.HeaderValue(key=key, value=value),
        append_action=base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD,
    )


def _metadata(decision: str, reason: str, sid: str) -> struct_pb2.Struct:
    meta = struct_pb2.Struct()
    meta.update(
        {"decision": decision, "reason": reason, "sid": sid,
         "store_strategy": "sticky", "node_id": "fake-1"}
    )  # fmt: skip
    return meta


@dataclass
class FrontProxy:
    envoy: EnvoyProcess
    authz: FakeAuthz
    ports: StackPorts

    def request(
        self, path: str, method: str = "GET", headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        """One HTTP/1.1 request with ``path`` sent exactly as given (no client-side cleanup)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.ports.listener, timeout=5)
        try:
            conn.request(method, path, headers=headers or {})
            resp = conn.getresponse()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
        finally:
            conn.close()

    def log_for(self, path: str) -> dict[str, Any]:
        """The access-log entry of the last request whose (normalised) path is ``path``."""
        self.envoy.wait_until(
            lambda: any(e.get("path") == path for e in self.envoy.access_log()), 5, "logging"
        )
        return [e for e in self.envoy.access_log() if e.get("path") == path][-1]


@pytest.fixture(scope="module")
def front_proxy(
    envoy_binary: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[FrontProxy]:
    """envoy/front-proxy.yaml on free ports with the fake authz and the echo upstream; the
    extauthz HTTP port is left closed on purpose."""
    work = tmp_path_factory.mktemp("front-proxy")
    ports = StackPorts.allocate()
    authz = FakeAuthz()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    auth_grpc.add_AuthorizationServicer_to_server(authz, server)
    server.add_insecure_port(f"127.0.0.1:{ports.grpc}")
    server.start()
    echo = EchoUpstreamProcess(
        work, port=ports.upstream, jwks_url=f"http://127.0.0.1:{ports.http}/.well-known/jwks.json",
        issuer="http://issuer.test", audience="upstream",
    )  # fmt: skip
    envoy = EnvoyProcess(envoy_binary, generate_envoy_config(ports, work), work)
    try:
        echo.start()
        envoy.start()
        yield FrontProxy(envoy, authz, ports)
    finally:
        envoy.stop()
        echo.stop()
        server.stop(grace=None)


@pytest.mark.e2e
def test_allowed_request_reaches_upstream_with_the_authz_headers(front_proxy: FrontProxy) -> None:
    status, _, body = front_proxy.request(
        "/hello?x=1", headers={"authorization": "Bearer opaque-client-token"}
    )
    assert status == 200, body
    echoed = json.loads(body)
    assert echoed["path"] == "/hello?x=1"
    # the authz header replaced the client's, it was not appended next to it
    assert echoed["headers"]["authorization"] == ["Bearer fake.jwt.value"]
    check = front_proxy.authz.requests[-1]
    assert check.attributes.context_extensions["client"] == "auto"
    assert check.attributes.request.http.headers["authorization"] == "Bearer opaque-client-token"


@pytest.mark.e2e
def test_check_request_carries_only_the_headers_the_check_reads(front_proxy: FrontProxy) -> None:
    """ext_authz ``allowed_headers``: every header the Check reads reaches the CheckRequest,
    a header it does not read does not; method, scheme, host and path come whatever the list."""
    read = {name: f"value-of-{name}" for name in check_headers("x-api-key")}
    unread = {"x-not-read-by-the-check": "1", "user-agent": "test-agent", "accept-language": "en"}
    status, _, body = front_proxy.request(
        "/allowed-headers?q=1", method="POST", headers={**read, **unread}
    )
    assert status == 200, body
    (check,) = [r for r in front_proxy.authz.requests
                if r.attributes.request.http.path == "/allowed-headers?q=1"]  # fmt: skip
    http = check.attributes.request.http
    assert (http.method, http.scheme, http.path) == ("POST", "http", "/allowed-headers?q=1")
    assert http.host == f"127.0.0.1:{front_proxy.ports.listener}"
    assert {k: v for k, v in http.headers.items() if k in read} == read
    assert set(http.headers) <= set(read), sorted(set(http.headers) - set(read))


@pytest.mark.e2e
def test_access_log_shows_the_authz_decision(front_proxy: FrontProxy) -> None:
    front_proxy.request("/logged")
    entry = front_proxy.log_for("/logged")
    assert entry["method"] == "GET"
    assert entry["status"] == 200
    assert entry["decision"] == "allow"
    assert entry["reason"] == "ok"
    assert entry["sid"] == "sid-123"
    assert entry["store_strategy"] == "sticky"
    assert entry["node_id"] == "fake-1"


@pytest.mark.e2e
def test_denial_is_passed_to_the_client(front_proxy: FrontProxy) -> None:
    status, headers, body = front_proxy.request("/deny/me")
    assert status == 401
    assert headers["www-authenticate"] == 'Bearer realm="test"'
    assert json.loads(body) == {"error": "invalid_token"}
    assert front_proxy.log_for("/deny/me")["decision"] == "deny"


@pytest.mark.e2e
def test_authz_error_is_503_not_an_allow(front_proxy: FrontProxy) -> None:
    status, _, body = front_proxy.request("/unavailable/x")
    assert status == 503
    assert b"echo" not in body and b"headers" not in body


@pytest.mark.e2e
def test_direct_health_route_needs_no_authz(front_proxy: FrontProxy) -> None:
    before = len(front_proxy.authz.requests)
    status, _, body = front_proxy.request("/health/direct")
    assert (status, body) == (200, b"ok\n")
    assert len(front_proxy.authz.requests) == before


@pytest.mark.e2e
@pytest.mark.parametrize("path", ["/.well-known/jwks.json", "/auth/login"])
def test_exempt_routes_go_to_the_auth_service_without_authz(
    front_proxy: FrontProxy, path: str
) -> None:
    before = len(front_proxy.authz.requests)
    status, _, _ = front_proxy.request(path)
    # the auth service's port is closed in this fixture: the router answers 503 (upstream
    # connection failure), and the authz service was never asked
    assert status == 503
    assert len(front_proxy.authz.requests) == before
    assert "UAEX" not in front_proxy.log_for(path)["flags"]


@pytest.mark.e2e
def test_dot_segments_cannot_escape_into_an_exempt_route(front_proxy: FrontProxy) -> None:
    # without normalize_path, "/auth/../deny/x" would match the authz-free /auth/ prefix
    status, _, _ = front_proxy.request("/auth/../deny/x")
    assert status == 401
    assert front_proxy.authz.requests[-1].attributes.request.http.path == "/deny/x"


@pytest.mark.e2e
def test_merged_slashes_reach_authz_normalised(front_proxy: FrontProxy) -> None:
    status, _, _ = front_proxy.request("//deny//x")
    assert status == 401
    assert front_proxy.authz.requests[-1].attributes.request.http.path == "/deny/x"


@pytest.mark.e2e
@pytest.mark.parametrize("path", ["/auth%2F..%2Fdeny", "/hello%2fworld", "/a%5Cb"])
def test_escaped_slashes_are_rejected(front_proxy: FrontProxy, path: str) -> None:
    before = len(front_proxy.authz.requests)
    status, _, _ = front_proxy.request(path)
    assert status == 400
    assert len(front_proxy.authz.requests) == before


@pytest.mark.e2e
def test_headers_with_underscores_are_rejected(front_proxy: FrontProxy) -> None:
    status, _, _ = front_proxy.request("/hello", headers={"x_extauthz_sid": "forged"})
    assert status == 400


# -- the front proxy with the real extauthz (harness/stack.py) ----------------------------


@pytest.mark.e2e
def test_real_stack_replaces_the_opaque_token_with_a_verified_jwt(redis_stack: Stack) -> None:
    token = redis_stack.create_session("alice", "--scope", "read")
    conn = http.client.HTTPConnection("127.0.0.1", redis_stack.ports.listener, timeout=5)
    try:
        conn.request("GET", "/e2e/bearer", headers={"authorization": f"Bearer {token}"})
        resp = conn.getresponse()
        body = resp.read()
    finally:
        conn.close()
    assert resp.status == 200, body
    echoed = json.loads(body)
    assert echoed["jwt"]["verified"] is True, echoed["jwt"]["error"]
    assert echoed["jwt"]["claims"]["sub"] == "alice"
    assert token not in body.decode()
    redis_stack.envoy.wait_until(
        lambda: any(e.get("path") == "/e2e/bearer" for e in redis_stack.envoy.access_log()),
        5,
        "logging",
    )
    entry = [e for e in redis_stack.envoy.access_log() if e.get("path") == "/e2e/bearer"]
    assert entry[-1]["decision"] == "allow"
    assert entry[-1]["store_strategy"] == "central"
    assert entry[-1]["sid"] == echoed["jwt"]["claims"]["sid"]
