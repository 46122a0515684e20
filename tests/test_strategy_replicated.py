"""The ``replicated`` strategy: three nodes, each reading from its own replica of one primary.

Nodes are built in-process exactly as ``extauthz serve`` builds them (``build_components``
from a settings file), once with the in-process session cache and once without it; a Check
is the full pipeline (``CheckRequest`` -> Envoy adapter -> Authorizer).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from extauthz import tokens
from extauthz.app import Components, build_components
from extauthz.decisions import Allow
from extauthz.envoy_adapter import to_request_context
from extauthz.errors import SettingsError, StoreUnavailable
from extauthz.sessions.replicated import ReplicatedSessionStore
from extauthz.settings import load_settings
from tests.support.extauthz_nodes import check_request, node_settings, settle
from tests.support.redis_topology import ReplicatedTopology, redis_server_available

pytestmark = pytest.mark.skipif(
    not redis_server_available(), reason="redis-server binary not installed"
)

TRIALS = 1000


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
                tmp_path, f"node-{i}", _store(topo, i), cache={"enabled": cache}
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
        decision = await node.authorizer.authorize(to_request_context(check_request(token)))
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
    assert logout_answers == {"deny:unknown_session": 2 * TRIALS}
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
            assert not r.exists(f"extauthz:session:{tokens.token_hash(token)}")
            assert not r.exists(f"extauthz:sid:{session.sid}")


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
            json.dumps({"bound_s": bound, "kill_to_distrust_s": round(distrusted_at - killed_at, 2)}),
        )
        # INFO reports whole seconds: distrust comes within a second and a check interval
        assert distrusted_at - killed_at < bound + 1.5
    finally:
        await node.close()


def test_replicated_without_a_local_replica_does_not_start() -> None:
    with pytest.raises(SettingsError) as refused:
        load_settings(
            None,
            {"EXTAUTHZ_STORE_STRATEGY": "replicated", "EXTAUTHZ_STORE_BACKEND": "redis"},
        )
    assert str(refused.value) == (
        "store.replica_url: the replicated strategy needs the node's local replica"
    )
