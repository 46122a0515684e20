"""Connection pools that wait for a free connection instead of failing at once.

redis-py's asyncio ``ConnectionPool`` raises ``MaxConnectionsError`` the moment all of its
``max_connections`` are busy: under Redis latency a burst of Checks failed with ``UNAVAILABLE``
while the store was healthy. Here a request that finds the pool full waits (first come, first
served as far as asyncio's condition goes) for a released connection, at most ``wait_seconds``
(the Check's budget, ``store.check_budget_ms``), and the pool counts its waits and the waits
that ran out (:class:`PoolStats`, exported as metrics). :class:`WaitingConnectionPool` is the
plain pool, :class:`WaitingSentinelPool` the one behind ``Sentinel.master_for``.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from redis.asyncio.connection import AbstractConnection, ConnectionPool
from redis.asyncio.sentinel import SentinelConnectionPool
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import MaxConnectionsError


class PoolExhausted(RedisConnectionError):
    """No connection of the pool came free in time (a redis-py ``ConnectionError``, so it leaves
    the store as :class:`~extauthz.errors.StoreUnavailable`)."""


@dataclass
class PoolStats:
    """``waits``: requests that found every connection busy; ``exhausted``: waits that ended
    without a connection (the pool's wait or the caller's budget ran out)."""

    waits: int = 0
    exhausted: int = 0


class WaitingPool(ConnectionPool):
    """The waiting part, over whichever redis-py pool comes next in the MRO."""

    def __init__(self, *args: Any, wait_seconds: float = 0.4, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.wait_seconds = wait_seconds
        self.stats = PoolStats()
        self._freed = asyncio.Condition()
        self._waking: set[asyncio.Task[None]] = set()

    async def get_connection(self, *args: Any, **kwargs: Any) -> AbstractConnection:
        """A connected connection; waits while every one is busy.

        :raises PoolExhausted: none came free within ``wait_seconds``.
        """
        deadline: float | None = None
        while True:
            try:
                # redis-py leaves get_connection unannotated; untyped_calls_exclude does not
                # reach super() calls
                connection: AbstractConnection = await super().get_connection()  # type: ignore[no-untyped-call]
                return connection
            except MaxConnectionsError:
                pass
            if deadline is None:
                self.stats.waits += 1
                deadline = asyncio.get_running_loop().time() + self.wait_seconds
            try:
                async with asyncio.timeout_at(deadline), self._freed:
                    await self._freed.wait_for(self.can_get_connection)
            except TimeoutError:
                self.stats.exhausted += 1
                self._pass_on()
                raise PoolExhausted(
                    f"all {self.max_connections} connections busy for {self.wait_seconds:g} s"
                ) from None
            except asyncio.CancelledError:
                self.stats.exhausted += 1  # the caller's budget ran out first
                self._pass_on()
                raise

    def _pass_on(self) -> None:
        """A waiter that gives up may be the one a release had just woken: on Python 3.11
        ``asyncio.Condition`` drops a wake-up whose waiter is cancelled, and the next waiter
        would sleep beside a free connection until its own wait ran out. Wake the next one
        in its place (a wake-up too many only makes a waiter look again)."""
        if self.can_get_connection():
            task = asyncio.get_running_loop().create_task(self._notify())
            self._waking.add(task)
            task.add_done_callback(self._waking.discard)

    async def _notify(self) -> None:
        async with self._freed:
            self._freed.notify()

    async def release(self, connection: AbstractConnection) -> None:
        await super().release(connection)
        await self._notify()


class WaitingConnectionPool(WaitingPool):
    """``redis.asyncio.ConnectionPool`` that waits (module docstring); ``wait_seconds`` is a
    keyword argument of the constructor and of ``from_url``."""


class WaitingSentinelPool(WaitingPool, SentinelConnectionPool):
    """``SentinelConnectionPool`` that waits (module docstring): pass it to
    ``Sentinel.master_for(..., connection_pool_class=WaitingSentinelPool, wait_seconds=...)``."""
