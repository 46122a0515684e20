"""Reading a ``/metrics`` answer the way Prometheus does: ``prometheus_client``'s own parser."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    """Every sample of the exposition ``text``, by name and labels.

    :raises ValueError: the text is not the Prometheus text format.
    """
    found: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def families(text: str) -> dict[str, str]:
    """The metric families of ``text``: name (without ``_total``) → type."""
    return {f.name: f.type for f in text_string_to_metric_families(text)}


def value(samples: Samples, name: str, **labels: str) -> float | None:
    """The sample ``name{labels}`` (exactly these labels), or ``None``."""
    return samples.get((name, frozenset(labels.items())))
