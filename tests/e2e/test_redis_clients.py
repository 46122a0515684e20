"""One Redis client per role in a running node (docs/strategies.md, 'Redis clients').

A real ``extauthz serve`` (``central`` over three Sentinels, the session cache on, users and
rate-limit counters in Redis: everything that once built a Redis client of its own) does its
work, and then the Redis servers themselves are asked, with ``CLIENT LIST``, who is
connected. The node's connections carry its client name (``extauthz:<node id>:<role>``).

- Each Sentinel sees exactly one connection of the node: the node asks through one
  discovery. (Three clients, each with its own ``Sentinel``, showed three on each.)
- The primary sees the node under the primary role only, with one subscription. (How many
  command connections that role's pool holds depends on how many calls overlapped, so it is
  printed, not bounded: redis-py's pool opens one per concurrent call.)
- The node appears in the store under one instance id: its node record names the id under
  which it caches sessions.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from extauthz import tokens
from extauthz._proto.extauthz.v1 import admin_pb2, admin_pb2_grpc
from extauthz.store.redis.clients import RedisClients, RedisEndpoints
from tests.support import ExtauthzProcess
from tests.support.extauthz_nodes import CheckClient, keys_dir, settle, write_settings
from tests.support.redis_topology import ReplicatedTopology, redis_server_available

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not redis_server_available(), reason="redis-server binary not installed"),
]

NODE = "clients-1"


@pytest.fixture
def topo(tmp_path: Path) -> Iterator[ReplicatedTopology]:
    with ReplicatedTopology(tmp_path / "redis", replicas=1, sentinels=3) as t:
        settle(t)
        yield t


def _start_node(tmp_path: Path, topo: ReplicatedTopology) -> ExtauthzProcess:
    config = write_settings(
        tmp_path / f"{NODE}.toml",
        {
            "server": {"node_id": NODE, "health_check_interval_seconds": 0.2},
            "store": {
                "strategy": "central",
                "backend": "redis",
                "sentinels": [f"{h}:{p}" for h, p in topo.sentinel_addresses()],
                "sentinel_service": topo.service_name,
                "redis_url": topo.primary().url,
            },
            "cache": {"enabled": True},
            "users": {"backend": "redis"},
            "ratelimit": {"enabled": True},
            "jwt": {"keys_dir": str(keys_dir(tmp_path))},
        },
    )
    return ExtauthzProcess(config, tmp_path / "logs", name=NODE).start()


def _named(clients: list[dict[str, str]], role: str) -> list[dict[str, str]]:
    return [c for c in clients if c.get("name") == f"extauthz:{NODE}:{role}"]


def test_a_node_holds_one_client_per_role_and_one_sentinel_discovery(
    tmp_path: Path, topo: ReplicatedTopology
) -> None:
    node = _start_node(tmp_path, topo)
    channel = grpc.insecure_channel(node.grpc_target)
    checks = CheckClient(node.grpc_target)
    try:
        admin = admin_pb2_grpc.SessionAdminStub(channel)
        # every part that once had a client of its own does its work: the session store
        # (create, Check, revoke with its barrier), the Check throttle's rate-limit counters
        # (failed lookups), the membership (heartbeats), the cache (its subscription)
        created = [
            admin.CreateSession(
                admin_pb2.CreateSessionRequest(sub=f"u{i}"), metadata=node.admin_metadata,
                timeout=5,
            )  # fmt: skip
            for i in range(3)
        ]
        for reply in created:
            assert checks.check(reply.access_token) == "allow"
        for _ in range(3):
            assert checks.check(tokens.mint_token()) == "deny:unknown_session"
        revoked = admin.RevokeSession(
            admin_pb2.RevokeSessionRequest(sid=created[0].session.sid),
            metadata=node.admin_metadata, timeout=5,
        )  # fmt: skip
        assert revoked.revoked
        time.sleep(1.5)  # heartbeats, proofs, health checks

        for sentinel in topo.sentinels:
            with sentinel.client() as s:
                clients = s.client_list()
            mine = [c for c in clients if c.get("name", "").startswith(f"extauthz:{NODE}:")]
            assert len(_named(mine, "sentinel")) == 1 and len(mine) == 1, mine

        with topo.primary().client() as r:
            clients = r.client_list()
            record = r.hget("extauthz:nodes", NODE)
            cache_members = r.zrange("extauthz:cache-nodes", 0, -1)
        mine = [c for c in clients if c.get("name", "").startswith(f"extauthz:{NODE}:")]
        primary = _named(mine, "primary")
        assert primary == mine, mine  # nothing but the primary role on the primary
        subscribed = [c for c in primary if int(c.get("sub", 0)) > 0]
        commands = [c for c in primary if int(c.get("sub", 0)) == 0]
        print(f"node connections: primary={len(commands)} subscribed={len(subscribed)}")
        assert len(subscribed) == 1 and commands, primary

        assert record is not None
        instance = json.loads(record)["instance"]
        assert instance.startswith(f"{NODE}/") and cache_members == [instance]
    finally:
        channel.close()
        checks.close()
        node.stop()


async def test_discovery_does_not_wait_for_a_stopped_sentinel(topo: ReplicatedTopology) -> None:
    """One Sentinel of three stopped (``SIGSTOP``: it accepts connections, never answers):
    the other two are a majority, and the discovery ends on their answers instead of holding
    every reconnect for the stopped one's socket timeout (here 30 s; a Check's budget is
    400 ms). Regression: asked with ``gather``, a Check that reconnected while one Sentinel
    was partitioned away answered ``UNAVAILABLE``."""
    endpoints = RedisEndpoints(
        primary_url="",
        sentinels=tuple(topo.sentinel_addresses()),
        sentinel_service=topo.service_name,
        timeout_seconds=30.0,
        name="discovery",
    )
    clients = RedisClients(endpoints)
    stopped = topo.sentinels[0].pid
    assert stopped is not None
    os.kill(stopped, signal.SIGSTOP)
    try:
        # a first connection asks the Sentinels; the stopped one would hold it for 30 s
        await asyncio.wait_for(clients.primary.set("discovery", "1"), timeout=10)
        assert await asyncio.wait_for(clients.primary.get("discovery"), timeout=10) == b"1"
    finally:
        os.kill(stopped, signal.SIGCONT)
        await clients.aclose()
