"""Revocation with warm caches on three extauthz replicas sharing one Redis (docs/strategies.md,
'Revocation').

Three real ``extauthz serve`` processes (central strategy, cache on) share one
``redis-server``. Each connects as its own Redis ACL user, so that one node's push channel
can be cut (its channel permissions revoked, its pub/sub connection killed) while its
session reads keep working.

- 1,000 trials: create a session, warm all three caches (the second Check must be a cache
  ``hit``), revoke through node 1, then Check on all three at once: every one must deny
  with ``unknown_session``.
- With node 3's push channel cut, node 3 does not answer from its cache: a record deleted
  behind the caches' backs (no publish) is seen as gone at once, while a node with a live
  channel, as a control, still answers from its cache. Node 3 then leaves the caching nodes,
  so revocations stop waiting out the trust window for it.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Iterator

import pytest
import redis

from extauthz import tokens
from extauthz.store.redis.keys import SessionKeys
from tests.support import (
    DEMO_SETTINGS,
    ExtauthzProcess,
    RedisServer,
    extauthz_cli,
    redis_binary,
)
from tests.support.authz_client import AuthzClient

pytestmark = pytest.mark.e2e

TRIALS = int(os.environ.get("EXTAUTHZ_CACHE_TRIALS", "1000"))
PREFIX = "cachetest:"
TRUST_WINDOW_MS = 300
NODES = ("node-1", "node-2", "node-3")


def _password(node: str) -> str:
    return f"pw-{node}-0123456789"


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    if redis_binary() is None:
        pytest.skip("redis-server is not on PATH")
    server = RedisServer(tmp_path_factory.mktemp("cache-redis"), name="redis-cache").start()
    admin = redis.Redis(port=server.port, decode_responses=True)
    for node in NODES:
        admin.execute_command("ACL", "SETUSER", node, "on", f">{_password(node)}",
                              "~*", "&*", "+@all")  # fmt: skip
    admin.close()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def nodes(
    redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[ExtauthzProcess]]:
    work = tmp_path_factory.mktemp("cache-nodes")
    keys = work / "keys"
    keys.mkdir()
    extauthz_cli("keys", "generate", "--dir", str(keys))
    procs: list[ExtauthzProcess] = []
    try:
        for node in NODES:
            env = {
                "EXTAUTHZ_SERVER_NODE_ID": node,
                "EXTAUTHZ_STORE_STRATEGY": "central",
                "EXTAUTHZ_STORE_BACKEND": "redis",
                "EXTAUTHZ_STORE_REDIS_URL": (
                    f"redis://{node}:{_password(node)}@127.0.0.1:{redis_server.port}/0"
                ),
                "EXTAUTHZ_STORE_KEY_PREFIX": PREFIX,
                "EXTAUTHZ_JWT_KEYS_DIR": str(keys),
                "EXTAUTHZ_CACHE_ENABLED": "true",
                "EXTAUTHZ_CACHE_TRUST_WINDOW_MS": str(TRUST_WINDOW_MS),
                # thousands of deliberate lookups of revoked tokens from one address
                "EXTAUTHZ_RATELIMIT_ENABLED": "false",
            }
            procs.append(ExtauthzProcess(DEMO_SETTINGS, work, env=env, name=node).start())
        yield procs
    finally:
        for proc in reversed(procs):
            proc.stop()


@pytest.fixture
async def clients(nodes: list[ExtauthzProcess]) -> AsyncIterator[list[AuthzClient]]:
    made = [AuthzClient(proc.grpc_target, proc.admin_metadata) for proc in nodes]
    yield made
    for client in made:
        await client.close()


async def test_revocation_through_one_node_is_seen_by_every_warm_cache(
    clients: list[AuthzClient],
) -> None:
    first, *_ = clients
    allowed_after_revoke = 0
    revoke_ms: list[float] = []
    hit_ms: list[float] = []
    started = time.monotonic()
    for trial in range(TRIALS):
        token, sid = await first.create_session(f"user-{trial}")
        deadline = time.monotonic() + 10
        await asyncio.gather(*(c.warm(token, deadline) for c in clients))
        t0 = time.perf_counter()
        hit = await clients[trial % 3].check(token)
        hit_ms.append((time.perf_counter() - t0) * 1000)
        assert hit.cache == "hit"

        t0 = time.perf_counter()
        assert await first.revoke(sid)
        revoke_ms.append((time.perf_counter() - t0) * 1000)
        results = await asyncio.gather(*(c.check(token) for c in clients))
        for result in results:
            if result.allowed:
                allowed_after_revoke += 1
            else:
                assert result.metadata["reason"] == "revoked_session", result
    elapsed = time.monotonic() - started
    revoke_ms.sort()
    hit_ms.sort()
    revoke_p50, revoke_p99 = revoke_ms[len(revoke_ms) // 2], revoke_ms[int(len(revoke_ms) * 0.99)]
    print(
        f"\n{TRIALS} trials x 3 warm replicas in {elapsed:.1f}s: "
        f"{allowed_after_revoke} allowed after revoke; revoke p50 "
        f"{revoke_p50:.2f} ms, p99 {revoke_p99:.2f} ms; "
        f"cached Check (gRPC round trip) p50 {hit_ms[len(hit_ms) // 2]:.2f} ms"
    )
    assert allowed_after_revoke == 0
    assert TRIALS >= 1000 or os.environ.get("EXTAUTHZ_CACHE_TRIALS")


def _session_key(token: str) -> str:
    return SessionKeys(PREFIX).record(tokens.token_hash(token))


async def _wait_for(predicate_coro, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not await predicate_coro():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.05)


async def test_a_node_with_its_push_channel_cut_does_not_answer_from_its_cache(
    clients: list[AuthzClient], redis_server: RedisServer
) -> None:
    first, second, third = clients
    admin = redis.Redis(port=redis_server.port, decode_responses=True)
    try:
        # control: with live channels, a record deleted behind the caches' backs (no
        # publish) is still answered from the warm caches -- so the test can tell
        control, _ = await first.create_session("control")
        deadline = time.monotonic() + 10
        await asyncio.gather(*(c.warm(control, deadline) for c in clients))
        admin.delete(_session_key(control))
        assert (await second.check(control)).cache == "hit"
        assert (await third.check(control)).allowed

        token, sid = await first.create_session("cut-user")
        await asyncio.gather(*(c.warm(token, deadline) for c in clients))

        # cut node 3's push channel: no channel permission, its pub/sub connection killed;
        # its reconnection attempts fail (NOPERM) while its reads keep working
        admin.execute_command("ACL", "SETUSER", "node-3", "resetchannels")
        admin.execute_command("CLIENT", "KILL", "USER", "node-3")
        await asyncio.sleep(TRUST_WINDOW_MS / 1000 * 2)

        cut = await third.check(token)
        assert cut.allowed and cut.cache == "bypass", cut
        # behind every cache's back: node 3 sees it at once, a warm node 2 does not
        admin.delete(_session_key(token))
        gone = await third.check(token)
        # the record was also what remembered the token as issued: now it is unknown
        assert not gone.allowed and gone.metadata["reason"] == "unknown_session", gone
        assert (await second.check(token)).cache == "hit"

        # node 3 knows its cache is untrusted and leaves CACHE: a revocation no longer waits
        # out the trust window for it, and still no node allows the revoked session
        def node_3_is_member() -> bool:
            members = admin.zrange(PREFIX + "cache-nodes", 0, -1)
            return any(str(m).startswith("node-3/") for m in members)

        deadline = time.monotonic() + 10
        while node_3_is_member():
            assert time.monotonic() < deadline, "node 3 never left the caching nodes"
            await asyncio.sleep(0.05)
        other, other_sid = await first.create_session("cut-revoke")
        await second.warm(other, time.monotonic() + 10)
        assert (await third.check(other)).cache == "bypass"
        t0 = time.perf_counter()
        assert await first.revoke(other_sid)
        waited_ms = (time.perf_counter() - t0) * 1000
        for client in clients:
            assert not (await client.check(other)).allowed
        print(f"\nrevoke with one node's channel cut took {waited_ms:.0f} ms "
              f"(trust window {TRUST_WINDOW_MS} ms)")  # fmt: skip
        assert waited_ms < TRUST_WINDOW_MS

        # restore: node 3 re-subscribes and trusts its (cleared) cache again
        admin.execute_command("ACL", "SETUSER", "node-3", "allchannels")
        fresh, _ = await first.create_session("after-restore")

        async def third_hits() -> bool:
            return (await third.check(fresh)).cache == "hit"

        await _wait_for(third_hits, 10, "node 3 never trusted its cache again")
    finally:
        admin.execute_command("ACL", "SETUSER", "node-3", "allchannels")
        admin.close()

