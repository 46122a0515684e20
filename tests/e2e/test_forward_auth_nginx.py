"""Forward-auth end to end through a real nginx (Debian's, `make nginx`): the repository's
deploy/nginx/nginx.conf in front of a real extauthz node (auth.forward_auth on, Redis store)
and the echo upstream, which verifies the JWT against the JWKS.

Opaque token in (cookie or bearer) → auth_request to /auth/verify → the upstream gets a JWT that
verifies and the Cookie header without the session cookie; denials as the Check gives them
(302 to the login page for browsers, 401 with the challenge for API clients, 403 for a route's
policy), a revoked session refused at once, a store that is down 503.
"""

from __future__ import annotations

import http.client
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.nginx import find_nginx
from harness.ports import LOOPBACK
from harness.process import wait_until
from harness.redis import RedisServer
from tests.support.nginx_stack import NginxStack, start_nginx_stack

pytestmark = pytest.mark.e2e

JWS = re.compile(r"eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")
COOKIE = "extauthz_session"  # demo/extauthz.toml


@pytest.fixture(scope="module")
def nginx_binary() -> str:
    binary = find_nginx()
    if binary is None:
        from tests.conftest import missing

        missing("nginx is not installed (`make nginx` installs Debian's)")
    assert binary is not None
    return binary


@pytest.fixture(scope="module")
def stack(
    nginx_binary: str, redis_process: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[NginxStack]:
    running = start_nginx_stack(
        nginx_binary, tmp_path_factory.mktemp("nginx-stack"), redis_url=redis_process.url
    )
    yield running
    running.stop()


class Answer:
    def __init__(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        self.status, self.headers, self.body = status, headers, body

    def all(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]

    def echo(self) -> dict[str, Any]:
        """The echo upstream's JSON: what reached it."""
        document: dict[str, Any] = json.loads(self.body)
        return document

    def everything(self) -> str:
        return repr(self.headers) + self.body.decode("utf-8", "replace")


def get(
    stack: NginxStack, path: str, headers: dict[str, str] | None = None, method: str = "GET"
) -> Answer:
    conn = http.client.HTTPConnection(LOOPBACK, stack.port, timeout=10)
    try:
        body = b"{}" if method == "POST" else None
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return Answer(resp.status, resp.getheaders(), resp.read())
    finally:
        conn.close()


def assert_verified_jwt(answer: Answer, sub: str) -> dict[str, Any]:
    assert answer.status == 200, answer.everything()
    echoed = answer.echo()
    assert echoed["jwt"]["verified"] is True, echoed["jwt"]
    assert echoed["jwt"]["header_count"] == 1
    claims: dict[str, Any] = echoed["jwt"]["claims"]
    assert claims["sub"] == sub
    # the client never sees the JWT (the echo shows only its hash)
    assert not JWS.search(answer.everything())
    return echoed


def test_a_bearer_session_reaches_the_upstream_as_a_jwt(stack: NginxStack) -> None:
    token = stack.create_session("alice", "--scope", "read")
    answer = get(stack, "/hello?x=1", {"Authorization": f"Bearer {token}"})
    echoed = assert_verified_jwt(answer, "alice")
    assert echoed["path"] == "/hello?x=1"
    assert token not in json.dumps(echoed)  # the opaque token never reaches the upstream
    assert "cookie" not in echoed["headers"]


def test_a_cookie_session_reaches_the_upstream_without_the_session_cookie(
    stack: NginxStack,
) -> None:
    token = stack.create_session("bob")
    cookie = f"theme=dark; {COOKIE}={token}; lang=en"
    echoed = assert_verified_jwt(get(stack, "/hello", {"Cookie": cookie}), "bob")
    assert echoed["headers"]["cookie"] == ["theme=dark; lang=en"]
    assert token not in json.dumps(echoed)
    # a Cookie header of the session cookie alone does not reach the upstream at all
    echoed = assert_verified_jwt(get(stack, "/hello", {"Cookie": f"{COOKIE}={token}"}), "bob")
    assert "cookie" not in echoed["headers"]


def test_a_browser_without_a_session_is_sent_to_the_login_page(stack: NginxStack) -> None:
    answer = get(stack, "/reports/2026?page=2", {"Accept": "text/html"})
    assert answer.status == 302, answer.everything()
    assert answer.all("Location") == ["/auth/login?return_to=%2Freports%2F2026%3Fpage%3D2"]
    # and the login page itself is served without a session
    login = get(stack, "/auth/login?return_to=%2Freports%2F2026%3Fpage%3D2")
    assert login.status == 200 and b"<form" in login.body


def test_an_api_client_without_a_session_gets_the_challenge(stack: NginxStack) -> None:
    answer = get(stack, "/hello", {"Accept": "application/json"})
    assert answer.status == 401
    assert answer.all("WWW-Authenticate") == ['Bearer realm="extauthz-demo"']
    assert answer.all("Location") == []


def test_a_dead_session_cookie_is_refused_and_cleared(stack: NginxStack) -> None:
    answer = get(stack, "/hello", {"Cookie": f"{COOKIE}=xst_not_a_live_token"})
    assert answer.status == 401
    assert any(v.startswith(f"{COOKIE}=;") and "Max-Age=0" in v for v in answer.all("Set-Cookie"))


def test_a_revoked_session_is_refused_at_once(stack: NginxStack) -> None:
    token = stack.create_session("carol")
    assert_verified_jwt(get(stack, "/hello", {"Authorization": f"Bearer {token}"}), "carol")
    revoked = stack.extauthz.cli(
        "sessions", "revoke", "--sub", "carol", "--target", stack.extauthz.grpc_target
    )
    assert revoked.strip()
    answer = get(stack, "/hello", {"Authorization": f"Bearer {token}"})
    assert answer.status == 401
    assert 'error="invalid_token"' in answer.all("WWW-Authenticate")[0]
    browser = get(stack, "/hello", {"Cookie": f"{COOKIE}={token}", "Accept": "text/html"})
    assert browser.status == 302


def test_a_locations_policy_applies(stack: NginxStack) -> None:
    reader = stack.create_session("dave", "--scope", "read")
    admin = stack.create_session("erin", "--scope", "admin")
    assert get(stack, "/admin/x", {"Authorization": f"Bearer {reader}"}).status == 403
    # a client-sent policy header never replaces the location's own
    forged = {"Authorization": f"Bearer {reader}", "X-Extauthz-Scopes": ""}
    assert get(stack, "/admin/x", forged).status == 403
    assert_verified_jwt(get(stack, "/admin/x", {"Authorization": f"Bearer {admin}"}), "erin")
    # /api/ is for API clients: never a redirect
    answer = get(stack, "/api/items", {"Accept": "text/html"})
    assert answer.status == 401 and answer.all("Location") == []


def test_a_cross_site_post_with_the_session_cookie_is_refused(stack: NginxStack) -> None:
    """`/` has same_site required: the method, host and Origin all reach the pipeline."""
    token = stack.create_session("alice")
    cookie = {"Cookie": f"{COOKIE}={token}", "Content-Type": "application/json"}
    cross = get(stack, "/cart", {**cookie, "Origin": "https://evil.example"}, method="POST")
    assert cross.status == 403, cross.everything()
    same = get(stack, "/cart", {**cookie, "Origin": stack.base_url}, method="POST")
    assert same.status == 200, same.everything()
    assert same.echo()["method"] == "POST"


def test_client_sent_forwarding_headers_change_nothing(stack: NginxStack) -> None:
    forged = {
        "Accept": "text/html",
        "X-Forwarded-Uri": "/auth/login",
        "X-Original-URI": "/auth/login",
        "X-Forwarded-Method": "POST",
        "X-Extauthz-Redirect": "302",
    }
    answer = get(stack, "/reports", forged)
    assert answer.status == 302
    assert answer.all("Location") == ["/auth/login?return_to=%2Freports"]


@pytest.mark.parametrize(
    "path",
    ["/auth/verify", "/auth/verify?x=1", "/auth//verify", "/auth/%76erify", "/auth/./verify",
     "/x/../auth/verify", "/%61uth/verify", "/auth/verify/"],  # fmt: skip
)
def test_clients_cannot_reach_the_verify_endpoint(stack: NginxStack, path: str) -> None:
    token = stack.create_session("alice")
    headers = {"Authorization": f"Bearer {token}", "X-Original-URI": "/",
               "X-Original-Method": "GET"}  # fmt: skip
    answer = get(stack, path, headers)
    assert answer.status in (400, 404), answer.everything()
    assert not JWS.search(answer.everything())


def test_a_store_that_is_down_is_503_never_401(
    nginx_binary: str, fresh_redis: RedisServer, tmp_path: Path
) -> None:
    own = start_nginx_stack(nginx_binary, tmp_path, redis_url=fresh_redis.url)
    try:
        token = own.create_session("alice")
        assert_verified_jwt(get(own, "/hello", {"Authorization": f"Bearer {token}"}), "alice")
        fresh_redis.stop()
        # the node's local session cache may answer until it sees the push channel go
        # (a fraction of a second): wait, bounded, for the first answer that is not 200
        bearer = {"Authorization": f"Bearer {token}"}
        wait_until(
            lambda: get(own, "/hello", bearer).status != 200,
            timeout=15,
            description="the node to notice that Redis is down",
        )
        for headers in ({"Authorization": f"Bearer {token}"}, {"Cookie": f"{COOKIE}={token}"}):
            answer = get(own, "/hello", headers)
            assert answer.status == 503, answer.everything()
            assert answer.all("WWW-Authenticate") == []
            assert answer.all("Set-Cookie") == []
    finally:
        own.stop()
