"""/metrics of a node built by the composition root against a real redis-server, after real
Checks (through the gRPC ``Check`` handler), logins (through the HTTP app) and a logout:
the answer parses with ``prometheus_client``'s parser and has every series operators watch."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from extauthz.server.app import Components, build_components
from extauthz.server.grpc_server import AuthorizationServicer
from extauthz.server.http_server import build_http_app
from harness.extauthz import add_user
from tests.fixtures.core import FakeServicerContext, bearer_request
from tests.support import RedisServer
from tests.support.extauthz_nodes import node_settings
from tests.support.metrics_text import families, parse, value

pytestmark = pytest.mark.e2e

SERIES = {  # family (without _total) → type
    "extauthz_info": "gauge",
    "extauthz_store_strategy": "gauge",
    "extauthz_workers": "gauge",
    "extauthz_check_duration_seconds": "histogram",
    "extauthz_check_decisions": "counter",
    "extauthz_store_operation_duration_seconds": "histogram",
    "extauthz_cache_hits": "counter",
    "extauthz_cache_misses": "counter",
    "extauthz_cache_bypasses": "counter",
    "extauthz_cache_channel_up": "gauge",
    "extauthz_invalidation_ack_seconds": "histogram",
    "extauthz_logins": "counter",
    "extauthz_rate_limited": "counter",
    "extauthz_signing_key_age_seconds": "gauge",
    "extauthz_token_rotations": "counter",
    "extauthz_redis_pool_waits": "counter",
    "extauthz_clock_offset_seconds": "gauge",
}


@pytest.fixture
async def redis_node(tmp_path: Path, fresh_redis: RedisServer) -> AsyncIterator[Components]:
    users = tmp_path / "users.json"
    add_user(users, "demo", "demo-password")
    settings = node_settings(
        tmp_path, "n1", {"strategy": "central", "backend": "redis", "redis_url": fresh_redis.url},
        users={"file": str(users)},
        ratelimit={"enabled": True, "login_user_limit": 1},
    )  # fmt: skip
    components = build_components(settings)
    await components.start()
    try:
        yield components
    finally:
        await components.close()


async def _until(predicate, timeout: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not await predicate():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.02)


async def test_metrics_after_real_checks_and_logins(redis_node: Components) -> None:
    node = redis_node
    check = AuthorizationServicer(node.authorizer)
    token, _ = await node.sessions.create("alice")

    async def allowed() -> bool:
        response = await check.Check(bearer_request(token), FakeServicerContext())
        return bool(response.HasField("ok_response"))

    async def cache_hit() -> bool:
        return await allowed() and node.probe().cache_hits > 0

    await _until(cache_hit)  # the cache answers once the push channel is proven live
    denied = await check.Check(bearer_request("xat_notatoken"), FakeServicerContext())
    assert denied.HasField("denied_response")

    app = build_http_app(node.keyring, node.auth, metrics_registry=node.authorizer.metrics)
    async with TestClient(TestServer(app)) as client:
        demo = {"username": "demo", "password": "demo-password"}
        signed_in = await client.post("/auth/login", json=demo)
        assert signed_in.status == 200
        for status in (401, 429):  # a wrong password; then the budget (1) is spent
            resp = await client.post("/auth/login", json={"username": "demo", "password": "no"})
            assert resp.status == status
        # a logout revokes: the revocation waits for every caching node's acknowledgement
        assert await node.sessions.revoke_token(token) is not None
        scrape = await client.get("/metrics")
        assert scrape.status == 200
        assert scrape.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = await scrape.text()

    found = families(text)
    for name, kind in SERIES.items():
        assert found.get(name) == kind, (name, sorted(found))
    s = parse(text)
    assert (value(s, "extauthz_check_duration_seconds_count", decision="allow") or 0) >= 2
    assert value(s, "extauthz_check_duration_seconds_count", decision="deny") == 1
    assert value(s, "extauthz_check_decisions_total", decision="deny",
                 reason="malformed_credential") == 1  # fmt: skip
    at_least_once = [
        ("extauthz_store_operation_duration_seconds_count", {"operation": "get",
                                                             "role": "primary"}),
        ("extauthz_cache_hits_total", {}),
        ("extauthz_cache_misses_total", {}),
        ("extauthz_invalidation_ack_seconds_count", {"role": "cache"}),
    ]
    for name, labels in at_least_once:
        assert (value(s, name, **labels) or 0) >= 1, (name, labels)
    for outcome, count in (("signed_in", 1), ("failed", 1), ("throttled", 1), ("refused", 0)):
        assert value(s, "extauthz_logins_total", outcome=outcome) == count, outcome
    assert value(s, "extauthz_rate_limited_total", scope="login:user") == 1
    age = value(s, "extauthz_signing_key_age_seconds")
    assert age is not None and 0 <= age < 600
    assert value(s, "extauthz_workers") == 1
    assert value(s, "extauthz_store_strategy", strategy="central") == 1
    assert value(s, "extauthz_info", version=node.authorizer.metrics.info["version"],  # type: ignore[union-attr]
                 node_id="n1", store_strategy="central", store_backend="redis") == 1  # fmt: skip
