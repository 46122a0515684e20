"""What an operator sees of a node's push channel and clock: the
``extauthz_cache_*`` and ``extauthz_clock_offset_*`` metrics and the Status RPC, on a node
built by the composition root against a real redis-server."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import grpc
import pytest

from extauthz._proto.extauthz.v1 import admin_pb2
from extauthz.clock import MAX_CLOCK_OFFSET_SECONDS
from extauthz.errors import StoreUnavailable
from extauthz.server.admin import StatusServicer
from extauthz.server.app import build_components
from extauthz.server.metrics import Metrics, NodeState
from tests.support import RedisServer
from tests.support.extauthz_nodes import node_settings


class _Context:
    async def abort(self, code: grpc.StatusCode, details: str = "") -> None:
        raise AssertionError(f"aborted: {code} {details}")

    def invocation_metadata(self) -> None:
        return None


async def _until(predicate, timeout: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.02)


def _sample(text: str, name: str) -> float:
    lines = [line for line in text.splitlines() if line.startswith(name + " ")]
    assert len(lines) == 1, text
    return float(lines[0].split()[1])


@pytest.mark.e2e
async def test_channel_state_bypasses_and_clock_offset_reach_metrics_and_status(
    tmp_path: Path, fresh_redis: RedisServer
) -> None:
    settings = node_settings(
        tmp_path, "n1", {"strategy": "central", "backend": "redis", "redis_url": fresh_redis.url}
    )
    components = build_components(settings)
    metrics = components.authorizer.metrics
    assert metrics is not None
    status = StatusServicer(
        components.sessions, components.keyring, strategy="central", node_id="n1",
        state=components.probe,
    )  # fmt: skip
    await components.start()
    try:
        await _until(lambda: components.probe().cache_channel == "up")
        text = metrics.render()
        assert _sample(text, "extauthz_cache_channel_up") == 1
        assert _sample(text, "extauthz_cache_channel_down_seconds") == 0
        # the offset was measured against Redis TIME on start (same host: well within)
        assert abs(_sample(text, "extauthz_clock_offset_seconds")) < MAX_CLOCK_OFFSET_SECONDS
        reply = await status.GetStatus(admin_pb2.GetStatusRequest(), _Context())
        assert reply.cache_channel == "up" and reply.HasField("clock_offset_seconds")
        assert reply.clock_offset_max_seconds == MAX_CLOCK_OFFSET_SECONDS

        fresh_redis.stop()  # the push channel goes down with the store
        await _until(lambda: components.probe().cache_channel == "down")
        await asyncio.sleep(0.3)
        bypasses = components.probe().cache_bypasses
        with pytest.raises(StoreUnavailable):
            await components.store.get("0" * 64)
        text = metrics.render()
        assert _sample(text, "extauthz_cache_channel_up") == 0
        assert _sample(text, "extauthz_cache_channel_down_seconds") >= 0.3
        assert _sample(text, "extauthz_cache_bypasses_total") == bypasses + 1
        reply = await status.GetStatus(admin_pb2.GetStatusRequest(), _Context())
        assert (reply.cache_channel, reply.store_reachable) == ("down", False)
        assert reply.cache_channel_down_seconds >= 0.3
        assert reply.cache_bypasses == bypasses + 1
    finally:
        await components.close()


def test_without_a_cache_or_a_measured_offset_nothing_is_invented() -> None:
    text = Metrics({"store_strategy": "sticky"}, state=NodeState).render()
    assert "extauthz_cache_channel_up" not in text
    assert "extauthz_clock_offset_seconds" not in text
    text = Metrics({}, state=lambda: NodeState("down", 12.5, 7, -3.25)).render()
    assert _sample(text, "extauthz_cache_channel_up") == 0
    assert _sample(text, "extauthz_cache_channel_down_seconds") == 12.5
    assert _sample(text, "extauthz_cache_bypasses_total") == 7
    assert _sample(text, "extauthz_clock_offset_seconds") == -3.25
