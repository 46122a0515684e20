"""What a serving process keeps resident (issue 13: RSS per worker ≤ 80 MiB).

Each measured in docs/benchmarks.md ('Memory, third pass'):

* :func:`leave_out_unused_libraries`: redis-py 8 imports the OpenTelemetry *metrics* SDK
  whenever it is installed (``redis.observability.providers``), for an export extauthz never
  turns on; it is installed here for tracing, which needs only the trace SDK. Marking the
  module absent in ``sys.modules`` before redis-py is imported makes redis-py take its own
  "SDK not installed" branch: 1.7 MiB and ~50 modules fewer per process. A feature that is
  turned on and needs the module takes it back (:func:`readmit`: the OTLP trace exporter
  imports the metrics SDK's export types).
* :func:`limit_malloc_arenas`: glibc gives each thread that allocates an arena of its own
  (grpc's event-engine and timer threads: four or five), each keeping its own free pages;
  one arena for the process, as ``MALLOC_ARENA_MAX=1`` would, kept ~1 MiB less after 300,000
  Checks at the same throughput.
* :func:`release_freed_heap`: start-up frees more than it keeps (the command line's parser,
  settings validation, the argon2id warm-up), and bursts of Checks leave free
  pages inside glibc's heaps (one per thread that allocates: the event loop's, grpc's); glibc
  keeps them until ``malloc_trim(3)`` hands them back. Called once after start-up, then by
  :func:`heap_trimmer` every minute.
"""

from __future__ import annotations

import ctypes
import functools
import gc
import logging
import sys
import time
from typing import Any

from extauthz.loops import Loop

__all__ = [
    "UNUSED",
    "heap_trimmer",
    "leave_out_unused_libraries",
    "limit_malloc_arenas",
    "readmit",
    "release_freed_heap",
]

log = logging.getLogger("extauthz")

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


def readmit(name: str) -> None:
    """Undo :func:`leave_out_unused_libraries` for ``name`` (a key of :data:`UNUSED`): a
    feature that is turned on imports it (``tracing.exporter = "otlp"``: the OTLP exporter
    imports ``opentelemetry.sdk.metrics.export``, and would fail as if not installed). Only
    the absent mark goes; a library that was imported meanwhile keeps the branch it took
    (redis-py, imported before any feature is built, stays without its metrics)."""
    if name in sys.modules and sys.modules[name] is None:
        del sys.modules[name]


_M_ARENA_MAX = -8  # mallopt(3)'s parameter number, glibc's malloc.h


@functools.cache
def _libc_function(name: str) -> Any:
    """The C library's function ``name`` (looked up once), ``None`` when it has none (musl
    has no ``mallopt`` or ``malloc_trim``)."""
    try:
        return getattr(ctypes.CDLL(None), name)
    except (AttributeError, OSError):
        return None


def limit_malloc_arenas(count: int = 1) -> bool:
    """At most ``count`` glibc malloc arenas for the threads created from now on
    (``mallopt(M_ARENA_MAX, count)``; an environment's ``MALLOC_ARENA_MAX`` is replaced).
    Returns False, changing nothing, when the C library has no ``mallopt`` (musl) or refuses
    the value."""
    mallopt = _libc_function("mallopt")
    return mallopt is not None and bool(mallopt(_M_ARENA_MAX, count))


def release_freed_heap(*, collect: bool = True) -> int:
    """Collect garbage (when ``collect``), then return the whole free pages of glibc's heaps to
    the kernel (``malloc_trim(0)``: every arena, the top of each and the pages inside it).
    Returns 1 when memory was released, 0 when none was or the C library has no
    ``malloc_trim`` (musl): nothing else changes."""
    if collect:
        gc.collect()
    trim = _libc_function("malloc_trim")
    return 0 if trim is None else int(trim(0))


async def _trim_step() -> None:
    started = time.perf_counter()
    released = release_freed_heap(collect=False)
    log.debug("heap trimmed: released=%d in %.2f ms", released,
              (time.perf_counter() - started) * 1000)  # fmt: skip


def heap_trimmer(interval: float = 60.0) -> Loop:
    """:func:`release_freed_heap` every ``interval`` seconds (a :class:`~extauthz.loops.Loop`:
    ``start``/``stop``), without the garbage collection (a full collection would stall the
    event loop for tens of milliseconds; ``malloc_trim`` takes well under one)."""
    return Loop("heap-trim", _trim_step, interval=interval, first_delay=interval, logger=log)
