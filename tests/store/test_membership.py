"""The node's membership (extauthz.store.redis.membership): each live node is recorded in its
store under one instance id, and a node that finds live nodes with another strategy under the
same store refuses to start."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from extauthz.clock import MAX_CLOCK_OFFSET_SECONDS
from extauthz.errors import SettingsError
from extauthz.store.redis.errors import text
from extauthz.store.redis.membership import CACHE, READER, Membership
from tests.support import REPO_ROOT, ExtauthzProcess, RedisServer
from tests.support.extauthz_nodes import keys_dir, write_settings

pytestmark = pytest.mark.e2e  # every test runs its own Redis


@pytest.fixture
async def client(fresh_redis: RedisServer) -> AsyncIterator[aioredis.Redis]:
    c = aioredis.Redis.from_url(fresh_redis.url)
    yield c
    await c.aclose()


class _Node(Membership):
    """A membership that owns its client (each stands for a process of its own)."""

    async def close(self) -> None:
        await self._redis.aclose()


def _registry(redis_url: str, node_id: str, strategy: str, heartbeat: float = 5.0) -> _Node:
    return _Node(
        aioredis.Redis.from_url(redis_url),
        "reg:",
        node_id,
        strategy=strategy,
        version="test",
        topology="primary=test",
        heartbeat_seconds=heartbeat,
    )


async def test_register_records_strategy_version_and_heartbeat(fresh_redis: RedisServer) -> None:
    node = _registry(fresh_redis.url, "node-a", "central")
    try:
        await node.register()
        (record,) = await node.nodes()
        assert (record.node_id, record.strategy, record.version) == ("node-a", "central", "test")
        assert record.instance == node.instance and node.instance.startswith("node-a/")
        assert record.ttl == 15.0 and record.live(record.heartbeat + 1)
        first = record.heartbeat
        await asyncio.sleep(0.05)
        assert await node.heartbeat() == []
        (record,) = await node.nodes()
        assert record.heartbeat > first and record.started == pytest.approx(first)
        await node.deregister()
        assert await node.nodes() == []
    finally:
        await node.close()


async def test_same_strategy_nodes_coexist_and_a_different_one_is_refused_by_name(
    fresh_redis: RedisServer,
) -> None:
    nodes = [
        _registry(fresh_redis.url, "node-a", "replicated"),
        _registry(fresh_redis.url, "node-b", "replicated"),
        _registry(fresh_redis.url, "node-c", "central"),
    ]
    try:
        await nodes[0].register()
        await nodes[1].register()
        with pytest.raises(SettingsError) as refused:
            await nodes[2].register()
        message = str(refused.value)
        assert "\n" not in message
        assert "node-a (replicated)" in message and "node-b (replicated)" in message
        assert "node-c" in message and "'central'" in message
        assert [r.node_id for r in await nodes[0].nodes()] == ["node-a", "node-b"]
    finally:
        for node in nodes:
            await node.close()


async def test_dead_nodes_do_not_block_a_strategy_change(fresh_redis: RedisServer) -> None:
    old = _registry(fresh_redis.url, "old", "sticky", heartbeat=0.1)  # live for 0.3 s
    new = _registry(fresh_redis.url, "new", "central")
    try:
        await old.register()  # and then it dies without deregistering
        with pytest.raises(SettingsError):
            await new.register()
        await asyncio.sleep(0.5)
        await new.register()
        assert {r.node_id: r.strategy for r in await new.nodes()} == {
            "old": "sticky",
            "new": "central",
        }
    finally:
        await old.close()
        await new.close()


async def test_concurrent_start_of_two_strategies_lets_only_one_register(
    fresh_redis: RedisServer,
) -> None:
    for round_ in range(20):
        a = _registry(fresh_redis.url, f"a{round_}", "central")
        b = _registry(fresh_redis.url, f"b{round_}", "replicated")
        try:
            results = await asyncio.gather(a.register(), b.register(), return_exceptions=True)
            refused = [r for r in results if isinstance(r, SettingsError)]
            assert len(refused) == 1, results
        finally:
            await a.deregister()
            await b.deregister()
            await a.close()
            await b.close()


async def test_a_conflict_found_by_the_heartbeat_is_reported(fresh_redis: RedisServer) -> None:
    late = _registry(fresh_redis.url, "late", "central", heartbeat=0.05)
    other = _registry(fresh_redis.url, "other", "replicated")
    found: list[SettingsError] = []
    try:
        await late.register()
        # a node that registered while `late` could not see it (e.g. across a partition that
        # has now healed): written without the check
        await other._call("beat")
        late.on_conflict = found.append
        await late.start()
        for _ in range(40):
            if found:
                break
            await asyncio.sleep(0.05)
        await late.stop()
        assert found and "other (replicated)" in str(found[0])
        assert [r.node_id for r in await late.nodes()] == ["other"]  # stop() deregistered
    finally:
        await late.close()
        await other.close()


async def test_one_instance_id_for_the_record_the_cache_and_the_read_lease(
    fresh_redis: RedisServer,
) -> None:
    node = _registry(fresh_redis.url, "node-a", "replicated")
    try:
        await node.register()
        await node.beat(CACHE, forget_after=60)
        continued, current = await node.renew_lease(5.0, applied=0, forget_after=60)
        assert (continued, current) == (False, 0)
        (record,) = await node.nodes()
        client = node._redis
        members = {text(m) for role in (CACHE, READER) for m in await client.zrange(
            node.keys(role)[0], 0, -1)}  # fmt: skip
        assert members == {record.instance} == {node.instance}
        await client.set("reg:invalidate:seq", 7)
        assert await node.pending(CACHE, 7) == await node.pending(READER, 7) == [node.instance]
        await node.ack(CACHE, 7)
        await node.ack(READER, 7)
        await node.ack(READER, 3)  # a lease's acknowledgements never go back
        assert await node.pending(CACHE, 7) == await node.pending(READER, 7) == []
        assert await node.leave(CACHE) and await node.leave(READER)
        assert not await node.leave(READER)
    finally:
        await node.close()


async def test_live_count_counts_unexpired_leases_and_recent_beats(
    fresh_redis: RedisServer,
) -> None:
    """``WAIT "all"`` under ``replicated`` waits for one replica per live read lease."""
    a, b = (_registry(fresh_redis.url, f"node-{n}", "replicated") for n in "ab")
    try:
        await a.renew_lease(5.0, applied=0, forget_after=60)
        await b.renew_lease(0.05, applied=0, forget_after=60)
        assert await a.live_count(READER) == 2
        await asyncio.sleep(0.1)  # b's lease expired (by the Redis clock)
        assert await a.live_count(READER) == 1
        assert await b.live_count(CACHE) == 0
        await b.beat(CACHE, forget_after=60)
        assert await a.live_count(CACHE) == 1
        await a.leave(READER)  # a node that gives its lease up is not counted
        assert await b.live_count(READER) == 0
    finally:
        await a.close()
        await b.close()


# ---------------------------------------------------------------------------- processes


def _config(tmp_path: Path, name: str, redis_url: str, strategy: str) -> Path:
    return write_settings(
        tmp_path / f"{name}.toml",
        {
            "server": {"node_id": name},
            "store": {"strategy": strategy, "backend": "redis", "redis_url": redis_url},
            "jwt": {"keys_dir": str(keys_dir(tmp_path))},
        },
    )


def test_second_node_with_another_strategy_refuses_to_start(
    tmp_path: Path, fresh_redis: RedisServer
) -> None:
    first = ExtauthzProcess(
        _config(tmp_path, "node-central", fresh_redis.url, "central"), tmp_path / "logs",
        name="node-central",
    ).start()
    try:
        second = subprocess.run(
            [sys.executable, "-m", "extauthz", "serve", "--config",
             str(_config(tmp_path, "node-sticky", fresh_redis.url, "sticky"))],
            capture_output=True, text=True, timeout=30, cwd=REPO_ROOT, check=False,
            env=dict(os.environ, EXTAUTHZ_ADMIN_TOKEN_FILE=first.env["EXTAUTHZ_ADMIN_TOKEN_FILE"]),
        )  # fmt: skip
        assert second.returncode != 0
        lines = [line for line in second.stderr.splitlines() if line.strip()]
        assert len(lines) == 1, second.stderr
        assert "node-central (central)" in lines[0] and "'sticky'" in lines[0]
        assert first.running
        # a node with the same strategy joins
        third = ExtauthzProcess(
            _config(tmp_path, "node-central-2", fresh_redis.url, "central"), tmp_path / "logs",
            name="node-central-2",
        ).start()
        third.stop()
    finally:
        first.stop()


@pytest.mark.parametrize("ahead", [0.0, 2.0, -10.0])
async def test_the_clock_offset_from_redis_time_is_measured_and_warned_beyond_the_contract(
    client: aioredis.Redis, caplog: pytest.LogCaptureFixture, ahead: float
) -> None:
    node = Membership(client, "clk:", "n1", wall_clock=lambda: time.time() + ahead)
    assert node.clock_offset is None
    with caplog.at_level(logging.WARNING, logger="extauthz.store.membership"):
        await node.start()
        try:
            assert node.clock_offset is not None
            assert abs(node.clock_offset - ahead) < 0.5  # same host: Redis TIME is our clock
            warned = [r for r in caplog.records if "clock offset" in r.getMessage()]
            # one warning on start when outside the contract, none within it
            assert len(warned) == (1 if abs(ahead) > MAX_CLOCK_OFFSET_SECONDS else 0)
        finally:
            await node.stop()
