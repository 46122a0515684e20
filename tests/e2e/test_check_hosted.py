"""``benchmarks/check_hosted.py`` (docs/benchmarks.md, 'Where the rest goes') runs: every
variant starts, answers OK to the pipeline's request and is measured; extauthz's in-Check time
is counted."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.e2e


def test_check_hosted_measures_every_variant() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.check_hosted", "--calls", "64", "--concurrency", "4",
         "--rounds", "1", "--loop-calls", "70"],
        cwd=REPO, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = {line[:34].strip(): line[34:].split() for line in proc.stdout.splitlines()[1:-1]}
    assert set(rows) == {"no-op", "no-op, extauthz-sized response", "extauthz (in-memory store)"}
    for label, figures in rows.items():
        assert all(float(f) > 0 for f in figures), (label, figures)
    # the two prebuilt variants have no in-Check column; extauthz has one, below its total
    assert len(rows["no-op"]) == 2 and len(rows["extauthz (in-memory store)"]) == 3
    calls_per_second, server_cpu, in_check = map(float, rows["extauthz (in-memory store)"])
    assert in_check < server_cpu
    assert re.search(r"check_loop\): \d+ µs CPU", proc.stdout)
