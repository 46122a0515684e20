"""Metrics in the Prometheus text exposition format (version 0.0.4), served at ``/metrics`` on
the HTTP port (not routed by the front proxy).

* ``extauthz_info{version, node_id, store_strategy, store_backend} 1``
* ``extauthz_store_strategy{strategy}``: 1 for the active strategy, 0 for the others, so a
  dashboard can alert on nodes of one deployment that disagree
* ``extauthz_token_rotations_total{result}``: rolling token rotations on Check
  (:mod:`extauthz.check.rotation`)
* ``extauthz_check_decisions_total{decision, reason}``: Check answers since start-up
  (``reason`` is one of :class:`extauthz.errors.Reason`)
* with the session cache on: ``extauthz_cache_channel_up`` (1 while the invalidation
  subscription is established), ``extauthz_cache_channel_down_seconds`` (0 while up),
  ``extauthz_cache_bypasses_total`` (lookups that went to the store because the channel was not
  trusted)
* with a Redis store: ``extauthz_clock_offset_seconds`` (this node's clock minus the store's,
  :mod:`extauthz.clock`) and ``extauthz_clock_offset_max_seconds`` (the contract's bound)
* ``extauthz_redis_pool_waits_total{role}``, ``extauthz_redis_pool_exhausted_total{role}``:
  requests that found every pooled connection of a Redis role busy, and those of them that got
  none in time (:mod:`extauthz.store.redis.pool`)
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from extauthz.clock import MAX_CLOCK_OFFSET_SECONDS
from extauthz.store.cache import CachingSessionStore
from extauthz.strategies import StoreStrategy

_STRATEGY_HELP = "The active session-store strategy (1) and the others (0)."
_POOL_HELP = {
    "waits": "Redis requests that found every pooled connection of the role busy.",
    "exhausted": "Redis requests that got no pooled connection within the Check's budget.",
}


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(pairs: Mapping[str, str]) -> str:
    return ",".join(f'{k}="{_label(v)}"' for k, v in pairs.items())


@dataclass(frozen=True)
class NodeState:
    """What an operator needs to see of a node's push channel and clock, now.

    :param cache_channel: ``off`` (no session cache), ``up`` or ``down``.
    :param channel_down_seconds: how long the channel has been down (0 unless ``down``).
    :param cache_bypasses: lookups answered by the store because the cache was not trusted.
    :param clock_offset_seconds: this node's clock minus the store's; ``None`` until measured
        (or with the in-memory store).
    """

    cache_channel: str = "off"
    channel_down_seconds: float = 0.0
    cache_bypasses: int = 0
    clock_offset_seconds: float | None = None


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
        return NodeState(
            cache_channel="up" if down is None else "down",
            channel_down_seconds=down or 0.0,
            cache_bypasses=self._cache.stats["bypasses"],
            clock_offset_seconds=offset,
        )


def _state_lines(state: NodeState) -> list[str]:
    lines: list[str] = []
    if state.cache_channel != "off":
        lines += [
            "# HELP extauthz_cache_channel_up 1 while the cache's invalidation subscription is "
            "established.",
            "# TYPE extauthz_cache_channel_up gauge",
            f"extauthz_cache_channel_up {int(state.cache_channel == 'up')}",
            "# HELP extauthz_cache_channel_down_seconds Seconds the invalidation subscription "
            "has been down (0 while up).",
            "# TYPE extauthz_cache_channel_down_seconds gauge",
            f"extauthz_cache_channel_down_seconds {state.channel_down_seconds:.3f}",
            "# HELP extauthz_cache_bypasses_total Session lookups that bypassed the cache "
            "(push channel not trusted).",
            "# TYPE extauthz_cache_bypasses_total counter",
            f"extauthz_cache_bypasses_total {state.cache_bypasses}",
        ]
    if state.clock_offset_seconds is not None:
        lines += [
            "# HELP extauthz_clock_offset_seconds This node's clock minus the store's (Redis "
            "TIME).",
            "# TYPE extauthz_clock_offset_seconds gauge",
            f"extauthz_clock_offset_seconds {state.clock_offset_seconds:.6f}",
            "# HELP extauthz_clock_offset_max_seconds The clock contract's bound on the offset.",
            "# TYPE extauthz_clock_offset_max_seconds gauge",
            f"extauthz_clock_offset_max_seconds {MAX_CLOCK_OFFSET_SECONDS:g}",
        ]
    return lines


class Metrics:
    """Counters updated on the hot path (a dict increment) and rendered on scrape.
    ``state`` (a :class:`NodeProbe`) and ``redis_pools`` (the Redis pools' counters by role)
    are read on scrape; ``None`` leaves their lines out."""

    def __init__(
        self,
        info: Mapping[str, str],
        *,
        state: Callable[[], NodeState] | None = None,
        redis_pools: Callable[[], Mapping[str, Mapping[str, int]]] | None = None,
        rotations: Mapping[str, int] | None = None,
    ) -> None:
        self.info = dict(info)
        self.rotations = rotations
        self.decisions: Counter[tuple[str, str]] = Counter()
        self.state = state
        self.redis_pools = redis_pools

    def count_decision(self, decision: str, reason: str) -> None:
        self.decisions[(decision, reason)] += 1

    def render(self) -> str:
        strategy = self.info.get("store_strategy", "")
        lines = [
            "# HELP extauthz_info Version and configuration of this node.",
            "# TYPE extauthz_info gauge",
            f"extauthz_info{{{_labels(self.info)}}} 1",
            f"# HELP extauthz_store_strategy {_STRATEGY_HELP}",
            "# TYPE extauthz_store_strategy gauge",
        ]
        lines += [
            f'extauthz_store_strategy{{strategy="{s}"}} {int(s == strategy)}' for s in StoreStrategy
        ]
        lines += [
            "# HELP extauthz_check_decisions_total Check answers by decision and reason.",
            "# TYPE extauthz_check_decisions_total counter",
        ]
        lines += [
            f"extauthz_check_decisions_total{{{_labels({'decision': d, 'reason': r})}}} {n}"
            for (d, r), n in sorted(self.decisions.items())
        ]
        if self.rotations is not None:
            lines += [
                "# HELP extauthz_token_rotations_total Session cookie token rotations on Check "
                "by result (rotated, joined, no_cookie, failed).",
                "# TYPE extauthz_token_rotations_total counter",
            ]
            lines += [
                f'extauthz_token_rotations_total{{result="{_label(r)}"}} {n}'
                for r, n in sorted(self.rotations.items())
            ]
        if self.state is not None:
            lines += _state_lines(self.state())
        pools = self.redis_pools() if self.redis_pools is not None else {}
        for what, text in _POOL_HELP.items() if pools else ():
            name = f"extauthz_redis_pool_{what}_total"
            lines += [f"# HELP {name} {text}", f"# TYPE {name} counter"]
            lines += [f'{name}{{role="{_label(r)}"}} {c.get(what, 0)}' for r, c in pools.items()]
        return "\n".join(lines) + "\n"
