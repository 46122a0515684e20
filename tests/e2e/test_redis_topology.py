"""Tests of tests/support/redis_topology.py against real redis-server processes.

They double as executable documentation of the failover behaviour the session store relies
on: WAIT for replicas, Sentinel failover after a crash, and a graceful SENTINEL FAILOVER.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import redis.asyncio.sentinel
from redis.backoff import NoBackoff
from redis.retry import Retry

from tests.support.redis_topology import (
    RedisNode,
    ReplicatedTopology,
    TopologyTimeout,
    free_port,
    needs_redis_server,
    wait_until,
)

pytestmark = [pytest.mark.e2e, needs_redis_server]

FAILOVER_BUDGET_S = 15.0


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture
def replication(tmp_path: Path) -> Iterator[ReplicatedTopology]:
    with ReplicatedTopology(tmp_path, replicas=2) as topo:
        yield topo


@pytest.fixture
def sentinel_topology(tmp_path: Path) -> Iterator[ReplicatedTopology]:
    with ReplicatedTopology(tmp_path, replicas=2, sentinels=3, down_after_ms=500) as topo:
        yield topo


# --------------------------------------------------------------------------- helpers


def test_free_port_is_bindable_and_not_the_shared_redis() -> None:
    port = free_port()
    assert port != 6379
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def test_wait_until_is_bounded() -> None:
    start = time.monotonic()
    with pytest.raises(TopologyTimeout, match="the impossible"):
        wait_until(lambda: False, timeout=0.3, description="the impossible")
    assert time.monotonic() - start < 2.0


def test_node_restart_keeps_port_and_dir_and_kill9_really_kills(tmp_path: Path) -> None:
    node = RedisNode(tmp_path / "n")
    node.start()
    try:
        port, pid = node.port, node.pid
        assert pid is not None
        with node.client() as client:
            assert client.ping()
            assert client.config_get("save") == {"save": ""}
            assert client.config_get("appendonly") == {"appendonly": "no"}
            assert client.config_get("bind") == {"bind": "127.0.0.1"}
            assert client.config_get("dir") == {"dir": str((tmp_path / "n").resolve())}
        assert node.role() == "master"

        node.restart()
        assert node.port == port
        assert node.pid not in (None, pid)
        assert not _pid_alive(pid)

        pid = node.pid
        assert pid is not None
        node.kill9()
        assert not node.running and not _pid_alive(pid)
        # redis-py 8 retries 10 times with backoff by default; fail fast here.
        no_retry = Retry(NoBackoff(), 0)
        with node.client(retry=no_retry) as client, pytest.raises(redis.ConnectionError):
            client.ping()
    finally:
        node.stop()


def test_close_kills_every_process(tmp_path: Path) -> None:
    topo = ReplicatedTopology(tmp_path, replicas=1, sentinels=1).start()
    pids = [p.pid for p in topo.processes()]
    assert len(pids) == 3 and all(pids)
    topo.close()
    assert not any(_pid_alive(pid) for pid in pids if pid is not None)


# --------------------------------------------------------------------------- replication


def test_write_on_primary_is_readable_on_both_replicas_after_wait(
    replication: ReplicatedTopology,
) -> None:
    key, value = f"session:{uuid.uuid4().hex}", "alice"
    primary = replication.primary()
    with primary.client() as client:
        client.set(key, value)
        acked = client.execute_command("WAIT", 2, 1000)
    assert acked == 2

    assert len(replication.replicas) == 2
    for replica in replication.replicas:
        assert replica.role() == "slave"
        assert replica.master_port() == primary.port
        with replica.client() as client:
            assert client.get(key) == value
            with pytest.raises(redis.ReadOnlyError):
                client.set(key, "mallory")

    replication.wait_replicas_synced(timeout=5)


# --------------------------------------------------------------------------- Sentinel


async def test_kill9_primary_fails_over_to_a_replica_and_sentinel_client_writes_there(
    sentinel_topology: ReplicatedTopology,
) -> None:
    topo = sentinel_topology
    old = topo.primary()
    assert old is topo.original_primary
    key = f"session:{uuid.uuid4().hex}"
    with old.client() as client:
        client.set(key, "before")
        assert client.execute_command("WAIT", 2, 1000) == 2

    started = time.monotonic()
    old.kill9()
    new = await asyncio.to_thread(topo.wait_for_failover, old.port, FAILOVER_BUDGET_S)
    elapsed = time.monotonic() - started

    assert elapsed < FAILOVER_BUDGET_S
    assert new in topo.replicas
    assert new.role() == "master"
    assert topo.primary() is new

    sentinel = redis.asyncio.sentinel.Sentinel(
        topo.sentinel_addresses(), socket_timeout=1.0, socket_connect_timeout=1.0
    )
    master = sentinel.master_for(topo.service_name, decode_responses=True)
    try:
        assert await sentinel.discover_master(topo.service_name) == ("127.0.0.1", new.port)
        # The write acknowledged by both replicas before the crash survived the failover.
        assert await master.get(key) == "before"
        await master.set(key, "after")
        assert await master.get(key) == "after"
    finally:
        await master.aclose()
        await sentinel.aclose()
    with new.client() as client:
        assert client.get(key) == "after"

    # The surviving replica is re-pointed at the new primary.
    (other,) = [n for n in topo.replicas if n is not new]
    await asyncio.to_thread(topo.wait_replica_of, other, new, 10.0)


def test_graceful_sentinel_failover_demotes_old_primary_to_replica_of_new(
    sentinel_topology: ReplicatedTopology,
) -> None:
    topo = sentinel_topology
    old = topo.primary()
    topo.sentinels[0].failover()

    new = topo.wait_for_failover(old.port, FAILOVER_BUDGET_S)
    assert new in topo.replicas

    # Sentinel reconfigures the still-running old primary only after it has reported the
    # wrong role for a while (about 10 s in Redis 7), hence the longer bound.
    topo.wait_replica_of(old, new, timeout=25.0)
    assert old.role() == "slave"
    assert old.master_port() == new.port

    key = f"session:{uuid.uuid4().hex}"
    with new.client() as client:
        client.set(key, "moved")
        assert client.execute_command("WAIT", 2, 2000) == 2
    with old.client() as client:
        assert client.get(key) == "moved"


async def test_sentinel_client_on_a_demoted_primary_fails_once_then_follows_sentinel(
    sentinel_topology: ReplicatedTopology,
) -> None:
    """What the session store sees when its pooled connection points at a primary that was
    demoted without being disconnected: redis-py turns the server's READONLY reply into a
    ``ConnectionError`` and drops the connection; the *next* command asks Sentinel again.

    (Sentinel itself demotes a surviving old primary with ``CLIENT KILL``, so in a normal
    graceful failover clients are disconnected instead; here we demote it by hand first.)
    """
    topo = sentinel_topology
    sentinel = redis.asyncio.sentinel.Sentinel(
        topo.sentinel_addresses(), socket_timeout=1.0, socket_connect_timeout=1.0
    )
    master = sentinel.master_for(topo.service_name, decode_responses=True)
    try:
        await master.set("k", "v1")  # the pool now holds a connection to the old primary
        old = topo.primary()
        topo.sentinels[0].failover()
        new = await asyncio.to_thread(topo.wait_for_failover, old.port, FAILOVER_BUDGET_S)
        old.replicaof("127.0.0.1", new.port)

        with pytest.raises(redis.ConnectionError, match="previous master is now a slave"):
            await master.set("k", "v2")
        await master.set("k", "v3")
        with new.client() as client:
            assert client.get("k") == "v3"
    finally:
        await master.aclose()
        await sentinel.aclose()
