"""Does the topology fit the strategy (settings), and what the topology module derives from it."""

from __future__ import annotations

from pathlib import Path

import pytest

from extauthz.errors import SettingsError
from extauthz.server import store_wiring as topology
from extauthz.settings import load_settings
from extauthz.store.redis.replication import replica_staleness

REDIS = {"EXTAUTHZ_STORE_BACKEND": "redis", "EXTAUTHZ_STORE_REDIS_URL": "redis://127.0.0.1:1/0"}
SENTINELS = "127.0.0.1:26001,127.0.0.1:26002,127.0.0.1:26003"
CLUSTER = "127.0.0.1:7001,127.0.0.1:7002"


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"EXTAUTHZ_STORE_STRATEGY": "replicated"},
         "store.replica_url: the replicated strategy needs the node's local replica"),
        ({"EXTAUTHZ_STORE_STRATEGY": "central", "EXTAUTHZ_STORE_REPLICA_URL": "redis://r:1/0"},
         "store.replica_url: only the replicated strategy reads from a node-local replica"),
        ({"EXTAUTHZ_STORE_STRATEGY": "sticky", "EXTAUTHZ_STORE_SENTINELS": SENTINELS},
         "store.sentinels: the sticky strategy keeps a node-local store"),
        ({"EXTAUTHZ_STORE_STRATEGY": "central", "EXTAUTHZ_STORE_SENTINELS": "nohost"},
         "store.sentinels: expected HOST:PORT"),
        ({"EXTAUTHZ_STORE_STRATEGY": "replicated", "EXTAUTHZ_STORE_REPLICA_URL": "redis://r:1/0",
          "EXTAUTHZ_STORE_WAIT_REPLICAS": "0"},
         "store.wait_replicas: the replicated strategy must wait"),
        ({"EXTAUTHZ_STORE_STRATEGY": "central", "EXTAUTHZ_STORE_WAIT_REPLICAS": "some"},
         'store.wait_replicas: expected "auto", "all" or a count'),
        ({"EXTAUTHZ_STORE_STRATEGY": "central", "EXTAUTHZ_STORE_SENTINELS": SENTINELS,
          "EXTAUTHZ_STORE_CLUSTER_NODES": CLUSTER},
         "store.cluster_nodes: a Redis Cluster fails over by itself; set either"),
        ({"EXTAUTHZ_STORE_STRATEGY": "replicated", "EXTAUTHZ_STORE_REPLICA_URL": "redis://r:1/0",
          "EXTAUTHZ_STORE_CLUSTER_NODES": CLUSTER},
         "store.cluster_nodes: only the central strategy on the redis backend runs on a Redis "
         "Cluster, not 'replicated'"),
        ({"EXTAUTHZ_STORE_STRATEGY": "sticky", "EXTAUTHZ_STORE_CLUSTER_NODES": CLUSTER},
         "store.cluster_nodes: only the central strategy on the redis backend"),
        ({"EXTAUTHZ_STORE_STRATEGY": "central", "EXTAUTHZ_STORE_CLUSTER_NODES": "nohost"},
         "store.cluster_nodes: expected HOST:PORT"),
        ({"EXTAUTHZ_STORE_STRATEGY": "central", "EXTAUTHZ_STORE_CLUSTER_NODES": CLUSTER,
          "EXTAUTHZ_STORE_REDIS_URL": "redis://h:1/3"},
         "store.redis_url: a Redis Cluster has only database 0"),
        ({"EXTAUTHZ_STORE_STRATEGY": "central", "EXTAUTHZ_STORE_SENTINELS": SENTINELS,
          "EXTAUTHZ_STORE_WAIT_TIMEOUT_MS": "500"},
         "store.wait_timeout_ms: expected 1 ms up to below store.timeout_seconds (500 ms)"),
    ],
)  # fmt: skip
def test_a_topology_that_does_not_fit_the_strategy_stops_start_up_with_one_line(
    environ: dict[str, str], message: str
) -> None:
    with pytest.raises(SettingsError) as refused:
        load_settings(None, {**REDIS, **environ})
    assert str(refused.value).startswith(message)
    assert "\n" not in str(refused.value)


def test_central_with_memory_backend_is_refused() -> None:
    with pytest.raises(SettingsError, match="^store.backend: the in-memory store is node-local"):
        load_settings(None, {"EXTAUTHZ_STORE_STRATEGY": "central"})


@pytest.mark.parametrize(
    ("environ", "wait"),
    [
        ({"EXTAUTHZ_STORE_STRATEGY": "central"}, 0),
        ({"EXTAUTHZ_STORE_STRATEGY": "central", "EXTAUTHZ_STORE_SENTINELS": SENTINELS}, 1),
        ({"EXTAUTHZ_STORE_STRATEGY": "central", "EXTAUTHZ_STORE_SENTINELS": SENTINELS,
          "EXTAUTHZ_STORE_WAIT_REPLICAS": "2"}, 2),
        ({"EXTAUTHZ_STORE_STRATEGY": "replicated", "EXTAUTHZ_STORE_REPLICA_URL": "redis://r:1/0"},
         "all"),
        ({"EXTAUTHZ_STORE_STRATEGY": "sticky"}, 0),
    ],
)  # fmt: skip
def test_wait_replicas_auto_resolves_per_strategy(environ: dict[str, str], wait: object) -> None:
    assert load_settings(None, {**REDIS, **environ}).store.wait_replicas_resolved == wait


def test_toml_accepts_a_sentinel_list_and_a_count_or_all(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text(
        '[store]\nstrategy = "central"\nbackend = "redis"\n'
        'sentinels = ["10.0.0.1:26379", "10.0.0.2:26379"]\nwait_replicas = 2\n'
    )
    store = load_settings(path, environ={}).store
    assert store.sentinels == ("10.0.0.1:26379", "10.0.0.2:26379") and store.wait_replicas == 2
    path.write_text('[store]\nstrategy = "central"\nbackend = "redis"\nwait_replicas = "all"\n')
    assert load_settings(path, environ={}).store.wait_replicas == "all"


def test_describe_names_the_topology_without_passwords() -> None:
    s = load_settings(
        None,
        {
            **REDIS,
            "EXTAUTHZ_STORE_STRATEGY": "replicated",
            "EXTAUTHZ_STORE_REDIS_URL": "redis://:s3cret@primary:6379/0",
            "EXTAUTHZ_STORE_REPLICA_URL": "redis://user:s3cret@replica:6379/0",
        },
    ).store
    line = topology.describe(s)
    assert "s3cret" not in line
    assert line == (
        "primary=redis://primary:6379/0 replica=redis://replica:6379/0 "
        "replica_max_staleness=5s wait_replicas=all"
    )


@pytest.mark.parametrize(
    ("info", "staleness"),
    [
        ({"role": "slave", "master_link_status": "up", "master_last_io_seconds_ago": 1}, 1.0),
        ({"role": "slave", "master_link_status": "down", "master_link_down_since_seconds": 7}, 7.0),
        ({"role": "slave", "master_link_status": "down", "master_link_down_since_seconds": -1},
         None),
        ({"role": "slave", "master_link_status": "up", "master_sync_in_progress": 1}, None),
        ({"role": "master"}, None),
    ],
)  # fmt: skip
def test_replica_staleness_from_info_replication(
    info: dict[str, object], staleness: object
) -> None:
    assert replica_staleness(info) == staleness


def test_the_composition_root_hands_the_store_plain_values() -> None:
    settings = load_settings(
        None,
        {
            **REDIS,
            "EXTAUTHZ_STORE_STRATEGY": "central",
            "EXTAUTHZ_STORE_SENTINELS": SENTINELS,
            "EXTAUTHZ_SERVER_NODE_ID": "edge 1",
        },
    )
    endpoints = topology.redis_endpoints(settings)
    assert endpoints.sentinels == (("127.0.0.1", 26001), ("127.0.0.1", 26002), ("127.0.0.1", 26003))
    assert endpoints.replica_url == "" and endpoints.timeout_seconds == 0.5
    assert endpoints.client_name("primary") == "extauthz:edge_1:primary"  # no spaces in a name


def test_a_cluster_is_loaded_waits_for_one_replica_and_is_described() -> None:
    environ = {**REDIS, "EXTAUTHZ_STORE_STRATEGY": "central"}
    environ["EXTAUTHZ_STORE_CLUSTER_NODES"] = CLUSTER
    s = load_settings(None, environ).store
    assert s.cluster_nodes == ("127.0.0.1:7001", "127.0.0.1:7002")
    assert s.wait_replicas_resolved == 1
    assert topology.describe(s) == "cluster nodes=2 wait_replicas=1"
    endpoints = topology.redis_endpoints(load_settings(None, environ))
    assert endpoints.cluster_nodes == (("127.0.0.1", 7001), ("127.0.0.1", 7002))
