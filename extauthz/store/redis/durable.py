"""A write that counts only once the replicas have it: the transaction and its ``WAIT`` on one
connection.

``WAIT numreplicas timeout`` counts the writes of *the connection it is sent on*
(https://redis.io/docs/latest/commands/wait/). Sent through the pool after the transaction, it can
land on a connection that wrote nothing and answer at once: a write reported durable that is not.
:class:`DurablePipeline` sends ``MULTI``, the queued commands, ``EXEC`` and ``WAIT`` in one
pipeline, which redis-py writes on one connection in one round trip.
"""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline

from extauthz.errors import StoreWriteNotDurable


class DurablePipeline(Pipeline):
    """Queue commands as on ``client.pipeline(transaction=True)``; :meth:`execute` runs them
    atomically (``MULTI``/``EXEC``) and then ``WAIT replicas timeout_ms`` on the same connection.

    :param replicas: replicas that must acknowledge; 0 sends no ``WAIT``.
    :param timeout_ms: ``WAIT``'s timeout in milliseconds (below the connection's read timeout).
    """

    def __init__(self, client: aioredis.Redis, replicas: int, timeout_ms: int) -> None:
        # not redis-py's transaction mode: MULTI and EXEC are queued by hand, so that WAIT
        # follows EXEC in the same packed write
        super().__init__(client.connection_pool, client.response_callbacks, False, None)
        self.replicas = replicas
        self.timeout_ms = timeout_ms
        self.execute_command("MULTI")

    async def execute(self, raise_on_error: bool = True) -> list[Any]:
        """The ``EXEC`` results, one per queued command (raw replies: no response callbacks).

        :raises redis.exceptions.RedisError: a command was refused (e.g. ``READONLY``) or failed.
        :raises StoreWriteNotDurable: fewer than ``replicas`` acknowledged within
            ``timeout_ms``; the write itself is applied on the primary.
        """
        self.execute_command("EXEC")
        if self.replicas > 0:
            self.execute_command("WAIT", self.replicas, self.timeout_ms)
        replies = await super().execute(raise_on_error=True)
        results = replies[-2] if self.replicas > 0 else replies[-1]
        failed = [r for r in results if isinstance(r, Exception)]
        if failed and raise_on_error:
            raise failed[0]
        if self.replicas > 0 and int(replies[-1]) < self.replicas:
            raise StoreWriteNotDurable(
                f"redis WAIT: {replies[-1]} of {self.replicas} replicas acknowledged "
                f"within {self.timeout_ms} ms"
            )
        return list(results)
