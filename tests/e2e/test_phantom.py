"""The phantom-token pattern end to end: the repository's envoy/front-proxy.yaml on real Envoy
(oldest and newest supported release), extauthz on a real Redis, the echo upstream.

Opaque token in (cookie or bearer) → the upstream sees exactly one ``authorization`` header
holding a JWT that verifies against the JWKS → the client never sees the JWT, the upstream
never sees the opaque token.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import socket
import time
from pathlib import Path
from typing import Any

import pytest

from tests.support import RedisServer, Stack, start_stack

JWS = re.compile(r"eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")
COOKIE = "extauthz_session"

pytestmark = pytest.mark.e2e


def request(
    stack: Stack, path: str, headers: dict[str, str] | None = None, method: str = "GET"
) -> tuple[int, http.client.HTTPMessage, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", stack.ports.listener, timeout=10)
    try:
        conn.request(method, path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.headers, resp.read()
    finally:
        conn.close()


def assert_no_jwt_reaches_the_client(headers: http.client.HTTPMessage, body: bytes) -> None:
    for name, value in headers.items():
        assert not JWS.search(value), f"response header {name} carries a JWT"
    assert not JWS.search(body.decode("utf-8", "replace")), "response body carries a JWT"


def assert_phantom_exchange(echoed: dict[str, Any], token: str, sub: str) -> None:
    """What the upstream saw: one authorization header, a verified JWT of ``sub``, no
    session cookie, and the opaque token nowhere."""
    assert echoed["jwt"]["header_count"] == 1
    assert echoed["jwt"]["verified"] is True, echoed["jwt"]["error"]
    assert echoed["jwt"]["claims"]["sub"] == sub
    assert len(echoed["headers"]["authorization"]) == 1
    for value in echoed["headers"].get("cookie", []):
        assert COOKIE not in value
    assert token not in json.dumps(echoed)


def test_cookie_is_exchanged_for_a_jwt(redis_stack: Stack) -> None:
    token = redis_stack.create_session("alice", "--scope", "read")
    status, headers, body = request(
        redis_stack, "/e2e/cookie", {"cookie": f"theme=dark; {COOKIE}={token}; lang=en"}
    )
    assert status == 200, body
    echoed = json.loads(body)
    assert_phantom_exchange(echoed, token, "alice")
    # every other cookie reaches the upstream unchanged, in order
    assert echoed["headers"]["cookie"] == ["theme=dark; lang=en"]
    assert echoed["jwt"]["claims"]["scope"] == "read"
    assert_no_jwt_reaches_the_client(headers, body)


def test_bearer_is_exchanged_for_a_jwt(redis_stack: Stack) -> None:
    token = redis_stack.create_session("bob")
    status, headers, body = request(
        redis_stack,
        "/e2e/bearer",
        {"authorization": f"bearer {token}", "accept": "application/json"},
    )
    assert status == 200, body
    echoed = json.loads(body)
    assert_phantom_exchange(echoed, token, "bob")
    assert "cookie" not in echoed["headers"]
    assert_no_jwt_reaches_the_client(headers, body)


def test_a_client_supplied_jwt_header_is_replaced(redis_stack: Stack) -> None:
    """A forged ``authorization`` alongside a session cookie never reaches the upstream."""
    token = redis_stack.create_session("carol")
    forged = "Basic Zm9yZ2VkOmZvcmdlZA=="
    status, _, body = request(
        redis_stack, "/e2e/forged", {"cookie": f"{COOKIE}={token}", "authorization": forged}
    )
    assert status == 200, body
    echoed = json.loads(body)
    assert_phantom_exchange(echoed, token, "carol")
    assert forged not in json.dumps(echoed)


def test_revocation_denies_the_next_request(redis_stack: Stack) -> None:
    token = redis_stack.create_session("dave")
    status, _, body = request(redis_stack, "/e2e/before", {"authorization": f"Bearer {token}"})
    assert status == 200, body
    sid = json.loads(body)["jwt"]["claims"]["sid"]
    assert redis_stack.extauthz.cli(
        "sessions", "revoke", f"--sid={sid}", "--target", redis_stack.extauthz.grpc_target
    ).strip() == "revoked"

    status, headers, body = request(redis_stack, "/e2e/after", {"authorization": f"Bearer {token}"})
    assert status == 401
    assert headers["www-authenticate"].startswith('Bearer realm="')
    assert 'error="invalid_token"' in headers["www-authenticate"]
    assert json.loads(body)["reason"] == "revoked_session"

    status, headers, _ = request(
        redis_stack, "/e2e/page?x=1", {"cookie": f"{COOKIE}={token}", "accept": "text/html"}
    )
    assert status == 302
    assert headers["location"] == "/auth/login?return_to=%2Fe2e%2Fpage%3Fx%3D1"
    # the dead cookie is cleared, so the browser does not keep presenting it
    assert any(
        v.startswith(f"{COOKIE}=;") and "Max-Age=0" in v
        for v in headers.get_all("set-cookie") or ()
    )


def _persistent_redis(tmp_path: Path) -> RedisServer:
    # keep sessions across a restart: "Redis back" must not mean "every session lost"
    aof = ["--appendonly", "yes", "--appendfsync", "always"]
    return RedisServer(tmp_path, name="redis-aof", extra_args=aof).start()


def test_store_outage_is_503_and_recovers_without_a_new_login(
    envoy_binary: str, tmp_path: Path
) -> None:
    redis = _persistent_redis(tmp_path)
    stack = start_stack(envoy_binary, tmp_path / "stack", redis_url=redis.url)
    try:
        token = stack.create_session("erin")
        cookie = {"cookie": f"{COOKIE}={token}"}
        assert request(stack, "/e2e/outage", cookie)[0] == 200

        redis.stop()
        # The session cache may answer until the node notices its push channel is gone (at
        # most cache.trust_window_ms): no revocation can be missed meanwhile, since revoking
        # needs the store. After that every answer is 503; none is a denial or a logout.
        statuses: list[int] = []
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline and statuses[-2:] != [503, 503]:
            status, headers, body = request(stack, "/e2e/outage", cookie)
            statuses.append(status)
            assert headers.get_all("set-cookie") is None  # an outage never logs anyone out
            time.sleep(0.05)
        assert set(statuses) <= {200, 503}, statuses
        assert statuses[-2:] == [503, 503], statuses

        # a Redis that hangs (SIGSTOP) rather than refuses: the same answer, and it is
        # extauthz's own UNAVAILABLE (the store's budget ends before Envoy's ext_authz
        # timeout): Envoy never times the call out
        redis.start()
        assert redis.pid is not None
        timeouts = "cluster.extauthz_grpc.upstream_rq_timeout"
        errors = stack.envoy.counter("http.front.ext_authz.error")
        _send(redis.pid, signal.SIGSTOP)
        try:
            for _ in range(3):
                status, headers, _ = request(stack, "/e2e/outage", cookie)
                assert status == 503
                assert headers.get_all("set-cookie") is None
        finally:
            _send(redis.pid, signal.SIGCONT)
        assert stack.envoy.counter("http.front.ext_authz.error") == errors + 3
        assert stack.envoy.counter(timeouts) == 0, "Envoy timed the Check out first"

        deadline = time.monotonic() + 10
        status = 0
        while time.monotonic() < deadline:
            status, _, body = request(stack, "/e2e/outage", cookie)
            if status == 200:
                break
            time.sleep(0.2)
        assert status == 200, body
        assert json.loads(body)["jwt"]["claims"]["sub"] == "erin"
    finally:
        stack.stop()
        redis.stop()


def _send(pid: int, signum: signal.Signals) -> None:
    os.kill(pid, signum)


def test_a_token_in_the_query_string_is_neither_used_nor_logged(redis_stack: Stack) -> None:
    token = redis_stack.create_session("frank")
    status, _, _ = request(redis_stack, f"/e2e/query?access_token={token}")
    assert status == 401  # RFC 6750 §2.3 query tokens are not accepted
    redis_stack.envoy.wait_until(
        lambda: any(e.get("path") == "/e2e/query" for e in redis_stack.envoy.access_log()),
        5,
        "logging",
    )
    log_text = redis_stack.envoy.stdout_path.read_text()
    assert token not in log_text


def test_metrics_record_the_strategy_and_the_decisions(redis_stack: Stack) -> None:
    token = redis_stack.create_session("grace")
    assert request(redis_stack, "/e2e/metrics", {"authorization": f"Bearer {token}"})[0] == 200
    conn = http.client.HTTPConnection("127.0.0.1", redis_stack.ports.http, timeout=5)
    try:
        conn.request("GET", "/metrics")
        resp = conn.getresponse()
        text = resp.read().decode()
    finally:
        conn.close()
    assert resp.status == 200
    assert 'extauthz_store_strategy{strategy="central"} 1' in text
    counter = 'extauthz_check_decisions_total{decision="allow",reason="session_valid"}'
    allowed = [line for line in text.splitlines() if line.startswith(counter)]
    assert allowed and float(allowed[0].rsplit(" ", 1)[1]) >= 1


def raw_http1(stack: Stack, head: str) -> tuple[int, bytes]:
    """Send ``head`` (request line and header lines, CRLF-separated, no final blank line) over
    one HTTP/1.1 connection as it is, so repeated header lines reach Envoy as such."""
    request_bytes = (head + "\r\nConnection: close\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", stack.ports.listener), timeout=10) as conn:
        conn.sendall(request_bytes)
        received = b""
        while chunk := conn.recv(65536):
            received += chunk
    raw_head, _, body = received.partition(b"\r\n\r\n")
    status = int(raw_head.split(b" ", 2)[1])
    if b"transfer-encoding: chunked" in raw_head.lower():
        body = _dechunk(body)
    return status, body


def _dechunk(body: bytes) -> bytes:
    out = b""
    while body:
        size_line, _, body = body.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out, body = out + body[:size], body[size + 2 :]
    return out


def test_two_cookie_lines_reach_the_upstream_joined_as_cookies(redis_stack: Stack) -> None:
    """Two ``Cookie`` lines (HTTP/1.1) arrive in the CheckRequest joined
    with ``,``; the rewrite without the session cookie sent that comma upstream, where it
    glued two cookies into one value. The upstream sees one ``cookie`` header joined with
    ``; `` (RFC 6265 §5.4), every other cookie byte for byte, in order."""
    token = redis_stack.create_session("heidi")
    for lines, expected in (
        ([f"theme=dark; {COOKIE}={token}", "lang=en"], "theme=dark; lang=en"),
        (["theme=dark", f"{COOKIE}={token}; lang=en", "a=1;b=2"], "theme=dark; lang=en; a=1;b=2"),
    ):
        head = "GET /e2e/cookie-lines HTTP/1.1\r\nHost: app.test\r\n" + "\r\n".join(
            f"Cookie: {line}" for line in lines
        )
        status, body = raw_http1(redis_stack, head)
        assert status == 200, body
        echoed = json.loads(body)
        assert_phantom_exchange(echoed, token, "heidi")
        assert echoed["headers"]["cookie"] == [expected]


def _demo_upstream_changes_the_session(stack: Stack) -> None:
    """The echo upstream's /session/ routes (docs/session-updates.md): the next JWT carries
    the change; the update header never reaches the client."""
    token = stack.create_session("erin")
    auth = {"authorization": f"Bearer {token}"}
    for path in ("/session/theme/dark", "/session/cart/add", "/session/cart/add"):
        status, headers, body = request(stack, path, auth)
        assert status == 200, body
        assert "x-extauthz-session-update" not in headers
        assert_no_jwt_reaches_the_client(headers, body)
    status, _, body = request(stack, "/hello", auth)
    assert status == 200, body
    assert json.loads(body)["jwt"]["claims"]["data"] == {"theme": "dark", "cart": 2}


def test_the_demo_upstream_changes_the_session_in_redis(redis_stack: Stack) -> None:
    _demo_upstream_changes_the_session(redis_stack)  # central, session cache on


def test_the_demo_upstream_changes_the_session_in_memory(memory_stack: Stack) -> None:
    _demo_upstream_changes_the_session(memory_stack)  # sticky: the node's own store
