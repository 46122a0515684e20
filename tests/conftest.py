"""Shared fixtures: real Redis and Envoy processes on free ports, and log tails on failure.

Every fixture here that starts a process is for tests marked ``e2e``; the plugin
:mod:`tests.support.e2e_guard` fails a test that starts a process without that marker.

Missing infrastructure (no ``redis-server``, no Envoy binary) skips the tests that need it on a
developer's machine and fails them in CI (``CI`` set), where ``make test`` installs both.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest
from hypothesis import settings as hypothesis_settings

# `make fuzz` (pytest --hypothesis-profile=fuzz): the property tests with many more examples
hypothesis_settings.register_profile("fuzz", max_examples=5000)

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # `pytest` run without `python -m`
    sys.path.insert(0, str(REPO_ROOT))

from harness import process as _processes  # noqa: E402
from harness.redis_cluster import RedisCluster  # noqa: E402
from tests.support import (  # noqa: E402
    RedisServer,
    Stack,
    envoy_binaries,
    envoy_version,
    redis_binary,
    start_stack,
)
from tests.support.auth_stack import AuthStack, start_auth_stack  # noqa: E402

pytest_plugins = ["tests.support.e2e_guard"]

ENVOY_BINARIES: list[str | None] = [*envoy_binaries()]


def missing(what: str) -> None:
    """Skip locally, fail in CI: CI is where a missing tool must not hide tests."""
    if os.environ.get("CI"):
        pytest.fail(f"{what} (CI runs `make test`, which installs it)", pytrace=False)
    pytest.skip(what)


def _envoy_id(binary: str | None) -> str:
    if binary is None:
        return "no-envoy"
    version = envoy_version(binary)
    return f"envoy-{version}" if version != "unknown" else f"envoy-{Path(binary).name}"


@pytest.fixture(scope="session", params=ENVOY_BINARIES or [None], ids=_envoy_id)
def envoy_binary(request: pytest.FixtureRequest) -> str:
    """Each Envoy binary under test (``EXTAUTHZ_ENVOY_BINARIES``): tests run once per binary."""
    binary: str | None = request.param
    if binary is None:
        missing("no Envoy binary: set EXTAUTHZ_ENVOY_BINARIES or put envoy on PATH")
    assert binary is not None
    return binary


@pytest.fixture(scope="session")
def process_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Logs and data of processes shared by the whole session."""
    return tmp_path_factory.mktemp("processes")


def _need_redis() -> None:
    if redis_binary() is None:
        missing("redis-server is not on PATH")


@pytest.fixture(scope="session")
def redis_server(process_dir: Path) -> Iterator[RedisServer]:
    """One Redis for the session (tests must use their own key prefixes or flush)."""
    _need_redis()
    server = RedisServer(process_dir, name="redis-session").start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def redis_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A Redis of the test module's own."""
    _need_redis()
    server = RedisServer(tmp_path_factory.mktemp("redis"), name="redis-module").start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    """A Redis Cluster of the test module's own: 3 primaries, one replica each, on loopback
    (:class:`harness.redis_cluster.RedisCluster`; a node is failed over after 1 s)."""
    _need_redis()
    cluster = RedisCluster(tmp_path_factory.mktemp("cluster"))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def fresh_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A Redis of the test's own, free to be killed and restarted."""
    _need_redis()
    server = RedisServer(tmp_path, name="redis").start()
    yield server
    server.stop()


def _need_extauthz() -> None:
    try:
        import extauthz.cli  # noqa: F401
    except ImportError as exc:
        pytest.skip(f"extauthz CLI not importable yet: {exc}")


@pytest.fixture(scope="session")
def memory_stack(
    envoy_binary: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    """extauthz (in-memory store) + echo upstream + Envoy with envoy/front-proxy.yaml."""
    _need_extauthz()
    stack = start_stack(envoy_binary, tmp_path_factory.mktemp("memory-stack"))
    yield stack
    stack.stop()


@pytest.fixture(scope="session")
def redis_stack(
    envoy_binary: str, redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    """extauthz (Redis store on the session Redis) + echo upstream + Envoy."""
    _need_extauthz()
    stack = start_stack(
        envoy_binary, tmp_path_factory.mktemp("redis-stack"), redis_url=redis_server.url
    )
    yield stack
    stack.stop()


@pytest.fixture(scope="module")
def auth_stack(
    envoy_binary: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[AuthStack]:
    """The login stack (tests/support/auth_stack.py): its own Redis, users file and small
    limits; one per test module, so one module's rate limits never reach another's."""
    _need_redis()
    _need_extauthz()
    stack = start_auth_stack(envoy_binary, tmp_path_factory.mktemp("auth-stack"))
    yield stack
    stack.stop()


# -- process log tails in failure reports ---------------------------------------------------------

_first_process_of_test: dict[str, int] = {}


def pytest_runtest_setup(item: pytest.Item) -> None:
    _first_process_of_test[item.nodeid] = len(_processes.started_processes())


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.failed:
        first = _first_process_of_test.get(item.nodeid, 0)
        for index, proc in enumerate(_processes.started_processes()):
            # the processes this test can see: still running, or started during it
            if proc.running or index >= first:
                report.sections.append((f"process {proc.name} (pid {proc.pid})", proc.tail(30)))
    return report


def pytest_sessionfinish(session: pytest.Session) -> None:
    _processes.stop_all()  # a safety net; fixtures stop their own processes
