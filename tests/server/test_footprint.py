"""What a serving process keeps resident (extauthz.server.footprint; issue 13: RSS per
worker)."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import textwrap

import pytest

from extauthz.server.footprint import heap_trimmer
from harness.redis import RedisServer

PROBE = """
import sys
{setup}
import redis.asyncio
import redis.observability.metrics as redis_metrics
import redis.observability.providers as redis_providers
loaded = [m for m in sys.modules if m.startswith("opentelemetry.sdk.metrics.")]
print(type(sys.modules.get("opentelemetry.sdk.metrics")).__name__, len(loaded),
      type(sys.modules.get("opentelemetry.metrics")).__name__,
      redis_metrics.OTEL_AVAILABLE, redis_providers.OTEL_AVAILABLE)
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
def test_the_server_package_imports_redis_py_without_opentelemetry_metrics() -> None:
    """redis-py 8 imports OpenTelemetry's metrics API and SDK whenever they are installed;
    imported by extauthz.server it takes its "not installed" branches, and neither loads."""
    out = _in_fresh_interpreter(PROBE.format(setup="import extauthz.server"))
    assert out == "NoneType 0 NoneType False False"


@pytest.mark.e2e
def test_without_the_server_package_redis_py_loads_them() -> None:
    """The other side: the probe above sees the API and the SDK when redis-py loads them."""
    kind, submodules, api, *available = _in_fresh_interpreter(PROBE.format(setup="")).split()
    assert kind == "module" and int(submodules) > 10 and api == "module"
    assert available == ["True", "True"]


@pytest.mark.e2e
def test_a_module_loaded_already_is_left_in_place() -> None:
    """A process that imported the SDK itself keeps it (only modules not loaded are hidden)."""
    setup = "import opentelemetry.sdk.metrics\nimport extauthz.server"
    assert _in_fresh_interpreter(PROBE.format(setup=setup)).startswith("module ")


@pytest.mark.e2e
def test_tracing_and_the_otlp_exporter_import_the_metrics_modules_after_redis_py() -> None:
    """Regression: the trace SDK imports the metrics API, and the OTLP exporter
    ``opentelemetry.sdk.metrics.export``; while a module was marked absent for the whole
    process, ``serve`` with tracing refused to start, saying an installed package was not
    installed. The marks last only while redis-py is imported: both import, and redis-py
    keeps its "not installed" branch. (This venv lacks the exporter package: its build stops
    at its import, then the import the exporter makes is made here.)"""
    out = _in_fresh_interpreter(
        """
        import extauthz.server
        import redis.observability.providers as redis_otel
        from extauthz.errors import SettingsError
        from extauthz.server.tracing_wiring import build_tracing
        from extauthz.settings import Settings
        from extauthz.settings.tracing import TracingExporter, TracingSettings

        traced = Settings(tracing=TracingSettings(enabled=True, exporter=TracingExporter.NONE))
        print("traced" if build_tracing(traced) is not None else "none")
        otlp = Settings(tracing=TracingSettings(enabled=True, exporter=TracingExporter.OTLP))
        try:
            print("built" if build_tracing(otlp) is not None else "none")
        except SettingsError:
            print("not-installed")
        from opentelemetry.sdk.metrics.export import MetricExportResult, MetricsData
        print(redis_otel.OTEL_AVAILABLE)
        """
    )
    traced, built, redis_metrics = out.split()
    assert traced == "traced"
    assert built in ("built", "not-installed")
    assert redis_metrics == "False"


DEFERRED_PROBE = """
import asyncio, sys
import extauthz.server
import jwt
from cryptography.hazmat.primitives.asymmetric import ec
from extauthz.server.footprint import DEFERRED
from extauthz.store.redis.clients import RedisClients, RedisEndpoints
from envoy.service.auth.v3.external_auth_pb2 import CheckRequest

def kinds():
    return " ".join(type(sys.modules[name]).__name__ for name in DEFERRED)

async def use_redis():
    clients = RedisClients(RedisEndpoints({url!r}))
    try:
        await clients.primary.set("footprint-probe", "1")
        info = clients.primary.connection_pool.connection_kwargs["driver_info"]
        return (await clients.primary.get("footprint-probe")).decode(), info.lib_version
    finally:
        await clients.aclose()

key = ec.generate_private_key(ec.SECP256R1())
token = jwt.encode({{"sub": "u1"}}, key, algorithm="ES256")
assert jwt.decode(token, key.public_key(), algorithms=["ES256"])["sub"] == "u1"
assert CheckRequest.FromString(CheckRequest(attributes={{"request": {{}}}}).SerializeToString())
print(kinds(), *asyncio.run(use_redis()), redis_version := __import__("redis").__version__)
# each still works when used: its first use loads it
import importlib.metadata
from cryptography import x509
from google.protobuf.internal import python_message
print(importlib.metadata.version("redis") == redis_version, x509.Name([]).rfc4514_string() == "",
      callable(python_message.GeneratedProtocolMessageType), kinds())
"""


@pytest.mark.e2e
def test_deferred_modules_stay_unloaded_while_redis_jwt_and_protobuf_serve(
    redis_server: RedisServer,
) -> None:
    """``importlib.metadata`` (redis-py's version, given by ``DRIVER_INFO`` instead),
    ``cryptography.x509`` (PyJWT) and protobuf's pure-Python messages are imported at
    start-up but not used by what serves Checks: a Redis round trip, an ES256 JWT signed and
    verified, a CheckRequest parsed leave them unloaded; a use loads them, and they work."""
    first, second = _in_fresh_interpreter(DEFERRED_PROBE.format(url=redis_server.url)).splitlines()
    *kinds, stored, lib_version, redis_version = first.split()
    assert kinds == ["_LazyModule"] * 3
    assert stored == "1" and lib_version == redis_version
    assert second.split() == ["True", "True", "True", "module", "module", "module"]


@pytest.mark.e2e
def test_without_the_server_package_they_load_at_start_up() -> None:
    """The other side: the kinds above are those of modules that really are deferred."""
    out = _in_fresh_interpreter(
        """
        import sys, redis.asyncio, jwt, google.protobuf.descriptor_pool
        from extauthz.server.footprint import DEFERRED  # (imports redis-py: loaded already)
        print(" ".join(type(sys.modules[name]).__name__ for name in DEFERRED))
        """
    )
    assert out == "module module module"


@pytest.mark.e2e
def test_a_submodule_imported_before_its_deferred_package_loads_once() -> None:
    """Regression: importing a submodule of a deferred package first (``from
    cryptography.x509.extensions import SubjectAlternativeName``) loaded the package, which
    imported the submodule, then executed the submodule a second time into a new module: its
    classes were not the package's, and a certificate's extension of that class was "not
    found". Each submodule now loads once, and its spec stays its own."""
    out = _in_fresh_interpreter(
        """
        import datetime
        import extauthz.server
        from cryptography.x509.extensions import SubjectAlternativeName
        import importlib.metadata._adapters as adapters
        import importlib.metadata
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec

        print(SubjectAlternativeName is x509.SubjectAlternativeName,
              adapters is importlib.metadata._adapters,
              type(importlib.metadata.metadata("redis")) is adapters.Message,
              x509.extensions.__spec__.name == "cryptography.x509.extensions",
              x509.extensions.__spec__.origin.endswith("extensions.py"))
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "a")])
        now = datetime.datetime.now(datetime.timezone.utc)
        cert = (
            x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(1).not_valid_before(now)
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("a.example")]), False)
            .sign(key, hashes.SHA256())
        )
        san = cert.extensions.get_extension_for_class(SubjectAlternativeName).value
        print(san.get_values_for_type(x509.DNSName))
        """
    )
    assert out.splitlines() == ["True True True True True", "['a.example']"]


@pytest.mark.e2e
def test_threads_first_using_a_deferred_module_together_each_find_it_loaded() -> None:
    """Regression: on Python 3.11, ``LazyLoader`` made a module ordinary before executing it;
    threads that used it meanwhile (eight at once here, as a thread pool may) found it
    half-executed: AttributeError in all but the loading one."""
    out = _in_fresh_interpreter(
        """
        import sys, threading
        import extauthz.server
        from cryptography import x509  # the deferred module, as PyJWT binds it
        import importlib.metadata as metadata_at_import  # an import statement loads it
        failures, ready = [], threading.Barrier(8)

        def use():
            ready.wait()
            try:
                x509.load_der_x509_certificate
            except Exception as exc:
                failures.append(repr(exc))

        threads = [threading.Thread(target=use) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        print(len(failures), type(sys.modules["cryptography.x509"]).__name__,
              callable(metadata_at_import.version), failures[:1])
        """
    )
    assert out == "0 module True []"


@pytest.mark.e2e
def test_defer_import_leaves_a_loaded_or_unknown_module_alone() -> None:
    out = _in_fresh_interpreter(
        """
        import json, sys
        from extauthz.server.footprint import defer_import
        print(defer_import("json"), type(sys.modules["json"]).__name__,
              defer_import("no_such_module_here"), "no_such_module_here" in sys.modules)
        """
    )
    assert out == "False module False False"


@pytest.mark.e2e
def test_serve_has_grpc_resolve_names_natively_unless_told_otherwise() -> None:
    """``GRPC_DNS_RESOLVER=native`` is set before gRPC is imported (it reads it then); an
    operator's own value stays."""
    code = """
        import os
        from extauthz.server.footprint import prefer_native_resolver
        print(prefer_native_resolver(), os.environ["GRPC_DNS_RESOLVER"])
        """
    env = {k: v for k, v in os.environ.items() if k != "GRPC_DNS_RESOLVER"}
    unset = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                           text=True, timeout=60, check=True, env=env)  # fmt: skip
    assert unset.stdout.split() == ["True", "native"]
    env["GRPC_DNS_RESOLVER"] = "ares"
    kept = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=60, check=True, env=env)  # fmt: skip
    assert kept.stdout.split() == ["False", "ares"]


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
