"""The Envoy front proxy routes /auth/* to extauthz's HTTP port: with forward-auth on, that
port also serves GET /auth/verify, whose answer carries the JWT. The front proxy must never pass
a client's request there, whatever spelling of the path it uses (envoy/front-proxy.yaml)."""

from __future__ import annotations

import http.client
import re
from collections.abc import Iterator

import pytest

from harness.ports import LOOPBACK
from tests.support import Stack, start_stack

pytestmark = pytest.mark.e2e

JWS = re.compile(rb"eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")
SPELLINGS = ["/auth/verify", "/auth/verify?x=1", "/auth//verify", "/auth/%76erify",
             "/auth/./verify", "/x/../auth/verify", "/%61uth/verify", "/auth/verify/"]  # fmt: skip


@pytest.fixture(scope="module")
def stack(envoy_binary: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    running = start_stack(
        envoy_binary,
        tmp_path_factory.mktemp("forward-auth-envoy"),
        env={"EXTAUTHZ_AUTH_FORWARD_AUTH": "true"},
    )
    yield running
    running.stop()


@pytest.mark.parametrize("path", SPELLINGS)
def test_the_front_proxy_never_serves_the_verify_endpoint(stack: Stack, path: str) -> None:
    token = stack.create_session("alice")
    headers = {
        "Authorization": f"Bearer {token}",
        "X-Original-Method": "GET",
        "X-Original-URI": "/",
        "X-Forwarded-Host": "app.example",
    }
    conn = http.client.HTTPConnection(LOOPBACK, stack.ports.listener, timeout=10)
    try:
        conn.request("GET", path, headers=headers)
        resp = conn.getresponse()
        status, raw = resp.status, repr(resp.getheaders()).encode() + resp.read()
    finally:
        conn.close()
    assert status in (400, 404), (status, raw)
    assert not JWS.search(raw)
