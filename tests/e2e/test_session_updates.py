"""Session updates from upstream responses, end to end: the repository's envoy/front-proxy.yaml
on real Envoy (oldest and newest supported release), two extauthz nodes on one Redis (strategy
``central``, session cache on), a scripted upstream (:mod:`tests.support.scripted_upstream`).

An update response reaches the client without the update header, the JWT or any
``x-extauthz-*`` header; the next request's JWT carries the new ``data`` on either node; bad
updates leave the session as it was and the response as the upstream sent it, and are counted;
``logout`` revokes and clears the cookie; an upstream cannot set the session cookie.
"""

from __future__ import annotations

import http.client
import json
import re
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import grpc
import pytest
import redis
from envoy.config.core.v3.base_pb2 import HeaderMap, HeaderValue, Metadata
from envoy.service.ext_proc.v3 import external_processor_pb2 as ext_proc
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as ext_proc_grpc
from google.protobuf.struct_pb2 import Struct

from tests.support import RedisServer
from tests.support.update_stack import (
    PASSWORD,
    ROTATION_GRACE_SECONDS,
    USER,
    Node,
    UpdateStack,
    start_update_stack,
)

pytestmark = pytest.mark.e2e

JWS = re.compile(r"eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")
COOKIE = "extauthz_session"  # demo/extauthz.toml; the matcher regex in envoy/front-proxy.yaml
UPDATE = "x-extauthz-session-update"


@pytest.fixture(scope="module")
def stack(
    envoy_binary: str, redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[UpdateStack]:
    s = start_update_stack(envoy_binary, tmp_path_factory.mktemp("updates"), redis_server)
    yield s
    s.stop()


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def path(*, update: str | None = None, cookies: tuple[str, ...] = (), leak: bool = False) -> str:
    query = [f"update={quote(update)}"] if update is not None else []
    query += [f"cookie={quote(c)}" for c in cookies]
    query += ["leak=1"] if leak else []
    return "/shop?" + "&".join(query)


def data_on(node: Node, token: str) -> dict[str, Any]:
    """The ``data`` claim of the JWT the upstream receives for ``token`` through ``node``."""
    status, _, body = node.request("/whoami", bearer(token))
    assert status == 200, body
    data: dict[str, Any] = json.loads(body)["claims"]["data"]
    return data


def lookups(node: Node, sid: str, count: int) -> list[str]:
    """How the node's first ``count`` Checks of ``sid`` found the session (``session_cache`` in
    Envoy's access log: ``hit``, ``miss``, ``bypass``); the log is flushed every 100 ms."""
    deadline = time.monotonic() + 5
    while True:
        found = [e["session_cache"] for e in node.envoy.access_log() if e.get("sid") == sid]
        if len(found) >= count or time.monotonic() > deadline:
            return found[:count]
        time.sleep(0.05)


def assert_nothing_internal(headers: list[tuple[str, str]]) -> None:
    names = [name.lower() for name, _ in headers]
    assert UPDATE not in names
    assert "authorization" not in names
    assert not [n for n in names if n.startswith("x-extauthz-")]
    for name, value in headers:
        assert not JWS.search(value), f"response header {name} carries a JWT"


def test_an_update_reaches_the_next_jwt_on_every_node(stack: UpdateStack) -> None:
    first, second = stack.nodes
    token = stack.token()
    # the second node's cache holds the session before the update (a warm cache)
    assert data_on(second, token) == {}
    sid = json.loads(second.request("/whoami", bearer(token))[2])["claims"]["sid"]
    assert lookups(second, sid, 2) == ["miss", "hit"]
    applied = first.metric("applied", "merge_patch")

    status, headers, body = first.request(
        path(update='{"theme": "dark", "cart": {"items": 2}}', leak=True), bearer(token)
    )
    assert status == 200, body
    assert json.loads(body)["path"] == "/shop"  # the upstream's own answer
    assert_nothing_internal(headers)
    assert first.metric("applied", "merge_patch") == applied + 1

    expected = {"theme": "dark", "cart": {"items": 2}}
    assert data_on(second, token) == expected
    assert lookups(second, sid, 3)[2] == "miss"  # the update dropped the cached record
    assert data_on(first, token) == expected
    # RFC 7396: null deletes, nested objects merge
    status, _, _ = second.request(
        path(update='{"theme": null, "cart": {"coupon": "x"}}'), bearer(token)
    )
    assert status == 200
    assert data_on(first, token) == {"cart": {"items": 2, "coupon": "x"}}


REFUSED = [
    ('{"tenant": "t2"}', "key_not_allowed"),
    ('{"sub": "mallory"}', "reserved_key"),
    ('{"scopes": ["admin"]}', "reserved_key"),
    ('{"roles": ["admin"]}', "reserved_key"),
    ('{"theme": "' + "x" * 5000 + '"}', "too_large"),
    ('{"theme": "dark"', "invalid_json"),
    ('["theme", "dark"]', "not_an_object"),
    ("42", "not_an_object"),
    ('"become-admin"', "unknown_action"),
    ('{"cart": {"a": {"b": {"c": {"d": 1}}}}}', "too_deep"),
]


def test_refused_updates_leave_session_and_response_alone(stack: UpdateStack) -> None:
    node = stack.nodes[0]
    token = stack.token()
    assert node.request(path(update='{"theme": "light"}'), bearer(token))[0] == 200
    for value, reason in REFUSED:
        before = node.metric("refused", reason)
        status, headers, body = node.request(path(update=value), bearer(token))
        assert status == 200, (value, body)
        assert json.loads(body)["path"] == "/shop", value
        assert_nothing_internal(headers)
        assert node.metric("refused", reason) == before + 1, value
        assert data_on(stack.nodes[1], token) == {"theme": "light"}, value


def test_merged_data_over_the_limit_is_refused(stack: UpdateStack) -> None:
    node = stack.nodes[0]
    token = stack.token()
    # 2000 bytes of data keep the JWT within jwt.max_bytes (4096); 3000 more exceed both bounds
    assert node.request(path(update=json.dumps({"cart": "c" * 2000})), bearer(token))[0] == 200
    before = node.metric("refused", "data_too_large")
    status, _, _ = node.request(path(update=json.dumps({"theme": "t" * 3000})), bearer(token))
    assert status == 200
    assert node.metric("refused", "data_too_large") == before + 1
    assert data_on(node, token) == {"cart": "c" * 2000}


def _process(node: Node, sid: str, decision: str, value: str) -> None:
    """One ``ExternalProcessor/Process`` stream, as Envoy would open it for a response whose
    request the Check answered with ``decision`` (Envoy never forwards an upstream response
    for a denied request: the denial is Envoy's own reply)."""
    metadata = Struct()
    metadata.update({"sid": sid, "decision": decision})
    message = ext_proc.ProcessingRequest(
        response_headers=ext_proc.HttpHeaders(
            headers=HeaderMap(headers=[HeaderValue(key=UPDATE, raw_value=value.encode())])
        ),
        metadata_context=Metadata(filter_metadata={"envoy.filters.http.ext_authz": metadata}),
    )
    with grpc.insecure_channel(node.extauthz.grpc_target) as channel:
        stub = ext_proc_grpc.ExternalProcessorStub(channel)
        (reply,) = list(stub.Process(iter([message]), timeout=5))
    mutation = reply.response_headers.response.header_mutation
    assert list(mutation.remove_headers) == [UPDATE]
    assert not mutation.set_headers


def test_no_update_without_an_allowed_session(stack: UpdateStack) -> None:
    node = stack.nodes[0]
    token = stack.token()
    sid = json.loads(node.request("/whoami", bearer(token))[2])["claims"]["sid"]
    for decision, s, reason in [("deny", sid, "denied_request"), ("allow", "", "no_session")]:
        before = node.metric("refused", reason)
        _process(node, s, decision, '{"theme": "dark"}')
        assert node.metric("refused", reason) == before + 1
    assert data_on(node, token) == {}


def _post_login(node: Node) -> Any:

    conn = http.client.HTTPConnection("127.0.0.1", node.listener, timeout=10)
    try:
        conn.request(
            "POST",
            "/auth/login",
            body=json.dumps({"username": USER, "password": PASSWORD}),
            headers={"content-type": "application/json"},
        )
        resp = conn.getresponse()
        resp.read()
        for name, value in resp.getheaders():
            if name.lower() == "set-cookie" and value.startswith(f"{COOKIE}="):
                return value.split(";", 1)[0].split("=", 1)[1]
    finally:
        conn.close()
    raise AssertionError("login set no session cookie")


def test_logout_action_revokes_and_clears_the_cookie(stack: UpdateStack) -> None:
    first, second = stack.nodes
    token = _post_login(first)
    cookie = {"cookie": f"{COOKIE}={token}", "accept": "application/json"}
    assert data_on_cookie(second, cookie) == {}  # warm cache on the other node
    status, headers, body = first.request(path(update='"logout"'), cookie)
    assert status == 200, body
    assert_nothing_internal(headers)
    cleared = [v for n, v in headers if n.lower() == "set-cookie" and v.startswith(f"{COOKIE}=;")]
    assert cleared and all("Max-Age=0" in v for v in cleared)
    status, _, body = second.request("/whoami", cookie)
    assert status == 401, body
    assert json.loads(body)["reason"] == "revoked_session"


def test_rotate_action_sets_a_new_cookie_and_ends_the_old_token_after_the_grace(
    stack: UpdateStack,
) -> None:
    first, second = stack.nodes
    old = _post_login(first)
    cookie = {"cookie": f"{COOKIE}={old}", "accept": "application/json"}
    sid = json.loads(first.request("/whoami", cookie)[2])["claims"]["sid"]
    status, headers, body = first.request(path(update='"rotate"'), cookie)
    assert status == 200, body
    assert_nothing_internal(headers)
    (set_cookie,) = [v for n, v in headers if n.lower() == "set-cookie"]
    new = set_cookie.split(";", 1)[0].split("=", 1)[1]
    assert new and new != old and "HttpOnly" in set_cookie
    new_cookie = {"cookie": f"{COOKIE}={new}", "accept": "application/json"}
    # the old token still works within the grace (requests in flight), on either node
    assert json.loads(second.request("/whoami", cookie)[2])["claims"]["sid"] == sid
    assert json.loads(second.request("/whoami", new_cookie)[2])["claims"]["sid"] == sid
    time.sleep(ROTATION_GRACE_SECONDS + 0.5)
    status, _, body = second.request("/whoami", cookie)
    assert status == 401, body
    assert json.loads(body)["reason"] == "revoked_session"
    assert json.loads(first.request("/whoami", new_cookie)[2])["claims"]["sid"] == sid
    # a bearer session is never rotated by a Set-Cookie it could not read
    token = stack.token()
    before = first.metric("refused", "not_a_cookie_session")
    status, headers, _ = first.request(path(update='"rotate"'), bearer(token))
    assert status == 200 and not [v for n, v in headers if n.lower() == "set-cookie"]
    assert first.metric("refused", "not_a_cookie_session") == before + 1
    assert first.request("/whoami", bearer(token))[0] == 200


def data_on_cookie(node: Node, headers: dict[str, str]) -> Any:
    status, _, body = node.request("/whoami", headers)
    assert status == 200, body
    return json.loads(body)["claims"]["data"]


def test_an_upstream_cannot_set_the_session_cookie(stack: UpdateStack) -> None:
    node = stack.nodes[0]
    token = stack.token()
    before = node.metric("dropped_cookie", "upstream")
    cases = [
        (f"{COOKIE}=planted; Path=/",),
        ("theme=dark; Path=/", f"{COOKIE}=planted; Path=/; Expires=Wed, 21 Oct 2037 07:28:00 GMT"),
        ("a=1", f" {COOKIE}=; Max-Age=0", "b=2"),
    ]
    for cookies in cases:
        status, headers, body = node.request(path(cookies=cookies), bearer(token))
        assert status == 200, body
        got = [v for n, v in headers if n.lower() == "set-cookie"]
        assert not [v for v in got if v.strip().startswith(f"{COOKIE}=")], got
        # every other cookie of the upstream arrives unchanged, in order
        assert got == [c for c in cookies if not c.strip().startswith(f"{COOKIE}=")]
    assert node.metric("dropped_cookie", "upstream") == before + len(cases)
    # cookies of other names, without an update, never open a processor stream
    streams = streams_started(node)
    status, headers, _ = node.request(path(cookies=("theme=dark", f"x{COOKIE}=1")), bearer(token))
    assert [v for n, v in headers if n.lower() == "set-cookie"] == ["theme=dark", f"x{COOKIE}=1"]
    assert streams_started(node) == streams
    assert node.request(path(cookies=(f"{COOKIE}=p",)), bearer(token))[0] == 200
    assert streams_started(node) == streams + 1


def streams_started(node: Node) -> int:
    """Envoy's ``http.front.ext_proc.streams_started`` counter (absent before the first)."""
    try:
        return node.envoy.counter("http.front.ext_proc.streams_started")
    except KeyError:
        return 0


def test_an_update_the_store_cannot_take_is_a_503(
    stack: UpdateStack, redis_server: RedisServer
) -> None:
    """Writes paused on Redis (reads go on, so the Check still allows): the update cannot be
    written, and the response that asked for it is a 503 (fail closed), never a silent
    success; responses without an update pass meanwhile; afterwards the session is as it was."""
    node = stack.nodes[0]
    token = stack.token()
    assert data_on(node, token) == {}
    admin = redis.Redis(host="127.0.0.1", port=redis_server.port, socket_timeout=2)
    assert admin.client_pause(2500, all=False) is True  # CLIENT PAUSE 2500 WRITE
    try:
        assert node.request("/plain", bearer(token))[0] == 200
        status, headers, _ = node.request(path(update='{"theme": "dark"}'), bearer(token))
        assert status == 503
        assert_nothing_internal(headers)
    finally:
        admin.client_unpause()
        admin.close()
    assert data_on(node, token) == {}


def test_an_upstream_cannot_set_the_session_cookie_with_whitespace_before_the_equals(
    stack: UpdateStack,
) -> None:
    """A user agent trims whitespace around the cookie name (RFC 6265 §5.2 steps 4-5), so
    ``<name> =v`` and ``<name>\\t=v`` set the session cookie just like ``<name>=v``: the
    matcher must hand such a response to the processor, which drops the line."""
    node = stack.nodes[0]
    token = stack.token()
    for planted in (f"{COOKIE} =planted; Path=/", f"{COOKIE}\t=planted; Path=/"):
        status, headers, body = node.request(path(cookies=("a=1", planted)), bearer(token))
        assert status == 200, body
        got = [v for n, v in headers if n.lower() == "set-cookie"]
        assert got == ["a=1"], got
