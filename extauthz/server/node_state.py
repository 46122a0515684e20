"""What an operator needs to see of a node's push channel, session cache and clock, now: read
by the Status RPC (:mod:`extauthz.server.admin`) and by the metrics
(:mod:`extauthz.server.metrics`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from extauthz.store.cache import CachingSessionStore


@dataclass(frozen=True)
class NodeState:
    """A node's push channel, cache and clock, now.

    :param cache_channel: ``off`` (no session cache), ``up`` or ``down``.
    :param channel_down_seconds: how long the channel has been down (0 unless ``down``).
    :param cache_bypasses: lookups answered by the store because the cache was not trusted.
    :param clock_offset_seconds: this node's clock minus the store's; ``None`` until measured
        (or with the in-memory store).
    :param cache_hits: lookups the cache answered.
    :param cache_misses: lookups the trusted cache did not hold (the store answered).
    """

    cache_channel: str = "off"
    channel_down_seconds: float = 0.0
    cache_bypasses: int = 0
    clock_offset_seconds: float | None = None
    cache_hits: int = 0
    cache_misses: int = 0


class NodeProbe:
    """Reads a :class:`NodeState` from the node's cache (if any) and its clock offset."""

    def __init__(
        self,
        cache: CachingSessionStore | None = None,
        clock_offset: Callable[[], float | None] = lambda: None,
    ) -> None:
        self._cache = cache
        self._clock_offset = clock_offset

    def __call__(self) -> NodeState:
        offset = self._clock_offset()
        if self._cache is None:
            return NodeState(clock_offset_seconds=offset)
        down = self._cache.channel_down_seconds()
        stats = self._cache.stats
        return NodeState(
            cache_channel="up" if down is None else "down",
            channel_down_seconds=down or 0.0,
            cache_bypasses=stats["bypasses"],
            clock_offset_seconds=offset,
            cache_hits=stats["hits"],
            cache_misses=stats["misses"],
        )
