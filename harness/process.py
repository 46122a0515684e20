"""One child process with captured output: start, wait until ready (bounded), stop by PID.

Each :class:`ManagedProcess` writes its stdout and stderr to ``<log_dir>/<name>.stdout.log`` and
``<name>.stderr.log`` (appended across restarts) so that a failure can show the tail. Every
wait is bounded; a process that exits while it is being waited for fails at once with its log
tail in the exception message. Every process started here is remembered, so that
:func:`stop_all` (also run at interpreter exit) stops what a crashed caller left behind.

Python's default SIGTERM ends the interpreter without running exit handlers, which would leave
every child running (each has its own session, so the signal does not reach it). So the first
start installs a SIGTERM handler when the program has none: it raises ``KeyboardInterrupt`` in
the main thread, as Ctrl-C does, and pytest's teardown or the exit handlers stop the children.
A program with its own handler (the demo) keeps it.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Self, TypeVar

from .ports import port_accepts

T = TypeVar("T")

INTERRUPTED = threading.Event()
"""Set it (e.g. from a SIGINT handler) and every wait gives up with :class:`ProcessError`."""

_started: list[ManagedProcess] = []


class ProcessError(RuntimeError):
    """A managed process failed to start, exited early or did not become ready in time."""


class WaitTimeout(ProcessError):
    """A bounded wait ran out of time."""


def started_processes() -> list[ManagedProcess]:
    """Every process started through this module in this interpreter (running or not)."""
    return list(_started)


def _sigterm_as_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _handle_sigterm() -> None:
    """Install :func:`_sigterm_as_interrupt` for SIGTERM unless a handler is set already."""
    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _sigterm_as_interrupt)


@atexit.register
def stop_all() -> None:
    """Stop every process this module started that still runs (last started first)."""
    for proc in reversed(_started):
        try:
            proc.stop()
        except BaseException:  # a second signal while stopping: no more grace for this one
            with contextlib.suppress(BaseException):
                proc.kill9()


def wait_until(
    probe: Callable[[], T | None],
    *,
    timeout: float,
    description: str,
    interval: float = 0.05,
    diagnostics: Callable[[], str] | None = None,
) -> T:
    """Call ``probe`` until it returns a truthy value, and return that value.

    An exception from ``probe`` counts as "not yet" (a server still starting, a refused
    connection), except :class:`ProcessError`, which ends the wait at once.

    :raises WaitTimeout: ``timeout`` seconds passed; the message names ``description``, the
        last value or exception and ``diagnostics()``.
    :raises ProcessError: :data:`INTERRUPTED` was set.
    """
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        if INTERRUPTED.is_set():
            raise ProcessError(f"interrupted while waiting for {description}")
        try:
            value = probe()
        except ProcessError:
            raise
        except Exception as exc:
            last = exc
        else:
            if value:
                return value
            last = value
        if time.monotonic() >= deadline:
            extra = ""
            if diagnostics is not None:
                with contextlib.suppress(Exception):
                    extra = "\n" + diagnostics()
            raise WaitTimeout(
                f"timed out after {timeout:.1f}s waiting for {description}; last: {last!r}{extra}"
            )
        time.sleep(interval)


def tail_lines(path: Path, lines: int) -> str:
    """The last ``lines`` lines of the file at ``path`` (its last 64 KiB); "" when missing."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return ""
    text = data[-64 * 1024 :].decode("utf-8", "replace")
    return "\n".join(text.splitlines()[-lines:])


class ManagedProcess:
    """One child process with captured output, started by :meth:`start`, stopped by PID.

    It is ready once ``ready_port`` (if given) accepts connections; subclasses override
    :meth:`is_ready` for more (a health check) and, when the command line depends on state
    chosen at start (a port picked again), :meth:`prepare`.
    """

    ready_timeout: float = 20.0
    stop_timeout: float = 10.0
    launcher: Sequence[str] = ()
    """A command prefix that runs ``argv``, e.g. ``("ip", "netns", "exec", "NS")`` to start the
    process in a network namespace. It must ``exec`` the command, so that the PID stopped by
    :meth:`stop` is the process's own."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log_dir: Path,
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        ready_port: int | None = None,
    ) -> None:
        self.name = name
        self.ready_port = ready_port
        self.argv = [str(a) for a in argv]
        self.log_dir = Path(log_dir)
        self.env = dict(os.environ if env is None else env)
        self.cwd = cwd
        self.stdout_path = self.log_dir / f"{name}.stdout.log"
        self.stderr_path = self.log_dir / f"{name}.stderr.log"
        self._popen: subprocess.Popen[bytes] | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def prepare(self) -> None:
        """Overridden: called by :meth:`start` before the process is spawned."""

    def start(self) -> Self:
        """Start the process and wait until :meth:`is_ready` (at most ``ready_timeout`` s).

        :raises ProcessError: it exited or did not become ready; it is stopped before raising.
        """
        if self.running:
            raise ProcessError(f"{self.name} is already running (pid {self.pid})")
        self.log_dir.mkdir(parents=True, exist_ok=True)
        _handle_sigterm()
        self.prepare()
        with open(self.stdout_path, "ab") as out, open(self.stderr_path, "ab") as err:
            argv = [*self.launcher, *self.argv]
            err.write(f"--- {time.strftime('%H:%M:%S')} start: {' '.join(argv)}\n".encode())
            err.flush()
            self._popen = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                env=self.env,
                cwd=self.cwd,
                # own process group: a Ctrl-C in the terminal reaches only the parent, which
                # then stops its children by PID
                start_new_session=True,
            )
        if self not in _started:
            _started.append(self)
        try:
            self.wait_until(self.is_ready, self.ready_timeout, "ready")
        except ProcessError:
            self.stop()
            raise
        return self

    def is_ready(self) -> bool:
        """Whether the started process serves: ``ready_port`` accepts (or there is none)."""
        return self.ready_port is None or port_accepts(self.ready_port)

    def wait(self, timeout: float) -> int | None:
        """Wait up to ``timeout`` seconds for the process to exit; its exit status (None when it
        was never started).

        :raises subprocess.TimeoutExpired: it still runs.
        """
        return None if self._popen is None else self._popen.wait(timeout)

    def stop(self, timeout: float | None = None) -> int | None:
        """SIGTERM, wait up to ``timeout`` seconds, then SIGKILL. Returns the exit status."""
        popen = self._popen
        if popen is None:
            return None
        if popen.poll() is None:
            try:
                os.kill(popen.pid, signal.SIGTERM)
                popen.wait(self.stop_timeout if timeout is None else timeout)
            except subprocess.TimeoutExpired:
                os.kill(popen.pid, signal.SIGKILL)
                popen.wait(5)
            except ProcessLookupError:
                popen.wait(5)
        return popen.returncode

    def kill9(self) -> None:
        """SIGKILL: the process gets no chance to clean up (a crash, a lost node)."""
        popen = self._popen
        if popen is not None and popen.poll() is None:
            os.kill(popen.pid, signal.SIGKILL)
            popen.wait(5)

    def restart(self) -> Self:
        """Stop (if running) and start again with the same arguments and ports."""
        self.stop()
        return self.start()

    # -- state -------------------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        return None if self._popen is None else self._popen.pid

    @property
    def running(self) -> bool:
        return self._popen is not None and self._popen.poll() is None

    @property
    def returncode(self) -> int | None:
        return None if self._popen is None else self._popen.poll()

    def wait_until(self, predicate: Callable[[], object], timeout: float, what: str) -> None:
        """Poll ``predicate`` until true (see :func:`wait_until`); fail early when the process
        exits.

        :raises ProcessError: the process exited, or ``timeout`` seconds passed.
        """

        def probe() -> object:
            if not self.running:
                raise ProcessError(
                    f"{self.name} exited with status {self.returncode} before it was {what}\n"
                    f"{self.tail()}"
                )
            return predicate()

        wait_until(
            probe,
            timeout=timeout,
            description=f"{self.name} (pid {self.pid}) to be {what}",
            diagnostics=self.tail,
        )

    def tail(self, lines: int = 40) -> str:
        """The last ``lines`` lines of stdout and of stderr, labelled."""
        parts = []
        for label, path in (("stdout", self.stdout_path), ("stderr", self.stderr_path)):
            text = tail_lines(path, lines)
            if text:
                parts.append(f"--- {self.name} {label} ({path}) ---\n{text}")
        return "\n".join(parts) or f"--- {self.name}: no output ---"

    def __repr__(self) -> str:
        state = "running" if self.running else f"exited {self.returncode}"
        return f"<{type(self).__name__} {self.name} pid={self.pid} {state}>"
