"""The benchmark's report: tables of throughput, latency and CPU per request, and what ran
(machine, extauthz source, tool versions)."""

from __future__ import annotations

import os
import platform
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# -- report -----------------------------------------------------------------------------------


def render_table(results: list[dict[str, Any]]) -> str:
    head = ("scenario", "req/s", "p50 ms", "p90 ms", "p99 ms", "max ms", "non-2xx", "requests")
    rows = [
        (r["label"], f"{r['rps']:.0f}", f"{r['p50_ms']:.2f}", f"{r['p90_ms']:.2f}",
         f"{r['p99_ms']:.2f}", f"{r.get('max_ms', float('nan')):.2f}", str(r["non_2xx"]),
         str(r["requests"]))  # fmt: skip
        for r in results
    ]
    cpu_head = ("scenario", "envoy", "authz server", "redis", "wrk", "other", "redis cmds/req")
    return (
        _table(head, rows)
        + "\n\nCPU per request in microseconds (in parentheses: cores busy over the run; "
        "other: the rest of the machine)\n"
        + _table(cpu_head, cpu_rows(results, " us"))
    )


def cpu_rows(results: list[dict[str, Any]], unit: str = "") -> list[tuple[str, ...]]:
    """Per scenario: its label, the CPU per request of each process (µs, ``unit`` after the
    number) with the cores it kept busy, and Redis commands per request."""
    return [
        (r["label"], *(f"{r['cpu_us_per_request'][k]:.0f}{unit} ({r['cpu_cores'][k]:.2f})"
                       for k in ("envoy", "extauthz", "redis", "wrk", "other")),
         f"{r['redis_commands_per_request']:.2f}")  # fmt: skip
        for r in results
    ]


def _table(head: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> str:
    widths = [max(len(head[i]), *(len(r[i]) for r in rows)) for i in range(len(head))]

    def line(cells: tuple[str, ...]) -> str:
        pairs = enumerate(zip(cells, widths, strict=True))
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in pairs)

    return "\n".join([line(head), "  ".join("-" * w for w in widths), *map(line, rows)])


def machine() -> dict[str, Any]:
    model = ""
    try:
        for text in Path("/proc/cpuinfo").read_text().splitlines():
            if text.startswith("model name"):
                model = text.partition(":")[2].strip()
                break
    except OSError:
        pass
    return {"cpus": os.cpu_count(), "cpu_model": model, "kernel": platform.release(),
            "python": platform.python_version()}  # fmt: skip


def extauthz_source() -> dict[str, Any]:
    """Which extauthz code ran: its version, where it was imported from, and when that is a git
    checkout, the commit and whether the package had uncommitted changes."""
    import extauthz

    src = Path(extauthz.__file__).resolve().parent
    info: dict[str, Any] = {"version": extauthz.__version__, "path": str(src)}
    try:
        git = ["git", "-C", str(src)]
        commit = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()  # fmt: skip
        dirty = subprocess.run([*git, "status", "--porcelain", "--", "."], capture_output=True,
                               text=True, timeout=10, check=True).stdout.strip()  # fmt: skip
        info |= {"commit": commit, "uncommitted_changes": bool(dirty)}
    except (OSError, subprocess.SubprocessError):
        pass
    return info


def tool_version(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return (out.stdout or out.stderr).strip().splitlines()[0] if (out.stdout or out.stderr) else ""
