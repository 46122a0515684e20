"""The ``e2e`` marker cannot rot: tests/support/e2e_guard.py fails a test that starts a process
without it, even when the code that tried swallows the error."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from harness import REPO_ROOT
from tests.support.e2e_guard import MARKER, ProcessGuard, UnmarkedProcessError, fixture_label


class FakeItem:
    def __init__(self, nodeid: str, marked: bool) -> None:
        self.nodeid = nodeid
        self.marked = marked

    def get_closest_marker(self, name: str) -> object | None:
        return object() if self.marked and name == MARKER else None


POPEN_ARGS = ("redis-server", ["redis-server", "--port", "1"], None, None)


def test_a_spawn_during_an_unmarked_test_is_refused_and_recorded() -> None:
    guard = ProcessGuard()
    guard.current = FakeItem("t::unmarked", marked=False)
    with pytest.raises(UnmarkedProcessError, match="t::unmarked starts a process without"):
        guard.audit("subprocess.Popen", POPEN_ARGS)
    assert guard.violations == {"t::unmarked": ["subprocess.Popen: redis-server --port 1"]}
    with pytest.raises(UnmarkedProcessError):
        guard.audit("os.fork", ())


def test_an_unmarked_user_of_a_fixture_that_spawned_is_recorded() -> None:
    guard = ProcessGuard()
    guard.spawning_fixtures.add("redis_server")
    guard.check_fixtures(FakeItem("t::marked", marked=True), ["redis_server"])
    guard.check_fixtures(FakeItem("t::unit", marked=False), ["tmp_path"])
    assert guard.violations == {}
    guard.check_fixtures(FakeItem("t::unmarked", marked=False), ["tmp_path", "redis_server"])
    assert guard.violations == {
        "t::unmarked": ["uses the fixture 'redis_server', which starts processes"]
    }


def test_a_fixture_is_judged_per_parameter() -> None:
    guard = ProcessGuard()
    guard.spawning_fixtures.add(fixture_label("store", "redis"))
    guard.check_fixtures(FakeItem("t::memory", marked=False), [fixture_label("store", "memory")])
    assert guard.violations == {}
    guard.check_fixtures(FakeItem("t::redis", marked=False), [fixture_label("store", "redis")])
    (problem,) = guard.violations["t::redis"]
    assert problem == "uses the fixture \"store['redis']\", which starts processes"


def test_a_marked_test_and_code_outside_tests_may_spawn() -> None:
    guard = ProcessGuard()
    guard.audit("subprocess.Popen", POPEN_ARGS)  # collection, session finish
    guard.current = FakeItem("t::marked", marked=True)
    guard.audit("subprocess.Popen", POPEN_ARGS)
    guard.current = FakeItem("t::unmarked", marked=False)
    guard.audit("open", ("/etc/hosts", "r", 0))  # other audit events pass
    assert guard.violations == {}


INNER_TESTS = '''
import subprocess
import sys

import pytest


def test_unmarked_spawn():
    subprocess.run([sys.executable, "-c", "pass"], check=True)


def test_unmarked_spawn_that_swallows_the_error():
    try:
        subprocess.run([sys.executable, "-c", "pass"], check=True)
    except Exception:
        pass


@pytest.fixture
def child():
    return subprocess.Popen([sys.executable, "-c", "pass"]).wait()


def test_unmarked_spawn_in_a_fixture(child):
    assert child == 0


@pytest.mark.e2e
def test_marked_spawn(child):
    subprocess.run([sys.executable, "-c", "pass"], check=True)


def test_no_spawn():
    assert True


@pytest.fixture(scope="module")
def shared_server():
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    yield proc
    proc.kill()
    proc.wait()


@pytest.fixture(params=[pytest.param("process", marks=pytest.mark.e2e), "memory"])
def backend(request):
    if request.param == "process":  # the process starts here, in shared_server's own code
        return request.getfixturevalue("shared_server")
    return None


def test_each_backend(backend):
    assert backend is None or backend.poll() is None


@pytest.mark.e2e
def test_marked_user_of_a_shared_server(shared_server):
    assert shared_server.poll() is None


def test_unmarked_user_of_a_server_a_marked_test_started(shared_server):
    assert shared_server.poll() is None
'''


@pytest.mark.e2e
def test_the_plugin_fails_unmarked_tests_in_a_real_pytest_run(tmp_path: Path) -> None:
    (tmp_path / "test_inner.py").write_text(textwrap.dedent(INNER_TESTS))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO_ROOT), str(tmp_path)]))
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "tests.support.e2e_guard", "-p",
         "no:cacheprovider", "-rA", "-q", "test_inner.py"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    out = run.stdout
    assert run.returncode == 1, out + run.stderr
    assert "FAILED test_inner.py::test_unmarked_spawn " in out
    assert "FAILED test_inner.py::test_unmarked_spawn_that_swallows_the_error" in out
    assert "ERROR test_inner.py::test_unmarked_spawn_in_a_fixture" in out
    assert "PASSED test_inner.py::test_marked_spawn" in out
    assert "PASSED test_inner.py::test_no_spawn" in out
    assert "PASSED test_inner.py::test_marked_user_of_a_shared_server" in out
    assert "FAILED test_inner.py::test_unmarked_user_of_a_server_a_marked_test_started" in out
    assert "uses the fixture 'shared_server', which starts processes" in out
    # the fixture that only requested the process-starting one is not blamed for it
    assert "PASSED test_inner.py::test_each_backend[memory]" in out
    assert "PASSED test_inner.py::test_each_backend[process]" in out
    assert "without @pytest.mark.e2e" in out
