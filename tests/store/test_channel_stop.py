"""The invalidation channel's subscription (extauthz.store.redis.channel) ends on its stop flag,
even when a cancellation is swallowed on the way."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.asyncio.client import PubSub

from extauthz.store.redis.channel import Channel
from tests.support import RedisServer

pytestmark = pytest.mark.e2e


class SwallowingPubSub(PubSub):
    """A real subscription whose ``get_message`` turns a cancellation into "no message", as
    a cancellation that meets redis-py's read timeout can end on Python 3.11 (``asyncio``'s
    timeout turns it into a ``TimeoutError``, which redis-py reads as "nothing yet")."""

    swallowing = True
    swallowed = 0

    async def get_message(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return await super().get_message(*args, **kwargs)
        except asyncio.CancelledError:
            if not SwallowingPubSub.swallowing:
                raise
            SwallowingPubSub.swallowed += 1
            return None


class SwallowingRedis(aioredis.Redis):
    def pubsub(self, **kwargs: Any) -> PubSub:
        return SwallowingPubSub(self.connection_pool, **kwargs)


class Listener:
    def __init__(self) -> None:
        self.subscribed_once = asyncio.Event()

    def subscribed(self) -> None:
        self.subscribed_once.set()

    def message(self, channel: str, data: str) -> None:
        pass

    def lost(self, why: str) -> None:
        pass


async def test_a_swallowed_cancellation_does_not_keep_the_subscription_running(
    redis_server: RedisServer,
) -> None:
    client = SwallowingRedis.from_url(redis_server.url)
    channel = Channel(client, "stop-test:invalidate")
    listener = Listener()
    channel.add_listener(listener, ping_interval=0.05, silence=5.0)
    try:
        await channel.start()
        await asyncio.wait_for(listener.subscribed_once.wait(), timeout=10)
        task = channel._loop._task
        assert task is not None
        started = time.monotonic()
        await channel.stop()  # cancels; the subscription swallows it
        assert SwallowingPubSub.swallowed >= 1
        assert task.done(), "the subscription kept running after stop() gave up on it"
        assert time.monotonic() - started < 0.5
    finally:
        SwallowingPubSub.swallowing = False  # a task left behind by a failure can end now
        await channel.stop()  # idempotent
        await client.aclose()
