"""Rolling token rotation end to end: the repository's envoy/front-proxy.yaml on real Envoy
(oldest and newest supported release), extauthz with ``session.rotate_after_seconds`` set short,
on a real Redis (central) and on the in-memory store (sticky).

At the rotation moment 50 requests carrying the same old cookie arrive at once: every one is
allowed, the store holds exactly one new token for the session, and every ``Set-Cookie`` that
reaches a client carries that token, one header line each. During the grace the old cookie
still works (and learns the same new token); after it the old cookie is denied
(``revoked_session``). A bearer session of the same age never gets a ``Set-Cookie``.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.cookies import SimpleCookie

import pytest
import redis

from extauthz import tokens
from extauthz.store.model import Session
from extauthz.store.redis.keys import SessionKeys
from harness.ports import LOOPBACK
from tests.support import RedisServer, Stack, start_stack

pytestmark = pytest.mark.e2e

COOKIE = "extauthz_session"
ROTATE_AFTER = 2
GRACE = 1.5  # below ROTATE_AFTER, above the cache's trust window (300 ms) plus its margin
RACERS = 50


@pytest.fixture(scope="module", params=["redis", "memory"])
def rotation_stack(
    request: pytest.FixtureRequest,
    envoy_binary: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Stack, redis.Redis | None, str]]:
    prefix = f"rot{uuid.uuid4().hex[:8]}:"
    env = {
        "EXTAUTHZ_SESSION_ROTATE_AFTER_SECONDS": str(ROTATE_AFTER),
        "EXTAUTHZ_SESSION_ROTATION_GRACE_SECONDS": str(GRACE),
        "EXTAUTHZ_STORE_KEY_PREFIX": prefix,
        "EXTAUTHZ_RATELIMIT_ENABLED": "false",
    }
    client: redis.Redis | None = None
    redis_url = None
    if request.param == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        redis_url = server.url
        client = redis.Redis.from_url(server.url)
    stack = start_stack(
        envoy_binary, tmp_path_factory.mktemp(f"rotation-{request.param}"), redis_url=redis_url,
        env=env,
    )  # fmt: skip
    try:
        yield stack, client, prefix
    finally:
        stack.stop()
        if client is not None:
            client.close()


Answer = tuple[int, list[tuple[str, str]], bytes]


def get(stack: Stack, path: str, headers: dict[str, str]) -> Answer:
    conn = http.client.HTTPConnection(LOOPBACK, stack.ports.listener, timeout=10)
    try:
        conn.request("GET", path, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.getheaders(), resp.read()
    finally:
        conn.close()


def session_cookies(headers: list[tuple[str, str]]) -> list[str]:
    """The tokens of every ``Set-Cookie`` line for the session cookie; each line must hold
    exactly one cookie (never folded with another)."""
    found = []
    for name, value in headers:
        if name.lower() != "set-cookie":
            continue
        parsed = SimpleCookie()
        parsed.load(value)
        assert len(parsed) == 1, f"folded Set-Cookie: {value!r}"
        if COOKIE in parsed:
            assert "HttpOnly" in value and "SameSite=Lax" in value and "Path=/" in value
            found.append(parsed[COOKIE].value)
    return found


def with_cookie(token: str) -> dict[str, str]:
    return {"cookie": f"theme=dark; {COOKIE}={token}", "accept": "application/json"}


def rotation_counts(stack: Stack) -> dict[str, int]:
    """``extauthz_token_rotations_total`` by result, from the node's ``/metrics``."""
    conn = http.client.HTTPConnection(LOOPBACK, stack.ports.http, timeout=10)
    try:
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
    finally:
        conn.close()
    counts = {}
    for line in text.splitlines():
        if line.startswith("extauthz_token_rotations_total{"):
            labels, _, value = line.rpartition(" ")
            counts[labels.split('"')[1]] = int(value)
    return counts


def stored_tokens_of(client: redis.Redis, prefix: str, sid: str) -> list[str]:
    """The token hashes Redis holds a session record of ``sid`` under."""
    hashes = []
    tag = tokens.sid_tag(sid)
    keys = SessionKeys(prefix)
    pattern = f"{prefix}session:*" if tag is None else f"{prefix}{{{tag}}}s:*"
    for key in client.scan_iter(match=pattern, count=1000):
        record = client.get(key)
        if record is not None and Session.from_record(record).sid == sid:
            rest = key.decode().rpartition(":")[2]
            token_hash = rest if tag is None else f"{tag}.{rest}"
            assert keys.record(token_hash) == key.decode()
            hashes.append(token_hash)
    return hashes


def test_rolling_rotation_under_50_concurrent_requests(
    rotation_stack: tuple[Stack, redis.Redis | None, str],
) -> None:
    stack, client, prefix = rotation_stack
    old = stack.create_session("alice")
    bearer = stack.create_session("bob")
    created = time.monotonic()
    status, headers, body = get(stack, "/young", with_cookie(old))
    assert status == 200, body
    assert session_cookies(headers) == []  # young: no rotation
    sid = json.loads(body)["jwt"]["claims"]["sid"]

    time.sleep(max(0.0, created + ROTATE_AFTER + 0.2 - time.monotonic()))
    start = threading.Barrier(RACERS)

    def race(i: int) -> Answer:
        start.wait(timeout=10)
        return get(stack, f"/race/{i}", with_cookie(old))

    with ThreadPoolExecutor(RACERS) as pool:
        results = list(pool.map(race, range(RACERS)))
    rotated_at = time.monotonic()
    assert [status for status, _, _ in results] == [200] * RACERS, [b for _, _, b in results]
    per_response = [session_cookies(headers) for _, headers, _ in results]
    assert all(len(cookies) <= 1 for cookies in per_response)
    new_tokens = {t for cookies in per_response for t in cookies}
    assert len(new_tokens) == 1, new_tokens
    (new,) = new_tokens
    assert new != old and tokens.has_token_shape(new)
    # every raced request reached the upstream as the same session
    assert {json.loads(b)["jwt"]["claims"]["sid"] for _, _, b in results} == {sid}
    if client is not None:
        assert stored_tokens_of(client, prefix, sid) == [tokens.token_hash(new)]
    assert rotation_counts(stack)["rotated"] == 1

    # the new token is young; the old one, within its grace, learns the same new token
    status, headers, _ = get(stack, "/new", with_cookie(new))
    assert status == 200 and session_cookies(headers) == []
    status, headers, _ = get(stack, "/old-in-grace", with_cookie(old))
    assert status == 200 and session_cookies(headers) == [new]

    # a bearer session of the same age is allowed and never rotated
    status, headers, body = get(
        stack, "/bearer", {"authorization": f"Bearer {bearer}", "accept": "application/json"}
    )
    assert status == 200, body
    assert not [v for k, v in headers if k.lower() == "set-cookie"]

    # after the grace the old cookie is dead, the new one lives on
    time.sleep(max(0.0, rotated_at + GRACE + 0.3 - time.monotonic()))
    status, _, body = get(stack, "/old-after-grace", with_cookie(old))
    assert status == 401, body
    assert json.loads(body)["reason"] == "revoked_session"
    status, _, body = get(stack, "/new-after-grace", with_cookie(new))
    assert status == 200, body
    assert json.loads(body)["jwt"]["claims"]["sid"] == sid
    status, headers, _ = get(
        stack, "/bearer-again", {"authorization": f"Bearer {bearer}", "accept": "application/json"}
    )
    assert status == 200 and not [v for k, v in headers if k.lower() == "set-cookie"]
