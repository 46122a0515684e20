"""Several extauthz processes on one node: the supervisor and each worker's link to it
(``server.workers``; docs/operations.md, 'Workers').

:class:`Supervisor` runs in the process ``extauthz serve`` started. It starts ``count`` worker
processes with multiprocessing's ``spawn`` start method (a fresh interpreter each: grpc does not
support ``fork`` once it is imported); each runs the whole node, with its own event loop, and
the workers share nothing but the store. A worker that dies is started again after a bounded
backoff; SIGTERM or SIGINT sends SIGTERM to every worker, each drains as a single process does
(:mod:`extauthz.server.shutdown`), and the supervisor exits when all of them have.

Each worker has one pipe (``multiprocessing.Pipe``) to the supervisor, carrying one byte per
message: the worker sends :data:`READY` once its servers serve; the supervisor sends
:data:`ALL_UP` or :data:`NOT_ALL_UP` whenever that changes. :class:`WorkerLink`, the worker's
end, gives gRPC health the answer (``NOT_SERVING`` on every worker while any worker is down);
when the supervisor's end closes (the supervisor is gone), the worker drains as on SIGTERM.

With ``prometheus_client`` installed, the workers write their metrics to a fresh private
directory (``PROMETHEUS_MULTIPROC_DIR``, the library's multiprocess mode), which the supervisor
tidies when a worker exits (``mark_process_dead``) and removes at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from typing import Any

log = logging.getLogger("extauthz.workers")

READY, ALL_UP, NOT_ALL_UP = b"R", b"U", b"D"
METRICS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"
SETTINGS_ERROR_EXIT = 2
"""A worker's exit status for a settings error (as ``extauthz serve``'s): the supervisor stops
the node instead of starting it again."""


class WorkerLink:
    """A worker's end of its pipe to the supervisor (module docstring), and the listening
    HTTP socket the supervisor bound for every worker (``server.http_listen``).

    :attr:`all_up` is False until the supervisor says every worker serves; callbacks given to
    :meth:`subscribe` run on the worker's event loop after each change.
    """

    def __init__(self, index: int, conn: Connection, http_socket: socket.socket) -> None:
        self.index = index
        self.http_socket = http_socket
        self.all_up = False
        self._conn = conn
        self._callbacks: list[Callable[[], Awaitable[object]]] = []
        self._tasks: set[asyncio.Future[object]] = set()
        self._reading = False

    def subscribe(self, changed: Callable[[], Awaitable[object]]) -> None:
        """Call ``changed`` after every change of :attr:`all_up`; starts reading the pipe on
        the running event loop (call it from the loop)."""
        self._callbacks.append(changed)
        if not self._reading:
            self._reading = True
            asyncio.get_running_loop().add_reader(self._conn.fileno(), self._readable)

    def ready(self) -> None:
        """Tell the supervisor that this worker serves."""
        try:
            self._conn.send_bytes(READY)
        except OSError as exc:  # the supervisor is gone: the reader drains this worker
            log.warning("worker %d: cannot tell the supervisor it serves: %s", self.index, exc)

    def _readable(self) -> None:
        try:
            message = self._conn.recv_bytes()
        except (EOFError, OSError):
            asyncio.get_running_loop().remove_reader(self._conn.fileno())
            log.warning("worker %d: the supervisor is gone; draining", self.index)
            os.kill(os.getpid(), signal.SIGTERM)  # the node's own shutdown (app.serve)
            return
        all_up = message == ALL_UP
        if all_up == self.all_up:
            return
        self.all_up = all_up
        for changed in self._callbacks:
            task = asyncio.ensure_future(changed())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)


@dataclass
class _Slot:
    """One worker place: the process in it now, and its restart backoff."""

    index: int
    process: BaseProcess | None = None
    conn: Connection | None = None
    up: bool = False
    closed: bool = False  # the worker's end of the pipe closed: it is exiting
    started: float = 0.0
    delay: float = 0.0
    restart_at: float | None = None


class Supervisor:
    """Runs ``count`` workers until SIGTERM or SIGINT (module docstring).

    ``target(index, conn, *args_for(index))`` is the worker's entry point, run in a spawned
    process (a module-level function: it is pickled by name; ``args_for``'s values are
    pickled, sockets and connections included). ``stop_within``: seconds the workers get to
    drain before they are killed (SIGKILL). ``backoff``: the first and the longest wait
    (seconds) before a dead worker is started again; the wait doubles while workers die
    sooner than the longest wait after their start.
    """

    def __init__(
        self,
        count: int,
        target: Callable[..., Any],
        args_for: Callable[[int], Sequence[Any]],
        *,
        stop_within: float,
        backoff: tuple[float, float] = (0.5, 30.0),
    ) -> None:
        self._count = count
        self._target = target
        self._args_for = args_for
        self._stop_within = stop_within
        self._backoff = backoff
        self._context = multiprocessing.get_context("spawn")
        self._slots = [_Slot(i, delay=backoff[0]) for i in range(count)]
        self._all_up = False
        self._signal: int | None = None
        self._exit_code = 0
        self._metrics_dir = ""

    def run(self) -> int:
        """Start the workers, keep them running, drain them on SIGTERM/SIGINT; the exit code
        (0 after a clean drain; 2 when a worker stopped on a settings error; 1 when a worker
        had to be killed)."""
        self._metrics_dir = tempfile.mkdtemp(prefix="extauthz-metrics-")
        os.environ[METRICS_DIR_ENV] = self._metrics_dir  # the workers inherit it
        wake_r, wake_w = socket.socketpair()
        wake_r.setblocking(False)
        wake_w.setblocking(False)
        previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        previous_fd = signal.set_wakeup_fd(wake_w.fileno(), warn_on_full_buffer=False)
        try:
            log.info("supervisor pid=%d: starting %d workers", os.getpid(), self._count)
            for slot in self._slots:
                self._start(slot)
            while self._signal is None and not self._exit_code:
                self._step(wake_r)
            if self._signal is not None:
                log.info("signal %d: draining %d workers", self._signal, self._count)
            self._drain()
            return self._exit_code
        finally:
            signal.set_wakeup_fd(previous_fd)
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            wake_r.close()
            wake_w.close()
            shutil.rmtree(self._metrics_dir, ignore_errors=True)

    def _on_signal(self, signum: int, frame: object) -> None:
        if self._signal is None:
            self._signal = signum

    def _start(self, slot: _Slot) -> None:
        parent, child = self._context.Pipe()
        process = self._context.Process(
            target=self._target, args=(slot.index, child, *self._args_for(slot.index)),
            name=f"extauthz-w{slot.index}", daemon=False,
        )  # fmt: skip
        process.start()
        child.close()
        slot.process, slot.conn, slot.up, slot.closed = process, parent, False, False
        slot.started, slot.restart_at = time.monotonic(), None
        log.info("worker %d started (pid %s)", slot.index, process.pid)

    def _step(self, wake: socket.socket) -> None:
        due = [s.restart_at for s in self._slots if s.restart_at is not None]
        timeout = max(min(due) - time.monotonic(), 0.0) if due else None
        waitables: list[Any] = [wake]
        for slot in self._slots:
            if slot.process is not None:
                waitables.append(slot.process.sentinel)
            if slot.conn is not None and not slot.closed:
                waitables.append(slot.conn)
        ready = wait(waitables, timeout)
        if wake in ready:
            try:
                while wake.recv(64):
                    pass
            except BlockingIOError:
                pass
        for slot in self._slots:
            if slot.conn is not None and slot.conn in ready:
                self._receive(slot)
            if slot.process is not None and slot.process.sentinel in ready:
                self._exited(slot)
        now = time.monotonic()
        for slot in self._slots:
            if slot.restart_at is not None and slot.restart_at <= now and not self._exit_code:
                self._start(slot)

    def _receive(self, slot: _Slot) -> None:
        assert slot.conn is not None
        try:
            message = slot.conn.recv_bytes()
        except (EOFError, OSError):
            slot.closed = True  # the worker is exiting: its sentinel says so
            return
        if message == READY and not slot.up:
            slot.up = True
            log.info("worker %d serves", slot.index)
            self._tell_all()

    def _exited(self, slot: _Slot) -> None:
        assert slot.process is not None and slot.conn is not None
        slot.process.join()
        code, pid = slot.process.exitcode, slot.process.pid
        slot.conn.close()
        slot.process, slot.conn, slot.up = None, None, False
        self._tell_all()
        self._forget_metrics(pid)
        if code == SETTINGS_ERROR_EXIT:
            log.error("worker %d (pid %s) stopped on a settings error; stopping", slot.index, pid)
            self._exit_code = SETTINGS_ERROR_EXIT
            return
        first, longest = self._backoff
        if time.monotonic() - slot.started >= longest:
            slot.delay = first  # it ran a good while: start again at the first wait
        slot.restart_at = time.monotonic() + slot.delay
        log.warning(
            "worker %d (pid %s) exited with %s; starting it again in %.1fs",
            slot.index, pid, code, slot.delay,
        )  # fmt: skip
        slot.delay = min(slot.delay * 2, longest)

    def _tell_all(self) -> None:
        """Send ALL_UP / NOT_ALL_UP to every worker when that changed."""
        all_up = all(slot.up for slot in self._slots)
        if all_up == self._all_up:
            return
        self._all_up = all_up
        log.info("workers: %s", "all serve" if all_up else "not all serve: NOT_SERVING")
        for slot in self._slots:
            self._send(slot, ALL_UP if all_up else NOT_ALL_UP)

    @staticmethod
    def _send(slot: _Slot, message: bytes) -> None:
        if slot.conn is not None:
            with contextlib.suppress(OSError):  # the worker is exiting: its sentinel says so
                slot.conn.send_bytes(message)

    def _drain(self) -> None:
        """SIGTERM to every worker; wait up to ``stop_within`` seconds; SIGKILL the rest."""
        live = [s for s in self._slots if s.process is not None]
        for slot in live:
            assert slot.process is not None and slot.process.pid is not None
            with contextlib.suppress(ProcessLookupError):  # exited meanwhile
                os.kill(slot.process.pid, signal.SIGTERM)
        deadline = time.monotonic() + self._stop_within
        for slot in live:
            assert slot.process is not None
            slot.process.join(max(deadline - time.monotonic(), 0.0))
            if slot.process.exitcode is None:
                log.error("worker %d did not drain in time: killing it", slot.index)
                slot.process.kill()
                slot.process.join()
                self._exit_code = self._exit_code or 1
            elif slot.process.exitcode not in (0, -signal.SIGTERM):
                log.warning("worker %d exited with %s", slot.index, slot.process.exitcode)
                self._exit_code = self._exit_code or 1
            self._forget_metrics(slot.process.pid)
            if slot.conn is not None:
                slot.conn.close()
        log.info("supervisor: every worker stopped")

    def _forget_metrics(self, pid: int | None) -> None:
        try:
            from prometheus_client import multiprocess
        except ImportError:
            return
        if pid is not None:
            multiprocess.mark_process_dead(pid, self._metrics_dir)  # type: ignore[no-untyped-call]

