"""What a serving process keeps resident (issue 13: RSS per worker ≤ 80 MiB).

Each measured in docs/benchmarks.md ('Memory, third pass' and 'fourth pass'):

* :func:`import_redis_py`: redis-py 8 imports OpenTelemetry's metrics API and SDK whenever
  they are installed (``redis.observability``), for an export extauthz never turns on (they
  are installed for tracing). While redis-py is imported both are marked absent in
  ``sys.modules``, so it takes its own "not installed" branch (2 MiB and ~60 modules fewer);
  then the marks go, and tracing imports them as usual.
* :func:`defer_import` of each module of :data:`DEFERRED`: imported at start-up by a library,
  used only for what extauthz leaves off, loaded at its first use instead (2.1 MiB):
  ``importlib.metadata`` (redis-py reads its own version with it at each connection; the
  clients give it: :data:`extauthz.store.redis.clients.DRIVER_INFO`), ``cryptography.x509``
  (PyJWT), protobuf's pure-Python messages.
* :func:`prefer_native_resolver`: gRPC's c-ares resolver, for names a server resolves only to
  bind (0.3 MiB).
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
import importlib
import importlib.machinery
import importlib.util
import logging
import os
import sys
import threading
import time
from collections.abc import Sequence
from types import ModuleType
from typing import Any

from extauthz.loops import Loop

__all__ = [
    "HIDDEN_FROM_REDIS_PY",
    "DEFERRED",
    "defer_import",
    "defer_unused_modules",
    "heap_trimmer",
    "import_redis_py",
    "limit_malloc_arenas",
    "prefer_native_resolver",
    "release_freed_heap",
]

log = logging.getLogger("extauthz")

# what redis-py imports for a feature extauthz leaves off (module -> the feature)
HIDDEN_FROM_REDIS_PY = {
    "opentelemetry.metrics": "redis-py's OpenTelemetry metrics",
    "opentelemetry.sdk.metrics": "redis-py's OpenTelemetry metrics export",
}

# what libraries import at start-up but use only for a feature extauthz leaves off, loaded at
# its first use instead (module -> where it is used)
DEFERRED = {
    "importlib.metadata": "redis-py reads its own version (extauthz gives it: DRIVER_INFO)",
    "cryptography.x509": "PyJWT tells a certificate from an HMAC secret (extauthz signs and "
    "verifies with keys, never with certificates or HMAC secrets)",
    "google.protobuf.internal.python_message": "protobuf's pure-Python messages (the upb "
    "implementation serves instead)",
}


class _LoadedSubmodules:  # a finder and its loader (importlib.abc's: 6 modules more)
    """The submodule of a deferred package that loading the package imported, handed back.

    Importing ``package.sub`` while ``package`` is still deferred loads ``package`` (the import
    system reads its ``__path__``), whose code imports ``package.sub``; Python 3.11 then goes on
    to execute ``package.sub`` a second time, into a second module that replaces the first in
    ``sys.modules``: two copies of each class, the package's (which its own code and
    cryptography's Rust code use) and the submodule's. First on ``sys.meta_path``, this finds
    such a submodule already in ``sys.modules`` and loads it as itself."""

    def __init__(self) -> None:
        self.packages: set[str] = set()

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        module = sys.modules.get(fullname)
        if module is None or target is not None:  # (not loaded, or a reload)
            return None
        own = getattr(module, "__spec__", None)
        if own is None or fullname.rpartition(".")[0] not in self.packages:
            return None
        return importlib.machinery.ModuleSpec(fullname, self, loader_state=own)  # type: ignore[arg-type]

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        return sys.modules[spec.name]

    def exec_module(self, module: ModuleType) -> None:
        ours = module.__spec__  # (the import set it)
        if ours is not None:
            module.__spec__ = ours.loader_state  # its own again


_LOADED_SUBMODULES = _LoadedSubmodules()

_LAZY_LOAD = threading.RLock()
_LOADING: set[int] = set()  # id() of each deferred module being loaded


class _LazyModule(ModuleType):
    """A deferred module: executed at the first use of one of its attributes, by one thread
    while the others wait.

    (Python 3.11's ``importlib.util.LazyLoader`` makes the module ordinary, then executes it:
    another thread that used it meanwhile found it half-executed, ``AttributeError``; Python
    3.12.3 added a lock.) Here the module stays deferred for the other threads until it is
    loaded (the lock); the loading thread (the imports its code makes) sees it as it is so
    far."""

    def __getattribute__(self, attr: str) -> Any:
        with _LAZY_LOAD:
            if type(self) is _LazyModule:
                if id(self) in _LOADING:  # this thread is loading it
                    return ModuleType.__getattribute__(self, attr)
                _LOADING.add(id(self))
                try:
                    _load(self)
                finally:
                    _LOADING.discard(id(self))
        return getattr(self, attr)


def _load(module: ModuleType) -> None:
    """Execute a deferred module by its own loader, keeping what was set on it meanwhile (a
    submodule's name, set by its import) over what its code sets, as an eager import would."""
    spec = ModuleType.__getattribute__(module, "__spec__")
    then = spec.loader_state["__dict__"]
    now = ModuleType.__getattribute__(module, "__dict__")
    updated = {k: v for k, v in now.items() if k not in then or v is not then[k]}
    spec.loader.exec_module(module)
    now.update(updated)
    module.__class__ = ModuleType


def defer_import(name: str) -> bool:
    """Make the module ``name`` load at the first use of one of its attributes instead of at
    its import (:class:`_LazyModule`; ``from parent import child`` then binds the module
    unloaded too). An import statement of it after this loads it (Python 3.11's import system
    reads its ``__spec__``), and a package's submodule imported first loads it and then itself
    once (:class:`_LoadedSubmodules`). Returns False, changing nothing, when it is loaded
    already or cannot be found."""
    if name in sys.modules:
        return False
    spec = importlib.util.find_spec(name)  # (imports the parent package, which may import it)
    if spec is None or spec.loader is None or name in sys.modules:
        return False
    module = importlib.util.module_from_spec(spec)  # (its attributes, its code not run)
    spec.loader_state = {"__dict__": module.__dict__.copy()}  # what _load compares with
    module.__class__ = _LazyModule
    sys.modules[name] = module
    parent, _, child = name.rpartition(".")
    if parent:
        setattr(sys.modules[parent], child, module)
    if spec.submodule_search_locations is not None:  # a package: its submodules load once
        _LOADED_SUBMODULES.packages.add(name)
        if _LOADED_SUBMODULES not in sys.meta_path:
            sys.meta_path.insert(0, _LOADED_SUBMODULES)
    return True


def defer_unused_modules() -> None:
    """:func:`defer_import` each module of :data:`DEFERRED`. Called when ``extauthz.server`` is
    first imported, before the libraries that import them are."""
    for name in DEFERRED:
        defer_import(name)


def import_redis_py() -> None:
    """Import ``redis.asyncio`` without what :data:`HIDDEN_FROM_REDIS_PY` lists: each module of
    it that is not loaded yet is marked absent (``sys.modules[name] = None``: its import raises
    ``ImportError``, which redis-py treats as "not installed") while redis-py is imported, and
    unmarked after. Called when ``extauthz.server`` is first imported. Once redis-py is
    loaded, this changes nothing."""
    if "redis" in sys.modules:
        return
    marked = [name for name in HIDDEN_FROM_REDIS_PY if name not in sys.modules]
    for name in marked:
        sys.modules[name] = None  # type: ignore[assignment]
    try:
        importlib.import_module("redis.asyncio")
    finally:
        for name in marked:
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


def prefer_native_resolver() -> bool:
    """Have gRPC resolve names with ``getaddrinfo(3)`` (``GRPC_DNS_RESOLVER=native``, gRPC's
    doc/environment_variables.md) instead of its default c-ares resolver, which sets up
    machinery of its own (0.35 MiB resident) for names a server resolves only to bind its
    listen address. gRPC reads it when it is imported: ``extauthz serve`` calls this first
    (its workers inherit the environment). An operator's ``GRPC_DNS_RESOLVER`` stays.
    Returns whether it was set here."""
    if "GRPC_DNS_RESOLVER" in os.environ:
        return False
    os.environ["GRPC_DNS_RESOLVER"] = "native"
    return True


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
