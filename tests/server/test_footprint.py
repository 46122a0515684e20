"""What a serving process keeps resident (extauthz.server.footprint; issue 13: RSS per
worker)."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import textwrap

import pytest

from extauthz.server.footprint import heap_trimmer

PROBE = """
import sys
{setup}
import redis.asyncio
loaded = [m for m in sys.modules if m.startswith("opentelemetry.sdk.metrics.")]
print(type(sys.modules.get("opentelemetry.sdk.metrics")).__name__, len(loaded))
"""


def _run_fresh(code: str) -> subprocess.CompletedProcess[str]:
    """``code`` run by a fresh interpreter, which must exit 0."""
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=60, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done


def _in_fresh_interpreter(code: str) -> str:
    return _run_fresh(code).stdout.strip()


@pytest.mark.e2e
def test_the_server_package_keeps_redis_py_from_loading_the_metrics_sdk() -> None:
    """redis-py 8 imports opentelemetry.sdk.metrics whenever it is installed; once
    extauthz.server is imported it takes its "not installed" branch (the module is marked
    absent: None), and none of the SDK's submodules load."""
    assert _in_fresh_interpreter(PROBE.format(setup="import extauthz.server")) == "NoneType 0"


@pytest.mark.e2e
def test_without_the_server_package_redis_py_loads_it() -> None:
    """The other side: the probe above sees the SDK when redis-py does load it."""
    kind, submodules = _in_fresh_interpreter(PROBE.format(setup="")).split()
    assert kind == "module" and int(submodules) > 10


@pytest.mark.e2e
def test_a_module_loaded_already_is_left_in_place() -> None:
    """A process that imported the SDK itself keeps it (only absent modules are marked)."""
    setup = "import opentelemetry.sdk.metrics\nimport extauthz.server"
    assert _in_fresh_interpreter(PROBE.format(setup=setup)).startswith("module ")


@pytest.mark.e2e
def test_the_otlp_trace_exporter_gets_the_metrics_sdk_back() -> None:
    """Regression: ``tracing.exporter = "otlp"``: the OTLP exporter's first imports include
    ``opentelemetry.sdk.metrics.export`` (MetricExportResult, MetricsData); while the module
    was marked absent, ``serve`` refused to start, saying the installed package was not
    installed. Building that exporter takes the module back; redis-py, imported before,
    keeps its "not installed" branch. (This venv lacks the exporter package: the build stops
    at its import, then the import the exporter makes is made here.)"""
    out = _in_fresh_interpreter(
        """
        import extauthz.server
        import redis.observability.providers as redis_otel
        from extauthz.errors import SettingsError
        from extauthz.server.tracing_wiring import build_tracing
        from extauthz.settings import Settings
        from extauthz.settings.tracing import TracingExporter, TracingSettings

        traced = Settings(tracing=TracingSettings(enabled=True, exporter=TracingExporter.OTLP))
        try:
            print("built" if build_tracing(traced) is not None else "none")
        except SettingsError:
            print("not-installed")
        from opentelemetry.sdk.metrics.export import MetricExportResult, MetricsData
        print(redis_otel.OTEL_AVAILABLE)
        """
    )
    built, redis_metrics = out.split()
    assert built in ("built", "not-installed")
    assert redis_metrics == "False"


@pytest.mark.e2e
def test_release_freed_heap_gives_freed_memory_back() -> None:
    """200,000 small objects freed, all but every 1,000th (which pins glibc's heap top):
    malloc_trim hands the free pages inside the heap back, so the resident set shrinks."""
    out = _in_fresh_interpreter(
        """
        import gc
        from extauthz.server.footprint import release_freed_heap

        def rss_kib():
            for line in open("/proc/self/status"):
                if line.startswith("VmRSS"):
                    return int(line.split()[1])

        gc.disable()
        blocks = [bytearray(600) for _ in range(200_000)]  # above pymalloc's 512 B: glibc's
        kept = blocks[::1000]
        del blocks
        before = rss_kib()
        print(release_freed_heap(), before - rss_kib())
        """
    )
    released, shrunk_kib = (int(v) for v in out.split())
    assert released == 1
    assert shrunk_kib > 50_000  # ~120 MB of the ~130 MB allocated


async def test_the_trimmer_trims_every_interval(caplog: pytest.LogCaptureFixture) -> None:
    trimmer = heap_trimmer(interval=0.05)
    with caplog.at_level(logging.DEBUG, logger="extauthz"):
        await trimmer.start()
        try:
            await asyncio.sleep(0.4)
            assert trimmer.running
        finally:
            await trimmer.stop()
    trims = [r for r in caplog.records if r.getMessage().startswith("heap trimmed: released=")]
    assert 3 <= len(trims) <= 9
    assert not trimmer.running


ARENAS = """
import ctypes, threading
from extauthz.server.footprint import limit_malloc_arenas
{setup}
def allocate():
    kept = [bytearray(600) for _ in range(2000)]  # glibc's malloc, from this thread's arena
    done.wait()
done = threading.Event()
threads = [threading.Thread(target=allocate) for _ in range(4)]
for t in threads:
    t.start()
ctypes.CDLL(None).malloc_stats()  # one "Arena N:" paragraph per arena, on stderr
done.set()
for t in threads:
    t.join()
"""


def _arenas(setup: str) -> int:
    return _run_fresh(ARENAS.format(setup=setup)).stderr.count("Arena ")


@pytest.mark.e2e
def test_one_arena_serves_every_thread() -> None:
    assert _arenas("assert limit_malloc_arenas()") == 1


@pytest.mark.e2e
def test_without_the_limit_threads_take_arenas_of_their_own() -> None:
    """The other side: the count above sees the arenas threads make."""
    assert _arenas("") > 1
