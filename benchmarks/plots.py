"""Latency-distribution plots, one PNG per scenario (matplotlib, Agg backend: no display).

Each plot is a percentile spectrum, as HdrHistogram draws one: the latency (ms, log scale) at
each percentile, the x axis stretched towards the tail (``-log10(1 - p/100)``: 50 %, 90 %,
99 %, 99.9 % ... equally spaced) and the maximum at the right end. One line for one connection
(one request at a time), one for the open-loop run at the fixed offered rate.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

TICKS = (0.0, 50.0, 90.0, 99.0, 99.9, 99.99)


def _x(p: float) -> float:
    return -math.log10(1.0 - p / 100.0)


def _series(percentiles: dict[Any, float]) -> tuple[list[float], list[float]]:
    """x (stretched percentiles, the maximum one step right of 99.99 %) and y (ms)."""
    points = sorted((float(p), v) for p, v in percentiles.items())
    xs = [(_x(p) if p < 100.0 else _x(99.99) + 0.5) for p, _ in points]
    return xs, [max(v, 1e-3) for _, v in points]


def plot_scenario(
    path: Path, label: str, curves: list[tuple[str, dict[Any, float]]], subtitle: str
) -> Path:
    """Write ``path`` (PNG) with one line per ``(name, {percentile: ms})`` of ``curves``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    try:
        for name, percentiles in curves:
            xs, ys = _series(percentiles)
            ax.plot(xs, ys, marker="o", markersize=3, label=name)
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
        ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _pos: ""))
        ax.set_xticks([_x(p) for p in TICKS] + [_x(99.99) + 0.5])
        ax.set_xticklabels([f"{p:g}%" for p in TICKS] + ["max"])
        ax.set_xlabel("percentile")
        ax.set_ylabel("latency, ms (log scale)")
        ax.set_title(f"{label}\n{subtitle}", fontsize=9)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, format="png")
    finally:
        plt.close(fig)
    return path


def plot_all(report: dict[str, Any], out_dir: Path) -> list[Path]:
    """One PNG per scenario that has a one-connection or open-loop run, named
    ``latency-<scenario>.png``; returns the paths written."""
    by_scenario: dict[str, list[tuple[str, dict[Any, float]]]] = {}
    labels: dict[str, str] = {}
    for r in report.get("one_connection", []):
        by_scenario.setdefault(r["scenario"], []).append(
            ("one connection, one request at a time", r["percentiles_ms"])
        )
        labels[r["scenario"]] = r["label"]
    open_loop = report.get("open_loop", {})
    for r in open_loop.get("runs", []):
        by_scenario.setdefault(r["scenario"], []).append(
            (f"open loop at {r['rate']:.0f} req/s (from the intended send time)",
             r["percentiles_ms"])  # fmt: skip
        )
        labels[r["scenario"]] = r["label"]
    subtitle = f"{report.get('date', '')}, Envoy {report.get('envoy', '?')}"
    return [
        plot_scenario(out_dir / f"latency-{name}.png", labels[name], curves, subtitle)
        for name, curves in by_scenario.items()
    ]
