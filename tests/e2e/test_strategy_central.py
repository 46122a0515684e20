"""The ``central`` strategy on a real Redis primary, two replicas and three Sentinels
(``down-after-milliseconds`` 500): a crashed primary costs 503s for the failover gap and
never a denial; a graceful ``SENTINEL FAILOVER`` surfaces no ``READONLY`` to any caller.

The figures these tests measure (the 503 gap) are printed and quoted in docs/strategies.md.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from extauthz._proto.extauthz.v1 import admin_pb2, admin_pb2_grpc
from extauthz.errors import StoreUnavailable, Unauthenticated
from extauthz.server import store_wiring as topology
from extauthz.server.app import build_components
from extauthz.store.manager import SessionManager
from extauthz.store.redis.clients import RedisClients
from extauthz.store.redis.keys import SessionKeys
from extauthz.store.redis.store import RedisSessionStore
from tests.support import ExtauthzProcess
from tests.support.extauthz_nodes import (
    CheckClient,
    keys_dir,
    node_settings,
    settle,
    write_settings,
)
from tests.support.redis_topology import ReplicatedTopology, needs_redis_server
from tests.support.session_index import index_probe

pytestmark = [pytest.mark.e2e, needs_redis_server]

FAILOVER_BUDGET_S = 20.0
KEYS = SessionKeys("extauthz:")  # the key prefix of the nodes' settings
SESSIONS = 8


@pytest.fixture
def topo(tmp_path: Path) -> Iterator[ReplicatedTopology]:
    with ReplicatedTopology(tmp_path / "redis", replicas=2, sentinels=3, down_after_ms=500) as t:
        settle(t)
        yield t


def _store_table(topo: ReplicatedTopology) -> dict[str, Any]:
    return {
        "strategy": "central",
        "backend": "redis",
        "sentinels": [f"{h}:{p}" for h, p in topo.sentinel_addresses()],
        "sentinel_service": topo.service_name,
        # never used with Sentinels; set so nothing could reach a Redis we did not start
        "redis_url": topo.primary().url,
    }


def _start_node(
    tmp_path: Path, topo: ReplicatedTopology, name: str = "central-1"
) -> ExtauthzProcess:
    config = write_settings(
        tmp_path / f"{name}.toml",
        {
            "server": {"node_id": name, "health_check_interval_seconds": 0.2},
            "store": _store_table(topo),
            # the idle deadline slides (a store write) at most once per second per session
            "session": {"idle_timeout_seconds": 10, "absolute_timeout_seconds": 3600},
            "jwt": {"keys_dir": str(keys_dir(tmp_path))},
        },
    )
    return ExtauthzProcess(config, tmp_path / "logs", name=name).start()


class Recorder:
    """Answers of a background loop, with their times (monotonic seconds)."""

    def __init__(self) -> None:
        self.answers: list[tuple[float, str]] = []
        self.stop = threading.Event()
        self.lock = threading.Lock()

    def add(self, answer: str, sent: float | None = None) -> None:
        """``answer`` at ``sent`` (when its request left; default: now)."""
        with self.lock:
            self.answers.append((time.monotonic() if sent is None else sent, answer))


def _check_loop(client: CheckClient, tokens: list[str], rec: Recorder, deadline: float) -> None:
    while not rec.stop.is_set() and time.monotonic() < deadline:
        for token in tokens:
            # timed by when it was sent: a Check sent before the recovery and answered 503
            # after it (its store budget ran out meanwhile) is not a 503 after the recovery
            sent = time.monotonic()
            rec.add(client.check(token), sent)


def _write_loop(
    admin: Any, created: list[str], revoked: list[str], rec: Recorder, deadline: float,
    metadata: list[tuple[str, str]],
) -> None:
    """Log in and out continuously (admin calls with ``metadata``, the admin token); remember
    which of them reported success."""
    pending: list[str] = []
    n = 0
    while not rec.stop.is_set() and time.monotonic() < deadline:
        n += 1
        try:
            reply = admin.CreateSession(
                admin_pb2.CreateSessionRequest(sub=f"w{n}"), metadata=metadata, timeout=2
            )
            pending.append(reply.session.sid)
            rec.add("create:ok")
        except grpc.RpcError as exc:
            rec.add(f"create:{exc.code().name}")
        if len(pending) >= 2:
            sid = pending.pop(0)
            try:
                request = admin_pb2.RevokeSessionRequest(sid=sid)
                if admin.RevokeSession(request, metadata=metadata, timeout=2).revoked:
                    revoked.append(sid)
                rec.add("revoke:ok")
            except grpc.RpcError as exc:
                pending.insert(0, sid)  # not known to be revoked: retried later
                rec.add(f"revoke:{exc.code().name}")
        time.sleep(0.01)
    created.extend(pending)


def test_kill9_primary_gives_503s_never_denials_and_recovers_without_restart(
    tmp_path: Path, topo: ReplicatedTopology
) -> None:
    node = _start_node(tmp_path, topo)
    client = CheckClient(node.grpc_target, timeout=2.0)
    channel = grpc.insecure_channel(node.grpc_target)
    admin = admin_pb2_grpc.SessionAdminStub(channel)
    try:
        tokens = [
            admin.CreateSession(
                admin_pb2.CreateSessionRequest(sub=f"u{i}"), metadata=node.admin_metadata,
                timeout=5,
            ).access_token
            for i in range(SESSIONS)
        ]
        assert all(client.check(t) == "allow" for t in tokens)
        meta = client.metadata(tokens[0])
        assert meta["store_strategy"] == "central" and meta["node_id"] == "central-1"

        checks, writes = Recorder(), Recorder()
        created: list[str] = []
        revoked: list[str] = []
        deadline = time.monotonic() + FAILOVER_BUDGET_S + 10
        threads = [
            threading.Thread(target=_check_loop, args=(client, tokens, checks, deadline)),
            threading.Thread(
                target=_write_loop,
                args=(admin, created, revoked, writes, deadline, node.admin_metadata),
            ),
        ]
        for t in threads:
            t.start()
        try:
            time.sleep(0.5)
            old = topo.primary()
            killed_at = time.monotonic()
            old.kill9()
            new = topo.wait_for_failover(old.port, timeout=FAILOVER_BUDGET_S)
            promoted_at = time.monotonic()
            # the same sessions are allowed again, with no restart of the node
            recovered_at = None
            while time.monotonic() < promoted_at + 10:
                if all(client.check(t) == "allow" for t in tokens):
                    recovered_at = time.monotonic()
                    break
                time.sleep(0.05)
            assert recovered_at is not None, "sessions not allowed again after the promotion"
            time.sleep(0.5)
        finally:
            checks.stop.set()
            writes.stop.set()
            for t in threads:
                t.join(timeout=15)
        assert node.running

        kinds = {answer for _, answer in checks.answers}
        assert kinds <= {"allow", "unavailable"}, kinds  # never a denial, never another error
        unavailable = [at for at, answer in checks.answers if answer == "unavailable"]
        assert unavailable, "the primary loss was not noticed at all"
        after = [answer for at, answer in checks.answers if at > recovered_at]
        assert after and set(after) == {"allow"}

        # every login and logout that reported success is on the new primary
        assert created and revoked
        with new.client() as r:
            missing = [sid for sid in created if not r.execute_command(*index_probe(KEYS, sid))]
            resurrected = [sid for sid in revoked if r.execute_command(*index_probe(KEYS, sid))]
        assert missing == [] and resurrected == []

        figures = {
            "gap_first_to_last_503_s": round(unavailable[-1] - unavailable[0], 3),
            "kill_to_first_503_s": round(unavailable[0] - killed_at, 3),
            "kill_to_promotion_s": round(promoted_at - killed_at, 3),
            "kill_to_all_allowed_s": round(recovered_at - killed_at, 3),
            "checks": len(checks.answers),
            "checks_503": len(unavailable),
            "logins_ok": sum(1 for _, a in writes.answers if a == "create:ok"),
            "writes_failed": sum(1 for _, a in writes.answers if not a.endswith(":ok")),
        }
        print("central kill -9 figures:", json.dumps(figures))
        assert figures["kill_to_all_allowed_s"] < FAILOVER_BUDGET_S
    finally:
        channel.close()
        client.close()
        node.stop()


async def test_sentinel_failover_surfaces_no_readonly_to_any_caller(
    tmp_path: Path, topo: ReplicatedTopology
) -> None:
    node = await asyncio.to_thread(_start_node, tmp_path, topo)
    client = CheckClient(node.grpc_target, timeout=2.0)
    settings = node_settings(tmp_path, "in-process", _store_table(topo))
    components = build_components(settings)  # as `serve` builds it (with the session cache)
    # touch on every lookup: reads and writes both run across the failover
    sessions = SessionManager(
        components.store, idle_timeout=600, absolute_timeout=3600, touch_interval=0
    )
    errors: list[BaseException] = []
    outcomes: dict[str, int] = {}
    stop = asyncio.Event()

    def note(what: str) -> None:
        outcomes[what] = outcomes.get(what, 0) + 1

    async def worker(n: int) -> None:
        tokens = [(await sessions.create(f"g{n}-{i}"))[0] for i in range(3)]
        i = 0
        while not stop.is_set():
            i += 1
            try:
                await sessions.lookup(tokens[i % 3])
                note("lookup:ok")
                token, _ = await sessions.create(f"g{n}-x{i}")
                await sessions.revoke_token(token)
                note("login+logout:ok")
            except StoreUnavailable as exc:
                errors.append(exc)
            except Unauthenticated as exc:  # would be a denial of a valid session
                errors.append(exc)
            await asyncio.sleep(0.005)

    remote: list[str] = []

    def remote_checks(tokens: list[str]) -> None:
        while not stop.is_set():
            remote.extend(client.check(t) for t in tokens)

    try:
        remote_tokens = [(await sessions.create(f"r{i}"))[0] for i in range(3)]
        workers = [asyncio.create_task(worker(n)) for n in range(4)]
        checker = asyncio.create_task(asyncio.to_thread(remote_checks, remote_tokens))
        await asyncio.sleep(0.5)
        old = topo.primary()
        await asyncio.to_thread(topo.sentinels[0].failover)
        new = await asyncio.to_thread(topo.wait_for_failover, old.port, FAILOVER_BUDGET_S)
        # the old primary keeps running and becomes a replica of the new one
        await asyncio.to_thread(topo.wait_replica_of, old, new, FAILOVER_BUDGET_S)
        await asyncio.sleep(1.0)
        stop.set()
        await asyncio.gather(*workers, checker)

        readonly = [
            e for e in errors if "READONLY" in repr(e) or "ReadOnly" in repr(e) or
            "previous master is now a slave" in str(e) or "ReadOnly" in repr(e.__cause__)
        ]  # fmt: skip
        assert readonly == []
        assert [e for e in errors if isinstance(e, Unauthenticated)] == []
        assert set(remote) <= {"allow", "unavailable"}, set(remote)
        print(
            "central SENTINEL FAILOVER figures:",
            json.dumps({
                **outcomes,
                "store_errors": len(errors),
                "store_error_kinds": sorted({str(e)[:70] for e in errors}),
                "remote_checks": len(remote),
                "remote_503": remote.count("unavailable"),
            }),
        )  # fmt: skip
        assert outcomes.get("login+logout:ok", 0) > 0
        # after the failover, writes go to the new primary
        token, session = await sessions.create("after")
        with new.client() as r:
            assert r.execute_command(*index_probe(KEYS, session.sid))
    finally:
        stop.set()
        await components.close()
        client.close()
        await asyncio.to_thread(node.stop)


def test_central_settings_build_a_sentinel_store_waiting_for_one_replica(
    tmp_path: Path, topo: ReplicatedTopology
) -> None:
    settings = node_settings(tmp_path, "n", _store_table(topo))
    assert settings.store.wait_replicas_resolved == 1
    assert "sentinel service=extauthz sentinels=3" in topology.describe(settings.store)
    async def probe() -> int:
        clients = RedisClients(topology.redis_endpoints(settings))
        try:
            return await RedisSessionStore(clients.primary).online_replicas()
        finally:
            await clients.aclose()

    assert asyncio.run(probe()) == 2
