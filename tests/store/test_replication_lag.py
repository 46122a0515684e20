"""How far a replica's data trails its primary (extauthz.store.redis.replication): the lower
bound the read lease of the ``replicated`` strategy is given up on. Real replicas slowed by a
proxy: tests/e2e/test_strategy_replicated.py."""

from __future__ import annotations

from typing import Any

import pytest

from extauthz.store.redis.replication import (
    MAX_SAMPLES,
    UNREACHABLE,
    ReplicaState,
    ReplicationLag,
)


def _replica(offset: int, replid: str = "r1", **info: Any) -> ReplicaState:
    return ReplicaState.from_info(
        {
            "role": "slave",
            "master_link_status": "up",
            "master_last_io_seconds_ago": 0,
            "master_replid": replid,
            "slave_repl_offset": offset,
            **info,
        }
    )


def _primary(offset: int, replid: str = "r1") -> dict[str, Any]:
    return {"role": "master", "master_replid": replid, "master_repl_offset": offset}


def test_the_replica_state_comes_from_info_replication() -> None:
    assert _replica(120) == ReplicaState(0.0, True, "r1", 120)
    down = _replica(120, master_link_status="down", master_link_down_since_seconds=3)
    assert down == ReplicaState(3.0, False, "r1", 120)
    # not a usable replica: no position either
    assert ReplicaState.from_info(_primary(500)) == ReplicaState(None, False, "", -1)
    assert _replica(120, master_sync_in_progress=1).offset == -1


def test_a_replica_that_keeps_up_is_never_behind() -> None:
    lag = ReplicationLag()
    for round_ in range(20):
        at = round_ * 0.25
        # the replica has applied what the primary had one round earlier, and more
        assert lag.behind(_replica(100 * round_ + 50), at) == 0.0
        lag.primary(_primary(100 * (round_ + 1)), at + 0.001)


def test_behind_is_the_age_of_the_oldest_sample_the_replica_has_not_reached() -> None:
    lag = ReplicationLag()
    lag.primary(_primary(100), 1.0)
    lag.primary(_primary(200), 1.25)
    lag.primary(_primary(200), 1.5)  # no new data: the older sample stands
    lag.primary(_primary(300), 1.75)
    assert lag.behind(_replica(99), 2.0) == 1.0
    assert lag.behind(_replica(100), 2.0) == 0.75  # reached 100, missing what 200 had
    assert lag.behind(_replica(250), 2.1) == pytest.approx(0.35)
    assert lag.behind(_replica(300), 2.2) == 0.0
    # a replica that went back (a full sync started over) is behind the samples kept
    lag.primary(_primary(400), 2.5)
    assert lag.behind(_replica(10), 3.0) == 0.5


def test_a_replica_of_another_history_reaches_nothing() -> None:
    lag = ReplicationLag()
    lag.primary(_primary(100, replid="new"), 1.0)
    assert lag.behind(_replica(10_000, replid="old"), 1.5) == 0.5
    assert lag.behind(UNREACHABLE, 2.0) == 1.0
    # the primary's history changed (a failover): samples of the old one are void
    lag.primary(_primary(50, replid="newer"), 2.0)
    assert lag.behind(_replica(50, replid="newer"), 2.5) == 0.0


def test_the_samples_are_bounded() -> None:
    lag = ReplicationLag()
    for i in range(10 * MAX_SAMPLES):
        lag.primary(_primary(i + 1), i * 0.25)
    now = 10 * MAX_SAMPLES * 0.25
    # the oldest kept sample is MAX_SAMPLES rounds old: still far beyond any bound
    assert lag.behind(_replica(0), now) == MAX_SAMPLES * 0.25
