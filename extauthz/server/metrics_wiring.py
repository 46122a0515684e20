"""The composition root's part for the metrics: the node's
:class:`~extauthz.server.metrics.Metrics` from the settings, in the workers' shared directory
when ``PROMETHEUS_MULTIPROC_DIR`` names one (:mod:`extauthz.server.workers`)."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping

from extauthz import __version__
from extauthz.keys.keyring import KeyRing
from extauthz.loops import Service
from extauthz.server.metrics import Metrics, MetricsSync, multiprocess_dir
from extauthz.settings import Settings


def build_metrics(settings: Settings, environ: Mapping[str, str] = os.environ) -> Metrics:
    """The metrics of a node; what they read on scrape (the node probe, the pools, the
    rotations, the keys) is given later, once built (:func:`watch_keys` and the attributes
    of :class:`Metrics`).

    ``extauthz_workers`` is the node's count of ``server.workers`` (``Settings.worker_count``).
    """
    return Metrics(
        {
            "version": __version__,
            "node_id": settings.node_id,
            "store_strategy": str(settings.store.strategy),
            "store_backend": str(settings.store.backend),
        },
        workers=settings.worker_count,
        multiprocess_dir=multiprocess_dir(environ),
    )


def watch_keys(metrics: Metrics, keyring: KeyRing) -> None:
    """``extauthz_signing_key_age_seconds`` from the active signing key's file time."""
    metrics.signing_key_age = lambda: time.time() - keyring.signing_key.mtime


def metrics_services(metrics: Metrics) -> list[Service]:
    """With several workers, the loop that brings this worker's counts to the shared
    directory (:class:`~extauthz.server.metrics.MetricsSync`); none otherwise."""
    return [MetricsSync(metrics)] if metrics.multiprocess_dir else []
