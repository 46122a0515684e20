"""The node's one subscription to the revocation channel, reconnecting by itself.

One pub/sub connection, on the server the node reads sessions from (the primary, or the
node's own replica for ``replicated``: an invalidation is then read only after that server
applied the revocation), carries ``p+"invalidate"`` and whatever else the node's listeners
ask for (the cache's liveness proofs). Each listener is told when the subscription is
(re)established, of every message, and when it is lost (messages may have been missed). The
connection pings every ``ping_interval`` seconds and counts as lost after ``silence``
seconds without any reply (a half-open connection raises no error); both are the smallest
any listener asked for.

On a Redis Cluster every channel of the node hashes to one slot (``{inv}``): the subscription is
``SSUBSCRIBE`` on the primary that owns that slot, found anew (slot map read again) at every
(re)subscription, so that after the shard's failover the node subscribes on the promoted
primary (https://redis.io/docs/latest/develop/pubsub/#sharded-pubsub).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

from redis.asyncio.client import PubSub

from extauthz.loops import Loop
from extauthz.store.redis.clients import Redis
from extauthz.store.redis.cluster import StoreCluster
from extauthz.store.redis.errors import REDIS_ERRORS, StoreUnavailable, text

log = logging.getLogger("extauthz.store.channel")

RECONNECT_BACKOFF_SECONDS = (0.05, 1.0)


class ChannelListener(Protocol):
    def subscribed(self) -> None:
        """The subscription is (re)established: what was published meanwhile is unknown."""

    def message(self, channel: str, data: str) -> None:
        """A message published on ``channel``."""

    def lost(self, why: str) -> None:
        """The subscription is gone; it is re-established by itself."""


class Channel:
    """A reconnecting subscription of ``client`` (not owned) to ``channel`` and to every
    channel a listener adds. Each listener that needs it calls :meth:`start` and, when done,
    :meth:`stop`: the subscription runs while one of them does. ``clock`` is monotonic
    seconds."""

    def __init__(
        self,
        client: Redis,
        channel: str,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._redis = client
        self.channel = channel
        self._channels = [channel]
        self._listeners: list[ChannelListener] = []
        self.ping_interval = float("inf")
        self.silence = float("inf")
        self._clock = clock
        self._loop = Loop(
            "invalidation-channel",
            self._session,
            interval=0,
            backoff=RECONNECT_BACKOFF_SECONDS,
            log_level=logging.DEBUG,
            logger=log,
        )
        self._users = 0
        self.stats = {"reconnects": 0}

    def add_listener(
        self,
        listener: ChannelListener,
        *,
        extra_channels: tuple[str, ...] = (),
        ping_interval: float,
        silence: float,
    ) -> None:
        """Also tell ``listener``; subscribe ``extra_channels`` too (before :meth:`start`)."""
        self._listeners.append(listener)
        self._channels += [c for c in extra_channels if c not in self._channels]
        self.ping_interval = min(self.ping_interval, ping_interval)
        self.silence = min(self.silence, silence)

    async def start(self) -> None:
        self._users += 1
        await self._loop.start()

    async def stop(self) -> None:
        if self._users == 0:
            return
        self._users -= 1
        if self._users == 0:
            await self._loop.stop()

    def _dispatch(self, message: dict[str, Any]) -> None:
        kind = text(message["type"])
        if kind == "sunsubscribe":
            # the server dropped the shard channel (its slot moved away from this node)
            raise ConnectionError(f"shard channel {text(message['channel'])} unsubscribed")
        for listener in self._listeners:
            if kind in ("message", "smessage"):
                listener.message(text(message["channel"]), text(message["data"]))
            elif kind in ("subscribe", "ssubscribe"):
                listener.subscribed()

    async def _subscribe(self) -> PubSub:
        """A pub/sub connection subscribed to every channel (see the module docstring)."""
        if isinstance(self._redis, StoreCluster):
            await self._redis.refresh()
            pubsub = (await self._redis.shard_for(self.channel)).pubsub()
            await pubsub.ssubscribe(*self._channels)
            return pubsub
        pubsub = self._redis.pubsub()
        await pubsub.subscribe(*self._channels)
        return pubsub

    async def _session(self) -> None:
        """One subscription, until it is lost (raises :class:`StoreUnavailable` then) or the
        loop is stopped."""
        pubsub: PubSub | None = None
        try:
            pubsub = await self._subscribe()
            heard = next_ping = self._clock()
            # the stop flag, not only the cancellation: one can be swallowed inside redis-py's
            # read timeout (Python 3.11), and the subscription would go on after stop()
            while not self._loop.stopping:
                now = self._clock()
                if now - heard > self.silence:
                    raise ConnectionError(f"subscription silent for {self.silence:g} s")
                if now >= next_ping:
                    # keeps a quiet connection audibly alive even when nothing is published
                    # (primary down); the pong itself proves nothing
                    await pubsub.ping()
                    next_ping = now + self.ping_interval
                message = await pubsub.get_message(timeout=max(0.001, next_ping - self._clock()))
                if message is not None:
                    heard = self._clock()
                    self._dispatch(message)
                    self._loop.reset_backoff()
        except REDIS_ERRORS as exc:
            self.stats["reconnects"] += 1
            why = f"{exc.__class__.__name__}: {exc}"
            for listener in self._listeners:
                listener.lost(why)
            raise StoreUnavailable(f"invalidation channel lost ({why})") from exc
        finally:
            if pubsub is not None:
                with contextlib.suppress(*REDIS_ERRORS):
                    await pubsub.aclose()
