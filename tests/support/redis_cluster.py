"""Clients of the test Redis Cluster (:class:`harness.redis_cluster.RedisCluster`, started by
the ``redis_cluster`` fixture of ``tests/conftest.py``)."""

from __future__ import annotations

from extauthz.store.redis.clients import RedisClients, RedisEndpoints
from extauthz.store.redis.cluster import StoreCluster
from harness.redis_cluster import RedisCluster


def cluster_clients(cluster: RedisCluster, *, timeout: float = 0.5) -> RedisClients:
    """The node's clients as the server builds them for ``store.cluster_nodes`` (the primary
    is a :class:`~extauthz.store.redis.cluster.StoreCluster`); close with ``aclose``."""
    return RedisClients(
        RedisEndpoints(
            primary_url="redis://unused:1/0",
            cluster_nodes=tuple(cluster.startup_nodes),
            timeout_seconds=timeout,
            name="test",
        )
    )


def cluster_client(cluster: RedisCluster, *, timeout: float = 0.5) -> StoreCluster:
    """A :class:`~extauthz.store.redis.cluster.StoreCluster` of ``cluster`` (close with
    ``aclose`` and ``aclose_shards``, or through :func:`cluster_clients`)."""
    client = cluster_clients(cluster, timeout=timeout).primary
    assert isinstance(client, StoreCluster)
    return client
