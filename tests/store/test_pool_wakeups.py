"""A waiting pool (extauthz.store.redis.pool) never leaves a request waiting beside a free
connection."""

from __future__ import annotations

import asyncio
import time

import pytest

from extauthz.store.redis.pool import WaitingConnectionPool
from tests.support import RedisServer

pytestmark = pytest.mark.e2e


async def test_a_waiter_that_gives_up_as_it_is_woken_passes_the_connection_on(
    redis_server: RedisServer,
) -> None:
    """Two requests wait for the one connection; it comes free just as the first one's budget
    runs out. The second gets it at once, not after its own wait (Python 3.11's
    ``asyncio.Condition`` dropped the wake-up with the cancelled waiter)."""
    pool = WaitingConnectionPool.from_url(redis_server.url, max_connections=1, wait_seconds=5.0)
    try:
        held = await pool.get_connection()
        first = asyncio.create_task(pool.get_connection())
        second = asyncio.create_task(pool.get_connection())
        await asyncio.sleep(0.05)
        assert not first.done() and not second.done()  # both wait
        await pool.release(held)  # wakes the first waiter...
        first.cancel()  # ...whose budget runs out before it runs
        started = time.monotonic()
        connection = await asyncio.wait_for(second, timeout=10)
        assert time.monotonic() - started < 1.0, "the second waiter slept beside a free one"
        await pool.release(connection)
        assert first.cancelled()
        assert pool.stats.waits == 2 and pool.stats.exhausted == 1
    finally:
        await pool.disconnect()
