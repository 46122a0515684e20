"""Metrics in the Prometheus text exposition format (version 0.0.4), made by
``prometheus_client`` and served at ``/metrics`` on the HTTP port (not routed by the front
proxy). Durations are seconds.

Configuration of the node, read on scrape (the same in every worker of a node):

* ``extauthz_info{version, node_id, store_strategy, store_backend} 1``
* ``extauthz_store_strategy{strategy}``: 1 for the active strategy, 0 for the others, so a
  dashboard can alert on nodes of one deployment that disagree
* ``extauthz_workers``: the extauthz processes of this node (``server.workers``)
* with a measured clock offset: ``extauthz_clock_offset_max_seconds`` (the contract's bound)

Counted and timed:

* ``extauthz_check_duration_seconds{decision}`` (histogram): one gRPC ``Check``, from the call
  to the response, by ``allow``, ``deny`` or ``unavailable`` (the store could not answer)
* ``extauthz_check_decisions_total{decision, reason}``: Check answers since start-up
  (``reason`` is one of :class:`extauthz.errors.Reason`)
* ``extauthz_token_rotations_total{result}``: rolling token rotations on Check
  (:mod:`extauthz.check.rotation`)
* ``extauthz_session_updates_total{result, reason}``: session updates asked by upstream
  responses (docs/session-updates.md): ``applied`` (reason ``merge_patch``, ``logout``,
  ``rotate``), ``refused`` (reason one of :class:`extauthz.response.updates.Refusal`), and
  ``dropped_cookie`` (an upstream's ``Set-Cookie`` for the session cookie removed; reason: the
  Envoy cluster)
* ``extauthz_logins_total{outcome}``: password logins (:data:`LOGIN_OUTCOMES`)
* ``extauthz_rate_limited_total{scope}``: attempts refused by a spent budget, by the budget's
  namespace (``login:user``, ``login:addr``, ``mfa:user``, ``mfa:addr``, ``check:addr``)
* ``extauthz_signing_key_age_seconds``: seconds since the active signing key's file was written
* with a Redis store: ``extauthz_store_operation_duration_seconds{operation, role}``
  (histogram): one operation on Redis (``get``, ``create``, ``revoke``, ...; ``role``
  ``primary`` or ``replica``), failures included;
  ``extauthz_invalidation_ack_seconds{role}`` (histogram): from the end of the write that
  published a revocation or session change until the last live member of ``role``
  (``cache``: caching nodes; ``replica``: nodes reading from a replica) acknowledged it, or
  the deadline; ``extauthz_redis_pool_waits_total{role}``,
  ``extauthz_redis_pool_exhausted_total{role}``: requests that found every pooled connection of
  a Redis role busy, and those of them that got none in time
  (:mod:`extauthz.store.redis.pool`); ``extauthz_clock_offset_seconds`` (this node's clock
  minus the store's, :mod:`extauthz.clock`)
* with the session cache on: ``extauthz_cache_hits_total``, ``extauthz_cache_misses_total``,
  ``extauthz_cache_bypasses_total`` (lookups that went to the store because the channel was
  not trusted), ``extauthz_cache_channel_up`` (1 while the invalidation subscription is
  established), ``extauthz_cache_channel_down_seconds`` (0 while up)

Several workers (``PROMETHEUS_MULTIPROC_DIR`` set, :mod:`extauthz.server.workers`): every
worker writes its series into that directory (``prometheus_client``'s multiprocess mode) and a
scrape, answered by any one worker, adds them up: counters and histograms are summed; gauges
per :data:`GAUGE_MODES` over the live workers. The configuration series come from the worker
that answers. Counts kept in plain dicts on the hot path (decisions, cache lookups, pool
waits, rotations) reach the directory when :meth:`Metrics.sync` runs: on every scrape, and
every :data:`SYNC_SECONDS` in each worker (:class:`MetricsSync`).
"""

from __future__ import annotations

import logging
import os
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping

from prometheus_client import CollectorRegistry, Gauge, Histogram, generate_latest, values
from prometheus_client import Counter as PromCounter
from prometheus_client.core import GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from extauthz.check.decisions import Allow, Decision
from extauthz.clock import MAX_CLOCK_OFFSET_SECONDS
from extauthz.loops import Loop
from extauthz.server.node_state import NodeProbe, NodeState
from extauthz.strategies import StoreStrategy

__all__ = ["GAUGE_MODES", "LOGIN_OUTCOMES", "Metrics", "MetricsSync", "NodeProbe", "NodeState"]

log = logging.getLogger("extauthz.metrics")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
MULTIPROC_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"
SYNC_SECONDS = 1.0
# a cached Check takes a few hundred microseconds; a slow store or a rotation, up to the budget
CHECK_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                 0.5, 1.0)  # fmt: skip
STORE_BUCKETS = CHECK_BUCKETS
ACK_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
LOGIN_OUTCOMES = ("signed_in", "second_step", "failed", "throttled", "refused", "unavailable")
"""``signed_in`` (a session), ``second_step`` (the password was right, a second factor comes
next), ``failed`` (wrong name or password), ``throttled`` (a login budget was spent),
``refused`` (cross-site, or a session too large), ``unavailable`` (a store did not answer)."""
GAUGE_MODES = {
    "extauthz_cache_channel_up": "livemin",  # 0 while any worker's channel is down
    "extauthz_cache_channel_down_seconds": "livemax",
    "extauthz_clock_offset_seconds": "livemostrecent",
    "extauthz_signing_key_age_seconds": "livemax",  # a worker that missed a reload shows
}
"""How the gauges of several workers are combined (``prometheus_client`` multiprocess modes;
``live*``: a dead worker's value goes when the supervisor calls ``mark_process_dead``)."""


class _Synced:
    """A counter fed from a count kept elsewhere (a dict on the hot path): :meth:`update`
    adds what grew since the last call."""

    def __init__(self, counter: PromCounter) -> None:
        self.counter = counter
        self._seen: dict[tuple[str, ...], float] = {}

    def update(self, counts: Iterable[tuple[tuple[str, ...], float]]) -> None:
        for labels, value in counts:
            seen = self._seen.get(labels)
            if seen is None or value > seen:
                child = self.counter.labels(*labels) if labels else self.counter
                child.inc(value - (seen or 0))  # the first time: the series shows, 0 or not
                self._seen[labels] = value


class _NodeCollector(Collector):
    """The configuration series, read on scrape from this process."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterable[Metric]:
        m = self._metrics
        info = InfoMetricFamily("extauthz", "Version and configuration of this node.")
        info.add_metric([], m.info)
        yield info
        strategy = GaugeMetricFamily(
            "extauthz_store_strategy",
            "The active session-store strategy (1) and the others (0).",
            labels=["strategy"],
        )
        active = m.info.get("store_strategy", "")
        for s in StoreStrategy:
            strategy.add_metric([s.value], int(s.value == active))
        yield strategy
        yield GaugeMetricFamily(
            "extauthz_workers", "extauthz processes of this node (server.workers).", m.workers
        )
        if m.clock_measured:
            yield GaugeMetricFamily(
                "extauthz_clock_offset_max_seconds",
                "The clock contract's bound on the offset.",
                MAX_CLOCK_OFFSET_SECONDS,
            )


class Metrics:
    """The node's metrics, on a registry of its own (none of ``prometheus_client``'s global
    state; with ``multiprocess_dir``, the workers' shared directory instead).

    ``state`` (a :class:`NodeProbe`), ``redis_pools`` (the Redis pools' counters by role),
    ``rotations`` (by result) and ``signing_key_age`` (seconds) are read by :meth:`sync`;
    ``None`` leaves their series out. Hot path: :meth:`count_decision` is a dict increment,
    :meth:`observe_check` one histogram observation.
    """

    def __init__(
        self,
        info: Mapping[str, str],
        *,
        state: Callable[[], NodeState] | None = None,
        redis_pools: Callable[[], Mapping[str, Mapping[str, int]]] | None = None,
        rotations: Mapping[str, int] | None = None,
        signing_key_age: Callable[[], float] | None = None,
        workers: int = 1,
        multiprocess_dir: str | None = None,
    ) -> None:
        self.info = {k: str(v) for k, v in info.items()}
        self.workers = workers
        self.state = state
        self.redis_pools = redis_pools
        self.rotations = rotations
        self.signing_key_age = signing_key_age
        self.multiprocess_dir = multiprocess_dir
        self.decisions: Counter[tuple[str, str]] = Counter()
        self.clock_measured = False
        self.registry = CollectorRegistry()  # what a scrape reads
        if multiprocess_dir and not getattr(values.ValueClass, "_multiprocess", False):
            raise RuntimeError(
                f"{MULTIPROC_DIR_ENV} must be set before prometheus_client is imported "
                "(in the environment the worker process starts with)"
            )
        if multiprocess_dir:
            MultiProcessCollector(self.registry, path=multiprocess_dir)  # type: ignore[no-untyped-call]
        self._own = None if multiprocess_dir else self.registry  # where the series live
        self.registry.register(_NodeCollector(self))
        r = self._own
        self._check = Histogram(
            "extauthz_check_duration_seconds", "One gRPC Check, by decision.", ["decision"],
            buckets=CHECK_BUCKETS, registry=r,
        )  # fmt: skip
        self._check_by = {d: self._check.labels(d).observe for d in ("allow", "deny")}
        self._unavailable = self._check.labels("unavailable").observe
        self._store = Histogram(
            "extauthz_store_operation_duration_seconds", "One operation on the Redis store.",
            ["operation", "role"], buckets=STORE_BUCKETS, registry=r,
        )  # fmt: skip
        self._acks = Histogram(
            "extauthz_invalidation_ack_seconds",
            "From a published change until the last live member acknowledged it.",
            ["role"], buckets=ACK_BUCKETS, registry=r,
        )  # fmt: skip
        self._updates = PromCounter(
            "extauthz_session_updates", "Session updates asked by upstream responses.",
            ["result", "reason"], registry=r,
        )  # fmt: skip
        self._logins = PromCounter(
            "extauthz_logins", "Password logins by outcome.", ["outcome"], registry=r
        )
        for outcome in LOGIN_OUTCOMES:
            self._logins.labels(outcome)
        self._rate_limited = PromCounter(
            "extauthz_rate_limited", "Attempts refused by a spent budget, by scope.", ["scope"],
            registry=r,
        )  # fmt: skip
        self._decisions = _Synced(PromCounter(
            "extauthz_check_decisions", "Check answers by decision and reason.",
            ["decision", "reason"], registry=r,
        ))  # fmt: skip
        self._counters: dict[str, _Synced] = {}  # fed by sync, made when first fed
        self._gauges: dict[str, Gauge] = {}

    # -- what the node records ---------------------------------------------------------------

    def count_decision(self, decision: str, reason: str) -> None:
        self.decisions[(decision, reason)] += 1

    def observe_check(self, decision: Decision, started: float) -> None:
        """One Check answered: ``started`` is its ``time.perf_counter()`` at the call."""
        self._check_by["allow" if type(decision) is Allow else "deny"](
            time.perf_counter() - started
        )

    def observe_unavailable(self, started: float) -> None:
        """One Check that failed closed (the store could not answer)."""
        self._unavailable(time.perf_counter() - started)

    def count_session_update(self, result: str, reason: str) -> None:
        self._updates.labels(result, reason).inc()

    def count_login(self, outcome: str) -> None:
        """One login attempt; ``outcome`` one of :data:`LOGIN_OUTCOMES`."""
        self._logins.labels(outcome).inc()

    def count_rate_limited(self, scope: str) -> None:
        """One attempt refused because the budget ``scope`` (a rate-limit namespace) is spent."""
        self._rate_limited.labels(scope).inc()

    def store_observer(self, role: str) -> Callable[[str, float], None]:
        """``observe(operation, seconds)`` for the Redis store of ``role``."""
        children: dict[str, Callable[[float], None]] = {}

        def observe(operation: str, seconds: float) -> None:
            child = children.get(operation)
            if child is None:
                child = children[operation] = self._store.labels(operation, role).observe
            child(seconds)

        return observe

    def ack_observer(self, role: str) -> Callable[[float], None]:
        """``observe(seconds)`` of the acknowledgement barrier of ``role``."""
        return self._acks.labels(role).observe

    # -- scrape --------------------------------------------------------------------------------

    def sync(self) -> None:
        """Bring the series fed from this process's own counts up to date."""
        self._decisions.update(self.decisions.copy().items())
        if self.rotations is not None:
            self._synced("extauthz_token_rotations", _ROTATIONS_HELP, ["result"]).update(
                ((r,), n) for r, n in dict(self.rotations).items()
            )
        if self.signing_key_age is not None:
            self._set("extauthz_signing_key_age_seconds", self.signing_key_age())
        if self.redis_pools is not None:
            for role, counts in self.redis_pools().items():
                for what in ("waits", "exhausted"):
                    self._synced(f"extauthz_redis_pool_{what}", _POOL_HELP[what], ["role"]).update(
                        [((role,), counts.get(what, 0))]
                    )
        if self.state is not None:
            self._sync_state(self.state())

    def _synced(self, name: str, text: str, labels: list[str]) -> _Synced:
        synced = self._counters.get(name)
        if synced is None:
            counter = PromCounter(name, text, labels, registry=self._own)
            synced = self._counters[name] = _Synced(counter)
        return synced

    def _set(self, name: str, value: float) -> None:
        gauge = self._gauges.get(name)
        if gauge is None:
            gauge = self._gauges[name] = Gauge(
                name, _GAUGE_HELP[name], registry=self._own,
                multiprocess_mode=GAUGE_MODES[name],  # type: ignore[arg-type]
            )  # fmt: skip
        gauge.set(value)

    def _sync_state(self, state: NodeState) -> None:
        if state.cache_channel != "off":
            for what, value in (("hits", state.cache_hits), ("misses", state.cache_misses),
                                ("bypasses", state.cache_bypasses)):  # fmt: skip
                self._synced(f"extauthz_cache_{what}", _CACHE_HELP[what], []).update([((), value)])
            self._set("extauthz_cache_channel_up", int(state.cache_channel == "up"))
            self._set("extauthz_cache_channel_down_seconds", state.channel_down_seconds)
        if state.clock_offset_seconds is not None:
            self.clock_measured = True
            self._set("extauthz_clock_offset_seconds", state.clock_offset_seconds)

    def render(self) -> str:
        """The scrape's body (:data:`CONTENT_TYPE`)."""
        self.sync()
        return generate_latest(self.registry).decode()


_GAUGE_HELP = {
    "extauthz_cache_channel_up": "1 while the cache's invalidation subscription is established.",
    "extauthz_cache_channel_down_seconds":
        "Seconds the invalidation subscription has been down (0 while up).",
    "extauthz_clock_offset_seconds": "This node's clock minus the store's (Redis TIME).",
    "extauthz_signing_key_age_seconds": "Seconds since the active signing key's file was written.",
}
_ROTATIONS_HELP = (
    "Session cookie token rotations on Check by result (rotated, joined, no_cookie, failed)."
)
_POOL_HELP = {
    "waits": "Redis requests that found every pooled connection of the role busy.",
    "exhausted": "Redis requests that got no pooled connection within the Check's budget.",
}
_CACHE_HELP = {
    "hits": "Session lookups answered by the cache.",
    "misses": "Session lookups the trusted cache did not hold (the store answered).",
    "bypasses": "Session lookups that bypassed the cache (push channel not trusted).",
}


class MetricsSync:
    """With several workers: :meth:`Metrics.sync` every :data:`SYNC_SECONDS` (a
    :class:`~extauthz.loops.Service`), so a scrape answered by another worker sees this one's
    counts at most that old."""

    def __init__(self, metrics: Metrics, interval: float = SYNC_SECONDS) -> None:
        self._metrics = metrics
        self._loop = Loop("metrics-sync", self._step, interval=interval, logger=log)

    async def _step(self) -> None:
        self._metrics.sync()

    async def start(self) -> None:
        await self._loop.start()

    async def stop(self) -> None:
        self._metrics.sync()  # the last counts of a worker that stops
        await self._loop.stop()


def multiprocess_dir(environ: Mapping[str, str] = os.environ) -> str | None:
    """The workers' shared metrics directory, when this process is one of several workers."""
    return environ.get(MULTIPROC_DIR_ENV) or None
