"""The docker-compose topology run for real, without Docker: each node a host of its own (a
Linux network namespace with its own address, :mod:`tests.support.netns`), partitions made by
taking a host's link down. Packets across a cut link are dropped, not refused: clients and
replicas see silence and time out, as in a real partition (a TCP relay that is cut answers
with a reset at once).

- ``replicated``: a node partitioned from the primary (with its local replica) never allows a
  token whose revocation another node acknowledged, during the partition or after it heals.
- ``central`` with Sentinel: a partitioned Sentinel (a minority) does not fail over; a primary
  partitioned from the majority is failed over, and no acknowledged logout comes back, on the
  new primary or once the old one has rejoined as a replica.

Needs root and iproute2 (CI runs the tests as root); skipped otherwise on a developer's
machine. How it works and what it shows: docs/strategies.md, 'Partitions in network
namespaces'.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from extauthz.store.redis.keys import SessionKeys
from tests.support import envoy_binaries
from tests.support.extauthz_nodes import CheckClient
from tests.support.netns import VirtualNetwork, unavailable
from tests.support.netns_stack import (
    Admin,
    Central,
    live_read_leases,
    settle,
    start_central,
    start_extauthz,
    start_front_proxy,
    start_redis,
    wait_sentinels_agree,
)
from tests.support.redis_topology import RedisNode, SentinelNode, needs_redis_server, wait_until
from tests.support.session_index import index_probe

pytestmark = [pytest.mark.e2e, needs_redis_server]

STALENESS_BOUND = 2.0  # replica_max_staleness_seconds of the replicated nodes
KEYS = SessionKeys("extauthz:")  # the key prefix of the nodes' settings


@pytest.fixture
def network() -> Iterator[VirtualNetwork]:
    from tests.conftest import missing

    reason = unavailable()
    if reason is not None:
        missing(reason)
    with VirtualNetwork() as net:
        yield net


def _envoy() -> str:
    from tests.conftest import missing

    binaries = envoy_binaries()
    if not binaries:
        missing("no Envoy binary: set EXTAUTHZ_ENVOY_BINARIES or put envoy on PATH")
    return binaries[-1]  # the newest: one is enough to route through the front proxy


def _namespaces(net: VirtualNetwork) -> list[str]:
    listed = net.call("netns", "list").split("\n")
    return sorted(line.split()[0] for line in listed if line.startswith(net.prefix + "-"))


def test_the_virtual_network_partitions_heals_and_leaves_nothing_behind(
    network: VirtualNetwork, tmp_path: Path
) -> None:
    """Two hosts reach each other by address; a host whose link is down reaches no one but
    itself; healed, it does again. Closing (here after a failure) stops the processes and
    deletes every namespace the network made, and only those."""
    a, b = network.add_host("a"), network.add_host("b")
    redis = start_redis(b, tmp_path / "redis")
    assert a.reaches(b.address, redis.port) and redis.ping()
    network.disconnect(b)
    assert b.link_state() == "DOWN"
    assert not a.reaches(b.address, redis.port)
    assert b.reaches(b.address, redis.port) and redis.ping()  # its own host still answers
    network.reconnect(b)
    wait_until(lambda: a.reaches(b.address, redis.port), timeout=5, description="healed")

    other = VirtualNetwork()
    with pytest.raises(RuntimeError, match="a failing test"), other:
        other.add_host("c")
        assert _namespaces(other) == sorted([other.switch, f"{other.prefix}-c"])
        raise RuntimeError("a failing test")
    assert _namespaces(other) == []
    assert _namespaces(network) == sorted(h.namespace for h in (a, b)) + [network.switch]
    network.close()
    assert _namespaces(network) == [] and not redis.running


def test_replicated_a_node_cut_off_from_the_primary_never_allows_a_revoked_token(
    network: VirtualNetwork, tmp_path: Path
) -> None:
    """extauthz-2 and its local replica are partitioned from everything (their host's link
    goes down). extauthz-1 revokes the session until that is acknowledged (it fails while
    extauthz-2's read lease lives); from then on extauthz-2, asked from inside its host, never
    allows the token, nor does the front proxy, during the partition and after it heals."""
    primary_host = network.add_host("redis-primary")
    hosts = [network.add_host("extauthz-1"), network.add_host("extauthz-2")]
    front_host = network.add_host("envoy")
    primary = start_redis(primary_host, tmp_path / "primary")
    upstream = (primary_host.address, primary.port)
    replicas = [start_redis(h, tmp_path / f"replica-{h.name}", replicaof=upstream) for h in hosts]
    for replica in replicas:
        wait_until(replica.link_up, timeout=10, description=f"{replica!r} linked")
    settle(primary, 2)
    nodes = [
        start_extauthz(
            host,
            tmp_path,
            host.name,
            {
                "strategy": "replicated",
                "backend": "redis",
                "redis_url": f"redis://{primary_host.address}:{primary.port}/0",
                "replica_url": f"redis://127.0.0.1:{replica.port}/0",  # the host's own replica
                "replica_max_staleness_seconds": STALENESS_BOUND,
            },
        )  # fmt: skip
        for host, replica in zip(hosts, replicas, strict=True)
    ]
    front = start_front_proxy(front_host, _envoy(), tmp_path, list(zip(hosts, nodes, strict=True)))
    wait_until(lambda: live_read_leases(primary) == 2, timeout=10, description="two read leases")

    admin = Admin(nodes[0])
    on_node_2 = CheckClient(nodes[1].grpc_target)  # its portal: asked from inside its host
    try:
        token, sid = admin.create("victim")
        session_key = index_probe(KEYS, sid)
        assert on_node_2.check(token) == "allow"
        assert {front.get(token) for _ in range(6)} == {200}

        cut_at = time.monotonic()
        network.disconnect(hosts[1])
        assert hosts[1].link_state() == "DOWN"
        assert not hosts[1].reaches(primary_host.address, primary.port)
        assert not front_host.reaches(hosts[1].address, nodes[1].grpc_port)

        failed_revocations = 0
        acknowledged_at: float | None = None
        before: dict[str, int] = {}
        after: dict[str, int] = {}
        through_front: dict[int, int] = {}
        while time.monotonic() < cut_at + STALENESS_BOUND + 8:
            if acknowledged_at is None:
                try:
                    # a retry finds the record gone already (revoked=False): its success is
                    # the acknowledgement that no replica a node reads from still has it
                    admin.revoke(sid)
                    acknowledged_at = time.monotonic()
                except grpc.RpcError as exc:
                    assert exc.code() == grpc.StatusCode.UNAVAILABLE, exc
                    failed_revocations += 1
            answer = on_node_2.check(token)
            answers = before if acknowledged_at is None else after
            answers[answer] = answers.get(answer, 0) + 1
            if acknowledged_at is not None:
                status = front.get(token)
                through_front[status] = through_front.get(status, 0) + 1
                if time.monotonic() > acknowledged_at + 2:
                    break
            time.sleep(0.1)
        assert acknowledged_at is not None, f"revocation never acknowledged: {before}"
        # reads survive the partition: extauthz-2 answered from its replica until then
        assert before.get("allow", 0) >= 1, before
        # the point: once the revocation was acknowledged, the partitioned node never allows
        assert after and "allow" not in after, after
        assert 200 not in through_front, through_front
        # its replica still holds the session: the refusal is the node's fencing, not new data
        assert primary.command(*session_key) == 0
        assert replicas[1].command(*session_key) == 1
        assert hosts[1].link_state() == "DOWN"

        healed_at = time.monotonic()
        network.reconnect(hosts[1])
        healed: dict[str, int] = {}

        def caught_up() -> bool:
            answer = on_node_2.check(token)
            healed[answer] = healed.get(answer, 0) + 1
            return (
                replicas[1].command(*session_key) == 0
                and live_read_leases(primary) == 2
                and answer == "deny:revoked_session"
            )

        wait_until(caught_up, timeout=20, interval=0.1, description="extauthz-2 back")
        recovered_at = time.monotonic()
        assert "allow" not in healed, healed
        # the front proxy's connection to extauthz-2 may still resend what the partition lost
        # (503s meanwhile): never a 200, and 401 from both nodes in the end
        statuses: list[int] = []

        def answers_401() -> bool:
            statuses.append(front.get(token))
            return statuses[-6:] == [401] * 6

        wait_until(answers_401, timeout=15, description="the front proxy to answer 401")
        assert 200 not in statuses, statuses
        print(
            "netns replicated partition figures:",
            json.dumps({
                "bound_s": STALENESS_BOUND,
                "cut_to_ack_s": round(acknowledged_at - cut_at, 2),
                "failed_revocations": failed_revocations,
                "node_2_before_ack": before,
                "node_2_after_ack": after,
                "front_after_ack": through_front,
                "node_2_after_heal": healed,
                "heal_to_recovered_s": round(recovered_at - healed_at, 2),
            }),
        )  # fmt: skip
    finally:
        admin.close()
        on_node_2.close()


# --------------------------------------------------------------------------- central + Sentinel

DOWN_AFTER_MS = 1000  # Sentinel down-after-milliseconds
FAILOVER_BUDGET_S = 20.0


@pytest.fixture(scope="module")
def central(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Central]:
    from tests.conftest import missing

    reason = unavailable()
    if reason is not None:
        missing(reason)
    base = tmp_path_factory.mktemp("netns-central")
    with VirtualNetwork() as net:
        deployment = start_central(net, base, _envoy(), down_after_ms=DOWN_AFTER_MS)
        try:
            yield deployment
        finally:
            deployment.close_clients()


def _flags(sentinel: SentinelNode) -> set[str]:
    return set(str(sentinel.master_state().get("flags", "")).split(","))


def test_central_a_sentinel_partitioned_alone_does_not_fail_over(central: Central) -> None:
    """sentinel-3's host goes down: it cannot see the primary (it flags it subjectively
    down), but alone it never reaches the quorum, so no failover happens while the other two
    still see the primary, for five times ``down-after-milliseconds``; Checks go on."""
    c = central
    primary = c.data_nodes[0]
    address = (c.redis_hosts[0].address, primary.port)
    tokens = [c.admins[i % 2].create(f"minority-{i}")[0] for i in range(4)]
    isolated, alone = c.sentinel_hosts[2], c.sentinels[2]
    answers: dict[str, int] = {}
    c.network.disconnect(isolated)
    try:
        assert isolated.link_state() == "DOWN"
        assert not isolated.reaches(*address)
        wait_until(
            lambda: "s_down" in _flags(alone), timeout=DOWN_AFTER_MS / 1000 + 5,
            description="the partitioned Sentinel to flag the primary down",
        )  # fmt: skip
        until = time.monotonic() + 5 * DOWN_AFTER_MS / 1000
        while time.monotonic() < until:
            assert c.primary_named(c.sentinels[:2]) is primary
            assert "o_down" not in _flags(alone) and alone.master_address() == address
            for client in c.checks:
                for token in tokens:
                    answer = client.check(token)
                    answers[answer] = answers.get(answer, 0) + 1
            time.sleep(0.2)
    finally:
        c.network.reconnect(isolated)
    assert answers.keys() == {"allow"}, answers
    assert primary.role() == "master"
    assert [r.master_port() for r in c.data_nodes[1:]] == [primary.port] * 2
    wait_sentinels_agree(c.sentinels, primary, replicas=2)
    print("netns Sentinel minority figures:", json.dumps({"checks": answers}))


class Logouts(threading.Thread):
    """Revokes ``pending`` sessions one after another, alternating nodes, until stopped; a
    revocation that is not acknowledged is tried again. Records when each was acknowledged
    (the token) or refused (monotonic seconds)."""

    def __init__(self, admins: list[Admin], pending: list[tuple[str, str]]) -> None:
        super().__init__(name="logouts")
        self.admins = admins
        self.pending = list(pending)
        self.acknowledged: list[tuple[float, str]] = []
        self.refused: list[float] = []
        self.stop = threading.Event()

    def run(self) -> None:
        n = 0
        while self.pending and not self.stop.is_set():
            token, sid = self.pending[0]
            n += 1
            try:
                self.admins[n % 2].revoke(sid)
            except grpc.RpcError:
                self.refused.append(time.monotonic())
            else:
                self.acknowledged.append((time.monotonic(), token))
                self.pending.pop(0)
            time.sleep(0.05)

    def tokens(self) -> list[str]:
        return [token for _, token in self.acknowledged]


REPLICAS_CUT_S = 1.0


def test_central_a_primary_cut_off_from_the_majority_fails_over_and_no_logout_comes_back(
    central: Central,
) -> None:
    """Logouts run while the partition spreads: first the replicas' hosts lose the network
    (logouts now cannot be acknowledged: ``WAIT`` for one replica fails), then the primary's
    host loses it as the replicas' come back, so the replicas never receive what the primary
    took meanwhile. The Sentinels fail over; every logout that extauthz acknowledged is still
    revoked after the failover (the token is denied, through the nodes and the front proxy,
    and its record is absent on the new primary) and after the old primary has rejoined as a
    replica; the sessions never logged out are still allowed."""
    c = central
    old, old_host = c.data_nodes[0], c.redis_hosts[0]
    sessions = [c.admins[i % 2].create(f"majority-{i}") for i in range(40)]
    kept, to_revoke = sessions[:8], sessions[8:]
    logouts = Logouts(c.admins, to_revoke)
    logouts.start()
    try:
        wait_until(  # logouts are acknowledged up to the first cut
            lambda: len(logouts.acknowledged) >= 5, timeout=10, description="5 logouts"
        )
        replicas_cut_at = time.monotonic()
        c.network.disconnect(*c.redis_hosts[1:])
        time.sleep(REPLICAS_CUT_S)
        cut_at = time.monotonic()
        c.network.disconnect(old_host)
        c.network.reconnect(*c.redis_hosts[1:])
        assert old_host.link_state() == "DOWN"
        assert not c.redis_hosts[1].reaches(old_host.address, old.port)
        assert not c.node_hosts[0].reaches(old_host.address, old.port)

        def promoted() -> RedisNode | None:
            node = c.primary_named(c.sentinels)
            if node is None or node is old or node.role() != "master":
                return None
            return node

        new = wait_until(
            promoted, timeout=FAILOVER_BUDGET_S, interval=0.1,
            description="the Sentinels to fail over", diagnostics=lambda: c.sentinels[0].tail(20),
        )  # fmt: skip
        promoted_at = time.monotonic()
        assert old.role() == "master"  # the old primary, alone, still thinks it is one

        def recovered() -> bool:
            return all(cl.check(t) == "allow" for cl in c.checks for t, _ in kept)

        wait_until(recovered, timeout=15, description="kept sessions allowed again")
        recovered_at = time.monotonic()
        time.sleep(0.5)  # a few logouts acknowledged by the new primary too
    finally:
        logouts.stop.set()
        logouts.join(timeout=15)
    assert not logouts.is_alive()
    revoked = logouts.tokens()
    before = sum(1 for at, _ in logouts.acknowledged if at < replicas_cut_at)
    while_cut = [at for at in logouts.refused if replicas_cut_at + 0.3 < at < cut_at]
    after = sum(1 for at, _ in logouts.acknowledged if at > promoted_at)
    # acknowledged before the cut and after the failover; refused while no replica could ack
    assert before >= 5 and after >= 1 and while_cut, (before, after, logouts.refused)

    def still_revoked(where: str) -> None:
        # each logout that came back: when it was acknowledged (seconds after the first cut)
        back = [
            (round(at - replicas_cut_at, 2), node, answer)
            for at, token in logouts.acknowledged
            for node, cl in enumerate(c.checks, start=1)
            if (answer := cl.check(token)) not in {"deny:revoked_session", "deny:unknown_session"}
        ]
        assert not back, (where, back, f"primary cut at {cut_at - replicas_cut_at:.2f}s")
        assert {c.front.get(t) for t in revoked[:: max(1, len(revoked) // 8)]} == {401}, where
        assert {cl.check(t) for cl in c.checks for t, _ in kept} == {"allow"}, where

    still_revoked("after the failover")
    revoked_sids = [sid for token, sid in sessions if token in revoked]
    assert sum(new.command(*index_probe(KEYS, sid)) for sid in revoked_sids) == 0

    healed_at = time.monotonic()
    c.network.reconnect(old_host)

    def rejoined() -> bool:
        info = old.replication_info()
        return (
            info.get("role") == "slave" and int(info.get("master_port", -1)) == new.port
            and info.get("master_link_status") == "up"
        )  # fmt: skip

    wait_until(rejoined, timeout=30, description="the old primary to rejoin as a replica")
    rejoined_at = time.monotonic()
    settle(new, 2)
    assert sum(old.command(*index_probe(KEYS, sid)) for sid in revoked_sids) == 0
    assert all(old.command(*index_probe(KEYS, sid)) for _, sid in kept)
    still_revoked("after the old primary rejoined")
    print(
        "netns Sentinel failover figures:",
        json.dumps({
            "down_after_ms": DOWN_AFTER_MS,
            "cut_to_promotion_s": round(promoted_at - cut_at, 2),
            "cut_to_recovered_s": round(recovered_at - cut_at, 2),
            "heal_to_rejoined_s": round(rejoined_at - healed_at, 2),
            "logouts_acknowledged": {"before_the_cuts": before, "after_the_failover": after,
                                     "all": len(revoked)},
            "logouts_refused": len(logouts.refused),
        }),
    )  # fmt: skip
