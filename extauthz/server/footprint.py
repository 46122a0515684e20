"""What a serving process keeps resident (issue 13: RSS per worker ≤ 80 MiB).

Two things, both measured in docs/benchmarks.md ('Memory, third pass'):

* :func:`leave_out_unused_libraries`: redis-py 8 imports the OpenTelemetry *metrics* SDK
  whenever it is installed (``redis.observability.providers``), for an export extauthz never
  turns on; it is installed here for tracing, which needs only the trace SDK. Marking the
  module absent in ``sys.modules`` before redis-py is imported makes redis-py take its own
  "SDK not installed" branch: 1.7 MiB and ~50 modules fewer per process.
* :func:`release_freed_heap`: start-up frees more than it keeps (the parser of every
  subcommand, settings validation, the argon2id warm-up); glibc keeps the freed pages of its
  heap until ``malloc_trim(3)`` hands them back.
"""

from __future__ import annotations

import ctypes
import gc
import sys

__all__ = ["UNUSED", "leave_out_unused_libraries", "release_freed_heap"]

# modules a serving process must not load: a library imports them for a feature extauthz
# leaves off (module -> the feature)
UNUSED = {"opentelemetry.sdk.metrics": "redis-py's OpenTelemetry metrics export"}


def leave_out_unused_libraries() -> None:
    """Mark each module of :data:`UNUSED` absent (``sys.modules[name] = None``: an import of it
    raises ``ImportError``, which the importing library treats as "not installed"). A module
    this interpreter has loaded already is left as it is. Called when ``extauthz.server`` is
    first imported, before anything imports redis-py."""
    for name in UNUSED:
        sys.modules.setdefault(name, None)  # type: ignore[arg-type]


def release_freed_heap() -> int:
    """Collect garbage, then return the free pages at the top of glibc's heaps to the kernel
    (``malloc_trim(0)``). Returns 1 when memory was released, 0 when none was or the C
    library has no ``malloc_trim`` (musl): nothing else changes."""
    gc.collect()
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (AttributeError, OSError):
        return 0
    return int(trim(0))
