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
machine. How it works and what it shows: docs/operations.md, 'Topology tests'.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from tests.support import envoy_binaries
from tests.support.extauthz_nodes import CheckClient
from tests.support.netns import VirtualNetwork, unavailable
from tests.support.netns_stack import (
    Admin,
    live_read_leases,
    settle,
    start_extauthz,
    start_front_proxy,
    start_redis,
)
from tests.support.redis_topology import needs_redis_server, wait_until

pytestmark = [pytest.mark.e2e, needs_redis_server]

STALENESS_BOUND = 2.0  # replica_max_staleness_seconds of the replicated nodes


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
        session_key = f"extauthz:sid:{sid}"
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
        # the point: once the revocation was acknowledged, the partitioned node never allows
        assert after and "allow" not in after, after
        assert 200 not in through_front, through_front
        # its replica still holds the session: the refusal is the node's fencing, not new data
        assert primary.command("EXISTS", session_key) == 0
        assert replicas[1].command("EXISTS", session_key) == 1
        assert hosts[1].link_state() == "DOWN"

        healed_at = time.monotonic()
        network.reconnect(hosts[1])
        healed: dict[str, int] = {}

        def caught_up() -> bool:
            answer = on_node_2.check(token)
            healed[answer] = healed.get(answer, 0) + 1
            return (
                replicas[1].command("EXISTS", session_key) == 0
                and live_read_leases(primary) == 2
                and answer == "deny:revoked_session"
            )

        wait_until(caught_up, timeout=20, interval=0.1, description="extauthz-2 back")
        recovered_at = time.monotonic()
        assert "allow" not in healed, healed
        assert {front.get(token) for _ in range(6)} == {401}
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
