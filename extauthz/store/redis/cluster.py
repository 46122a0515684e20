"""Redis Cluster as the central strategy's primary (``store.cluster_nodes``).

:class:`StoreCluster` is redis-py's ``redis.asyncio.cluster.RedisCluster`` (slots, ``MOVED``
and ``ASK`` redirections, the cluster's own failover: no Sentinel) with what the store needs on
top, per **shard** (a primary and its replicas, owning some of the 16384 hash slots):

- :meth:`StoreCluster.shard_for`: a plain client of the primary that owns a key's slot now.
  A durable write runs ``MULTI``/``EXEC`` and ``WAIT`` on one connection of that client
  (:class:`~extauthz.store.redis.durable.DurablePipeline`): ``WAIT`` counts the writes of its
  own connection and only that shard's replicas (https://redis.io/docs/latest/commands/wait/),
  and redis-py would send a keyless ``WAIT`` to its "default node", usually another shard.
  The node's subscription (:class:`~extauthz.store.redis.channel.Channel`) uses it too, with
  ``SSUBSCRIBE`` (https://redis.io/docs/latest/commands/ssubscribe/).
- **Waiting for a connection.** redis-py's cluster node raises ``MaxConnectionsError`` the
  moment its ``max_connections`` are busy (a burst of 200 reads on one shard with 100
  connections failed half of them, healthy cluster). Here at most ``pool_size`` commands are in
  flight per client; one more waits for a free turn, at most ``pool_wait_seconds`` (the Check's
  budget), counted like the waiting pools' (:class:`~extauthz.store.redis.pool.PoolStats`).
- :meth:`StoreCluster.refresh`: re-read the slot map (``CLUSTER SLOTS``) after a connection
  error or a redirection seen outside redis-py's own retry, so that the next try goes to the
  primary the cluster promoted.

Every key that one command or script touches shares one hash tag (``{...}``, https://redis.io/
docs/latest/operate/oss_and_stack/reference/cluster-spec/#hash-tags); :func:`tagged` adds the tag
on a cluster only, so that the key names on a single primary stay what they were.
docs/strategies.md, 'Redis Cluster'.
"""

from __future__ import annotations

import asyncio
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.exceptions import ConnectionError, RedisError

from extauthz.store.redis.pool import PoolExhausted, PoolStats, WaitingConnectionPool


class StoreCluster(RedisCluster):
    """``RedisCluster`` plus one plain client per primary (module docstring).

    :param nodes: ``(host, port)`` startup nodes (any node of the cluster; the rest is
        discovered with ``CLUSTER SLOTS``).
    :param pool_size: connections per node, for the cluster client and for each shard client.
    :param pool_wait_seconds: how long a shard client's request waits for a connection.
    :param kwargs: connection settings (timeouts, ``retry``, ``client_name``).
    """

    def __init__(
        self,
        nodes: tuple[tuple[str, int], ...],
        *,
        pool_size: int,
        pool_wait_seconds: float,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            startup_nodes=[ClusterNode(host, port) for host, port in nodes],
            max_connections=pool_size,
            **kwargs,
        )
        self._shard_kwargs = {
            **kwargs,
            "max_connections": pool_size,
            "wait_seconds": pool_wait_seconds,
        }
        self._shards: dict[str, aioredis.Redis] = {}
        self._turns = asyncio.Semaphore(pool_size)
        self.pool_size = pool_size
        self.wait_seconds = pool_wait_seconds
        self.stats = PoolStats()

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        """redis-py's ``execute_command`` (routing, redirections, retries), after waiting for a
        turn when ``pool_size`` commands are in flight (module docstring).

        :raises PoolExhausted: no turn came free within ``pool_wait_seconds``.
        """
        if self._turns.locked():
            self.stats.waits += 1
            try:
                async with asyncio.timeout(self.wait_seconds):
                    await self._turns.acquire()
            except TimeoutError:
                self.stats.exhausted += 1
                raise PoolExhausted(
                    f"all {self.pool_size} cluster turns busy for {self.wait_seconds:g} s"
                ) from None
            except asyncio.CancelledError:
                self.stats.exhausted += 1
                raise
        else:
            await self._turns.acquire()
        try:
            return await super().execute_command(*args, **kwargs)
        finally:
            self._turns.release()

    async def shard_for(self, key: str) -> aioredis.Redis:
        """The plain client of the primary that owns ``key``'s slot, by the slot map now
        (read first when the client has none yet).

        :raises redis.exceptions.RedisError: the map could not be read, or no primary serves
            the slot (``SlotNotCoveredError``).
        """
        await self.initialize()
        node = self.get_node_from_key(key)
        if node is None:  # typed Optional; get_node_from_key raises when the slot is unserved
            raise RuntimeError(f"no node serves the slot of {key!r}")
        shard = self._shards.get(node.name)
        if shard is None:
            pool = WaitingConnectionPool(host=node.host, port=node.port, **self._shard_kwargs)
            shard = self._shards[node.name] = aioredis.Redis.from_pool(pool)
        return shard

    async def ping_any(self) -> None:
        """Return when one primary answers ``PING`` (asked in turn).

        :raises redis.exceptions.RedisError: none did (the last one's error).
        """
        await self.initialize()
        failure: Exception = ConnectionError("no primary known")
        for node in self.get_primaries():
            try:
                await self.ping(target_nodes=node)
                return
            except (RedisError, OSError) as exc:
                failure = exc
        raise failure

    async def refresh(self) -> None:
        """Read the slot map again (after a failover the promoted replica owns the slots)."""
        await self.initialize()
        await self.nodes_manager.initialize()

    async def aclose_shards(self) -> None:
        """Close every shard client (the cluster client itself: ``aclose``)."""
        shards, self._shards = list(self._shards.values()), {}
        for shard in shards:
            await shard.aclose()


def is_cluster(client: object) -> bool:
    """Whether ``client`` is a Redis Cluster client."""
    return isinstance(client, RedisCluster)


def tagged(name: str, client: object) -> str:
    """``name`` as a hash tag (``"{name}"``) on a cluster, unchanged on a single primary."""
    return "{" + name + "}" if is_cluster(client) else name


def slot_channel(key: str, suffix: str) -> str:
    """A channel (or key) name in ``key``'s hash slot: ``key``'s hash tag, or the whole of
    ``key`` as one (the cluster spec's rule: the first ``{`` and the next ``}``, not empty),
    followed by ``":" + suffix``."""
    start = key.find("{")
    end = key.find("}", start + 1) if start >= 0 else -1
    if end > start + 1:
        return key[: end + 1] + ":" + suffix
    return "{" + key + "}:" + suffix
