"""A pytest plugin: a test that starts a process must carry ``@pytest.mark.e2e``.

An audit hook (PEP 578) sees every process this interpreter starts (``subprocess.Popen``,
``os.posix_spawn``, ``os.fork``, ``os.system``, ``os.exec*``). While a test without the marker
runs (its fixtures' set-up and tear-down included), starting one raises
:class:`UnmarkedProcessError` and the test fails, even if the code that tried swallowed the
exception. A fixture seen starting a process (a session-wide Redis, a stack) makes every
unmarked test that uses it fail too, even when a marked test started it first. So
``pytest -m "not e2e"`` runs without any process, and the marker cannot rot. Processes started
outside a test (collection, ``pytest_sessionfinish``) are not judged.
"""

from __future__ import annotations

import sys
from collections.abc import Generator, Iterable, Sequence
from typing import Any, Protocol, cast

import pytest

MARKER = "e2e"
SPAWN_EVENTS = frozenset(
    {"subprocess.Popen", "os.posix_spawn", "os.spawn", "os.exec", "os.fork", "os.forkpty",
     "os.system", "pty.spawn"}  # fmt: skip
)


class UnmarkedProcessError(RuntimeError):
    """A test without the ``e2e`` marker tried to start a process."""


class _Item(Protocol):
    nodeid: str

    def get_closest_marker(self, name: str) -> object | None: ...


def _what(event: str, args: Sequence[Any]) -> str:
    if event in {"subprocess.Popen", "os.posix_spawn", "os.exec"} and len(args) > 1:
        argv = args[1]
        if isinstance(argv, (list, tuple)) and argv:
            return f"{event}: {' '.join(str(a) for a in argv)[:200]}"
        return f"{event}: {argv!s:.200}"
    return event


class ProcessGuard:
    """Judges every process start against the test that runs now (``current``)."""

    def __init__(self) -> None:
        self.current: _Item | None = None
        self.violations: dict[str, list[str]] = {}
        self.spawns = 0  # every process start seen, allowed or not
        self.attributed = 0  # of those, started by a fixture's own code (not a nested one)
        self.spawning_fixtures: set[str] = set()  # labels, see fixture_label

    def audit(self, event: str, args: Sequence[Any]) -> None:
        """The audit hook. :raises UnmarkedProcessError: a spawn during an unmarked test."""
        if event not in SPAWN_EVENTS:
            return
        self.spawns += 1
        item = self.current
        if item is None or item.get_closest_marker(MARKER) is not None:
            return
        what = _what(event, args)
        self.violations.setdefault(item.nodeid, []).append(what)
        raise UnmarkedProcessError(
            f"{item.nodeid} starts a process without @pytest.mark.{MARKER} ({what})"
        )

    def check_fixtures(self, item: _Item, labels: Iterable[str]) -> None:
        """Record a violation when an unmarked ``item`` uses a fixture (by
        :func:`fixture_label`) that started processes."""
        if item.get_closest_marker(MARKER) is not None:
            return
        for label in sorted(self.spawning_fixtures.intersection(labels)):
            self.violations.setdefault(item.nodeid, []).append(
                f"uses the fixture {label!r}, which starts processes"
            )


_NO_PARAM = object()


def fixture_label(name: str, param: object = _NO_PARAM) -> str:
    """``name``, or ``name[param]`` for one parameter of a parametrized fixture (a process may
    start for one parameter only, e.g. ``store[redis]`` but not ``store[memory]``)."""
    return name if param is _NO_PARAM else f"{name}[{param!r}]"


GUARD = ProcessGuard()
_installed = False


def pytest_configure(config: pytest.Config) -> None:
    global _installed
    config.addinivalue_line("markers", f"{MARKER}: starts real processes (Redis, Envoy, ...)")
    if not _installed:  # an audit hook cannot be removed: install it once per interpreter
        sys.addaudithook(lambda event, args: GUARD.audit(event, args))
        _installed = True


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Generator[None, object, object]:
    GUARD.current = cast(_Item, item)
    try:
        return (yield)
    finally:
        GUARD.current = None


@pytest.hookimpl(wrapper=True)
def pytest_fixture_setup(
    fixturedef: pytest.FixtureDef[object], request: pytest.FixtureRequest
) -> Generator[None, object, object]:
    spawns, attributed = GUARD.spawns, GUARD.attributed
    try:
        return (yield)
    finally:
        # a fixture that requests another one (getfixturevalue) does not own what that one starts
        own = (GUARD.spawns - spawns) - (GUARD.attributed - attributed)
        if own > 0:
            GUARD.attributed += own
            label = fixture_label(fixturedef.argname, getattr(request, "param", _NO_PARAM))
            GUARD.spawning_fixtures.add(label)


def pytest_runtest_call(item: pytest.Item) -> None:
    callspec = getattr(item, "callspec", None)
    params: dict[str, object] = dict(callspec.params) if callspec is not None else {}
    labels = [
        fixture_label(name, params.get(name, _NO_PARAM))
        for name in getattr(item, "fixturenames", ())
    ]
    GUARD.check_fixtures(cast(_Item, item), labels)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    spawned = GUARD.violations.pop(item.nodeid, None)
    if spawned and not report.failed:
        report.outcome = "failed"
        report.longrepr = (
            f"{item.nodeid} started a process without @pytest.mark.{MARKER}:\n  "
            + "\n  ".join(spawned)
        )
    return report
