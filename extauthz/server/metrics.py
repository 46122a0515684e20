"""Metrics in the Prometheus text exposition format (version 0.0.4), served at ``/metrics`` on
the HTTP port (not routed by the front proxy).

* ``extauthz_info{version, node_id, store_strategy, store_backend} 1``
* ``extauthz_store_strategy{strategy}``: 1 for the active strategy, 0 for the others, so a
  dashboard can alert on nodes of one deployment that disagree
* ``extauthz_check_decisions_total{decision, reason}``: Check answers since start-up
  (``reason`` is one of :class:`extauthz.errors.Reason`)
* ``extauthz_redis_pool_waits_total{role}``, ``extauthz_redis_pool_exhausted_total{role}``:
  requests that found every pooled connection of a Redis role busy, and those of them that got
  none in time (:mod:`extauthz.store.redis.pool`)
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping

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


class Metrics:
    """Counters updated on the hot path (a dict increment) and rendered on scrape.
    ``redis_pools`` reads the Redis pools' counters by role on scrape (``None``: no Redis)."""

    def __init__(
        self,
        info: Mapping[str, str],
        *,
        redis_pools: Callable[[], Mapping[str, Mapping[str, int]]] | None = None,
    ) -> None:
        self.info = dict(info)
        self.decisions: Counter[tuple[str, str]] = Counter()
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
        pools = self.redis_pools() if self.redis_pools is not None else {}
        for what, text in _POOL_HELP.items() if pools else ():
            name = f"extauthz_redis_pool_{what}_total"
            lines += [f"# HELP {name} {text}", f"# TYPE {name} counter"]
            lines += [f'{name}{{role="{_label(r)}"}} {c.get(what, 0)}' for r, c in pools.items()]
        return "\n".join(lines) + "\n"
