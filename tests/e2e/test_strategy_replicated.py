"""The ``replicated`` strategy: three nodes, each reading from its own replica of one primary.

Nodes are built in-process exactly as ``extauthz serve`` builds them (``build_components``
from a settings file), once with the in-process session cache and once without it; a Check
is the full pipeline (``CheckRequest`` -> Envoy adapter -> Authorizer).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from extauthz import tokens
from extauthz.check.decisions import Allow
from extauthz.check.envoy_adapter import to_request_context
from extauthz.errors import SettingsError, StoreUnavailable
from extauthz.server.app import Components, build_components
from extauthz.settings import load_settings
from extauthz.store.redis.keys import SessionKeys
from extauthz.store.redis.lease import LEASE_SLACK_SECONDS
from extauthz.store.redis.replicated import ReplicatedSessionStore
from tests.fixtures.core import bearer_request
from tests.support.extauthz_nodes import node_settings, settle
from tests.support.redis_topology import (
    RedisNode,
    ReplicatedTopology,
    needs_redis_server,
    wait_until,
)
from tests.support.session_index import index_probe
from tests.support.tcp_proxy import TcpProxy

pytestmark = [pytest.mark.e2e, needs_redis_server]

TRIALS = 1000
KEYS = SessionKeys("extauthz:")  # the key prefix of the nodes' settings


@pytest.fixture
def topo(tmp_path: Path) -> Iterator[ReplicatedTopology]:
    with ReplicatedTopology(tmp_path / "redis", replicas=3) as t:
        settle(t)
        yield t


def _store(topo: ReplicatedTopology, i: int, **extra: Any) -> dict[str, Any]:
    return {
        "strategy": "replicated",
        "backend": "redis",
        "redis_url": topo.primary().url,
        "replica_url": topo.replicas[i].url,
        **extra,
    }


@pytest.fixture
async def nodes(
    request: pytest.FixtureRequest, tmp_path: Path, topo: ReplicatedTopology
) -> AsyncIterator[list[Components]]:
    cache = getattr(request, "param", True)
    built = [
        build_components(
            node_settings(
                tmp_path, f"node-{i}", _store(topo, i), cache={"enabled": cache},
                # the upstream cluster "shop" may write data.cart (session updates)
                session_updates={"allowed_keys": ["shop=cart"]},
            )
        )
        for i in range(3)
    ]
    yield built
    for c in built:
        await c.close()


async def check(node: Components, token: str) -> str:
    """One Check through the pipeline: allow, deny:<reason> or unavailable (Envoy 503)."""
    try:
        decision = await node.authorizer.authorize(to_request_context(bearer_request(token)))
    except StoreUnavailable:
        return "unavailable"
    if isinstance(decision, Allow):
        return "allow"
    return f"deny:{decision.metadata.get('reason')}"


@pytest.mark.parametrize("nodes", [True, False], ids=["cache", "no-cache"], indirect=True)
async def test_logout_on_one_node_is_denied_on_the_other_two_at_once(
    nodes: list[Components], topo: ReplicatedTopology
) -> None:
    started = time.monotonic()
    login_answers: dict[str, int] = {}
    logout_answers: dict[str, int] = {}
    for trial in range(TRIALS):
        a, b, c = (nodes[(trial + k) % 3] for k in range(3))
        token, _ = await a.sessions.create(f"user-{trial}")
        for answer in await asyncio.gather(check(b, token), check(c, token)):
            login_answers[answer] = login_answers.get(answer, 0) + 1
        assert await a.sessions.revoke_token(token) is not None
        for answer in await asyncio.gather(check(b, token), check(c, token)):
            logout_answers[answer] = logout_answers.get(answer, 0) + 1
    elapsed = time.monotonic() - started
    assert login_answers == {"allow": 2 * TRIALS}
    assert logout_answers == {"deny:revoked_session": 2 * TRIALS}
    stores = [n.store for n in nodes if isinstance(n.store, ReplicatedSessionStore)]
    figures = {
        "trials": TRIALS,
        "seconds": round(elapsed, 2),
        "ms_per_trial": round(elapsed / TRIALS * 1000, 2),
        "replica_hits": sum(s.replica_hits for s in stores),
        "primary_reads": sum(s.primary_reads for s in stores),
    }
    print("replicated logout/login figures:", json.dumps(figures))
    if stores:  # without the cache: the positive answers came from the local replicas
        assert figures["replica_hits"] >= TRIALS


@pytest.mark.parametrize("nodes", [False], ids=["no-cache"], indirect=True)
async def test_logout_waits_for_every_replica(
    nodes: list[Components], topo: ReplicatedTopology
) -> None:
    store = nodes[0].store
    assert isinstance(store, ReplicatedSessionStore)
    assert await store._primary.online_replicas() == 3
    token, session = await nodes[0].sessions.create("alice")
    await nodes[0].sessions.revoke_token(token)
    for replica in topo.replicas:  # no replica can still answer for the revoked token
        with replica.client() as r:
            assert not r.exists(KEYS.record(tokens.token_hash(token)))
            assert not r.execute_command(*index_probe(KEYS, session.sid))


async def test_a_replica_cut_off_from_the_primary_is_trusted_only_within_the_bound(
    tmp_path: Path, topo: ReplicatedTopology
) -> None:
    bound = 1.0
    node = build_components(
        node_settings(
            tmp_path,
            "node-b",
            _store(topo, 1, replica_max_staleness_seconds=bound),
            cache={"enabled": False},
        )
    )
    try:
        store = node.store
        assert isinstance(store, ReplicatedSessionStore)
        await store.start()
        deadline = time.monotonic() + 5
        while not store.lease.held():  # the replica answers only under a read lease
            assert time.monotonic() < deadline, "read lease not taken"
            await asyncio.sleep(0.05)
        token, _ = await node.sessions.create("bob")
        unknown = tokens.mint_token()
        assert await check(node, token) == "allow"
        killed_at = time.monotonic()
        topo.primary().kill9()
        # within the bound: the replica still answers positively, reads survive the partition
        assert await check(node, token) == "allow"
        # a miss cannot be confirmed by the primary: a 503, never a denial
        assert await check(node, unknown) == "unavailable"
        answers: list[str] = []
        distrusted_at = None
        while time.monotonic() < killed_at + 10:
            answers.append(await check(node, token))
            if answers[-1] == "unavailable":
                distrusted_at = time.monotonic()
                break
            await asyncio.sleep(0.05)
        assert distrusted_at is not None, answers
        assert set(answers) <= {"allow", "unavailable"}
        print(
            "replicated staleness figures:",
            json.dumps(
                {"bound_s": bound, "kill_to_distrust_s": round(distrusted_at - killed_at, 2)}
            ),
        )
        # INFO reports whole seconds: distrust comes within a second and a check interval
        assert distrusted_at - killed_at < bound + 1.5
    finally:
        await node.close()


PARTITION_BOUND = 2.0


@contextlib.contextmanager
def _with_proxied_replica(
    base: Path, *, replicas: int
) -> Iterator[tuple[ReplicatedTopology, TcpProxy, RedisNode]]:
    """A primary with ``replicas`` replicas linked directly, plus X1, linked to the primary
    through a :class:`TcpProxy` (the link the test cuts or slows) and last in
    ``topo.replicas``; every replica has acknowledged a write."""
    with contextlib.ExitStack() as stack:
        topo = stack.enter_context(ReplicatedTopology(base / "redis", replicas=replicas))
        link = stack.enter_context(TcpProxy(topo.primary().address))
        x1 = RedisNode(base / "redis" / "x1", replicaof=link.address)
        stack.callback(x1.kill9)
        x1.start()
        topo.replicas.append(x1)
        wait_until(x1.link_up, timeout=10, description="x1 linked through the proxy")
        settle(topo)
        yield topo, link, x1


async def _leases_held(nodes: list[Components]) -> list[ReplicatedSessionStore]:
    """Start the nodes' replicated stores and wait (5 s at most) until each holds its read
    lease."""
    stores: list[ReplicatedSessionStore] = []
    for node in nodes:
        assert isinstance(node.store, ReplicatedSessionStore)
        stores.append(node.store)
        await node.store.start()
    deadline = time.monotonic() + 5
    while not all(s.lease.held() for s in stores):
        assert time.monotonic() < deadline, "read leases not taken"
        await asyncio.sleep(0.05)
    return stores


@pytest.mark.parametrize("cut_off", ["replica-link", "replica-link-and-primary"])
async def test_logout_with_a_partitioned_replica_never_reports_success_while_it_still_allows(
    tmp_path: Path, cut_off: str
) -> None:
    """node-b reads from replica X1, whose link to the primary runs through a cuttable proxy
    (and, for ``replica-link-and-primary``, so does node-b's own link to the primary). After
    the cut, node-a's logout either fails (503) or, once it reports success, node-b never
    allows the token again. The old code reported success at once while node-b kept
    allowing from X1 for the whole staleness bound (the primary's ``WAIT "all"`` no longer
    counted X1)."""
    with contextlib.ExitStack() as stack:
        topo, replica_link, x1 = stack.enter_context(_with_proxied_replica(tmp_path, replicas=1))
        b_primary_link = stack.enter_context(TcpProxy(topo.primary().address))
        store_a = _store(topo, 0, replica_max_staleness_seconds=PARTITION_BOUND)
        store_b = {
            **_store(topo, 1, replica_max_staleness_seconds=PARTITION_BOUND),
            "redis_url": b_primary_link.url,
        }
        a, b = (
            build_components(node_settings(tmp_path, node, store, cache={"enabled": False}))
            for node, store in (("node-a", store_a), ("node-b", store_b))
        )
        try:
            stores = await _leases_held([a, b])
            token, _ = await a.sessions.create("victim")
            store_b_ = stores[1]
            deadline = time.monotonic() + 5
            while True:  # until node-b answers from X1
                hits = store_b_.replica_hits
                assert await check(b, token) == "allow"
                if store_b_.replica_hits > hits:
                    break
                assert time.monotonic() < deadline, "node-b never answered from X1"
                await asyncio.sleep(0.05)

            cut_at = time.monotonic()
            replica_link.cut()
            if cut_off == "replica-link-and-primary":
                b_primary_link.cut()
            failed_logouts = 0
            allowed_on_b_before_success = 0
            succeeded_at: float | None = None
            after_success: list[str] = []
            limit = cut_at + PARTITION_BOUND + LEASE_SLACK_SECONDS + 4
            while time.monotonic() < limit:
                if succeeded_at is None:
                    try:
                        await a.sessions.revoke_token(token)
                    except StoreUnavailable:
                        failed_logouts += 1
                    else:
                        succeeded_at = time.monotonic()
                answer = await check(b, token)
                if succeeded_at is None:
                    allowed_on_b_before_success += answer == "allow"
                else:
                    after_success.append(answer)
                    if time.monotonic() > succeeded_at + 1.0:
                        break
                await asyncio.sleep(0.05)
            assert succeeded_at is not None, "logout never succeeded"
            # the point: once logout reported success, node-b never allowed the token again
            assert "allow" not in after_success, after_success
            assert set(after_success) <= {"deny:revoked_session", "unavailable"}
            print(
                "replicated partition figures:",
                json.dumps(
                    {
                        "cut_off": cut_off,
                        "bound_s": PARTITION_BOUND,
                        "cut_to_logout_success_s": round(succeeded_at - cut_at, 2),
                        "failed_logouts": failed_logouts,
                        "allowed_on_b_before_success": allowed_on_b_before_success,
                        "after_success": sorted(set(after_success)),
                    }
                ),
            )
            if cut_off == "replica-link":
                # node-b still reaches the primary: it gives up X1's lease and reads there
                assert succeeded_at - cut_at < 1.5
            else:
                # node-b answers from X1 within the bound: logouts fail meanwhile
                assert allowed_on_b_before_success > 0 and failed_logouts > 0
                assert succeeded_at - cut_at < PARTITION_BOUND + LEASE_SLACK_SECONDS + 1

            # the link comes back: X1 catches up, node-b takes its lease again, and the
            # revoked token stays denied
            replica_link.restore()
            b_primary_link.restore()
            wait_until(x1.link_up, timeout=10, description="x1 linked again")
            deadline = time.monotonic() + 8
            while not store_b_.lease.held():
                assert time.monotonic() < deadline, "node-b did not take its lease again"
                await asyncio.sleep(0.05)
            assert await check(b, token) == "deny:revoked_session"
        finally:
            for n in (a, b):
                await n.close()


LAG_SECONDS = 0.5
LAG_PHASE_SECONDS = 5.0


async def test_a_lagging_replica_is_fenced_and_logins_and_logouts_go_on(tmp_path: Path) -> None:
    """node-b reads from X1, whose link from the primary runs through a proxy that holds every
    chunk ``LAG_SECONDS`` each way: the link stays up, X1 trails the primary. The old code
    failed every login and logout of the deployment meanwhile (``WAIT "all"`` and the replica
    barrier waited for X1). Now node-b gives up its lease and reads from the primary, the
    writes stop waiting for X1, node-b never allows a token whose logout succeeded, and it
    takes its lease back once X1 has caught up."""
    async with contextlib.AsyncExitStack() as stack:
        topo, link, x1 = stack.enter_context(_with_proxied_replica(tmp_path, replicas=2))
        a, c, b = (  # node-b reads from X1, the last replica
            build_components(
                node_settings(tmp_path, f"node-{name}", _store(topo, i), cache={"enabled": False})
            )
            for i, name in enumerate("acb")
        )
        stack.push_async_callback(a.close)
        stack.push_async_callback(b.close)
        stack.push_async_callback(c.close)
        *_, store_b = await _leases_held([a, c, b])

        lag_at = time.monotonic()
        link.set_latency(LAG_SECONDS)
        writes: dict[str, dict[str, int]] = {"login": {}, "logout": {}}
        answers_on_b: dict[str, int] = {}
        released_at: float | None = None
        acquired = 0  # leases node-b had taken when it gave X1's up
        trial = 0
        while time.monotonic() < lag_at + LAG_PHASE_SECONDS:
            node = (a, b, c)[trial % 3]
            trial += 1
            if released_at is None and not store_b.lease.held():
                released_at = time.monotonic()
                acquired = store_b.lease.stats["acquired"]
            try:
                token, _ = await node.sessions.create(f"user-{trial}")
            except StoreUnavailable:
                writes["login"]["failed"] = writes["login"].get("failed", 0) + 1
                continue
            writes["login"]["ok"] = writes["login"].get("ok", 0) + 1
            try:
                await node.sessions.revoke_token(token)
            except StoreUnavailable:
                writes["logout"]["failed"] = writes["logout"].get("failed", 0) + 1
                continue
            writes["logout"]["ok"] = writes["logout"].get("ok", 0) + 1
            answer = await check(b, token)  # the point: never allowed after the logout
            answers_on_b[answer] = answers_on_b.get(answer, 0) + 1
            await asyncio.sleep(0.02)
        assert await asyncio.to_thread(x1.link_up), "the lagging link no longer reports up"
        retaken_during_lag = store_b.lease.stats["acquired"] - acquired

        link.heal()
        healed_at = time.monotonic()
        while not store_b.lease.held():
            assert time.monotonic() < healed_at + 8, "node-b did not take its lease back"
            await asyncio.sleep(0.05)
        retaken_at = time.monotonic()
        token, _ = await a.sessions.create("after-the-lag")
        hits = store_b.replica_hits
        assert await check(b, token) == "allow"
        assert store_b.replica_hits == hits + 1, "node-b does not read from X1 again"

        print(
            "replicated lag figures:",
            json.dumps(
                {
                    "lag_s": LAG_SECONDS,
                    "lag_to_lease_released_s": (
                        None if released_at is None else round(released_at - lag_at, 2)
                    ),
                    "writes": writes,
                    "checks_on_b_after_logout": answers_on_b,
                    "lease_retaken_during_lag": retaken_during_lag,
                    "heal_to_lease_retaken_s": round(retaken_at - healed_at, 2),
                }
            ),
        )
        assert answers_on_b and set(answers_on_b) <= {
            "deny:unknown_session", "deny:revoked_session", "unavailable"
        }
        for what, counts in writes.items():
            ok, failed = counts.get("ok", 0), counts.get("failed", 0)
            assert ok >= 0.9 * (ok + failed), f"{what}: {counts}"
        assert released_at is not None, "node-b kept its lease while X1 lagged"
        assert retaken_during_lag == 0, "node-b took its lease back while X1 still lagged"


def test_replicated_without_a_local_replica_does_not_start() -> None:
    with pytest.raises(SettingsError) as refused:
        load_settings(
            None,
            {"EXTAUTHZ_STORE_STRATEGY": "replicated", "EXTAUTHZ_STORE_BACKEND": "redis"},
        )
    assert str(refused.value) == (
        "store.replica_url: the replicated strategy needs the node's local replica"
    )


async def jwt_data(node: Components, token: str) -> Any:
    """The ``data`` claim of the JWT a Check on ``node`` mints for ``token``."""
    import jwt

    decision = await node.authorizer.authorize(to_request_context(bearer_request(token)))
    assert isinstance(decision, Allow), decision
    (value,) = [v for k, v in decision.headers_to_set if k == "authorization"]
    return jwt.decode(value.removeprefix("Bearer "), options={"verify_signature": False})["data"]


@pytest.mark.parametrize("nodes", [True, False], ids=["cache", "no-cache"], indirect=True)
async def test_a_session_update_on_one_node_is_in_the_next_jwt_of_the_other_two(
    nodes: list[Components], topo: ReplicatedTopology
) -> None:
    """An upstream's update through one node's processor (docs/session-updates.md) returns
    only once the other nodes' replicas (and caches) have it: their next JWTs carry it."""
    from extauthz.response.processor import ResponseContext

    for trial in range(20):
        a, b, c = (nodes[(trial + k) % 3] for k in range(3))
        token, session = await a.sessions.create(f"user-{trial}", data={"n": 0})
        assert [await jwt_data(b, token), await jwt_data(c, token)] == [{"n": 0}] * 2  # warm
        assert a.updater is not None
        update = json.dumps({"cart": trial})  # the nodes' allowlist: shop=cart
        await a.updater.process(ResponseContext("shop", session.sid, "allow", (update,)))
        got = list(await asyncio.gather(jwt_data(b, token), jwt_data(c, token)))
        assert got == [{"n": 0, "cart": trial}] * 2, trial
