"""Stopping the demo (demo/run_demo.py, `make demo`) at any moment stops every process it
started: SIGTERM (what make forwards) or SIGINT to its process group (Ctrl-C in a terminal,
sometimes with its output pipe gone too, as with ``make demo | tee`` where Ctrl-C ends tee)
at random moments of its start-up, many times; afterwards no process it started is left and
every port it uses is free. And a program using the harness without a SIGTERM handler of its
own (pytest, the benchmark) stops its processes on SIGTERM too.

The demo runs on its own ports (``--port-offset``) and state directory (``--state-dir``).
Its processes are found by a marker in their environment, which every child inherits, not by
what the demo reports: a process the demo lost track of is found too.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support import LOOPBACK, REPO_ROOT, port_accepts, redis_binary, wait_until

DEMO = REPO_ROOT / "demo" / "run_demo.py"
MARK = "EXTAUTHZ_DEMO_TEST_RUN"
DEFAULT_PORTS = (8080, 9901, 9001, 9002, 9003, 6390)
PIPE_GONE = "SIGINT to the group, output pipe gone"
HOW = ("SIGTERM", "SIGINT to the group", PIPE_GONE)
RUNS = int(os.environ.get("EXTAUTHZ_DEMO_STOP_RUNS", 8))


def marked_processes(mark: str, under: Path) -> list[int]:
    """PIDs of the processes whose environment carries ``MARK=mark`` or whose working
    directory is inside ``under`` (redis-server writes its title over its environment)."""
    needle = f"{MARK}={mark}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
            cwd = Path(os.readlink(entry / "cwd"))
        except OSError:
            continue
        if needle in environ.split(b"\0") or cwd.is_relative_to(under):
            found.append(int(entry.name))
    return found


def bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((LOOPBACK, port))
        except OSError:
            return False
    return True


def free_offset(rng: random.Random) -> int:
    """An offset that puts every demo port on a free port below the ephemeral range."""
    for _ in range(50):
        offset = rng.randrange(10000, 22000, 10)
        if all(bindable(port + offset) for port in DEFAULT_PORTS):
            return offset
    pytest.skip("no block of free ports for the demo")


def marked_env(mark: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EXTAUTHZ_")}
    env[MARK] = mark
    return env


def run_demo(
    state: Path, offset: int, mark: str, log: Path, stdout: int | None = None
) -> subprocess.Popen[bytes]:
    """The demo, its output in ``log`` (stdout to the ``stdout`` descriptor when given)."""
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, str(DEMO), "--state-dir", str(state), "--port-offset", str(offset)],
            stdin=subprocess.DEVNULL, stdout=out if stdout is None else stdout,
            stderr=subprocess.STDOUT if stdout is None else out, env=marked_env(mark),
            cwd=REPO_ROOT, start_new_session=True,
        )  # fmt: skip


def kill_marked(mark: str, under: Path) -> None:
    for pid in marked_processes(mark, under):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def running(log: Path, demo: subprocess.Popen[bytes]) -> Callable[[], bool]:
    return lambda: b"demo is running" in log.read_bytes() or demo.poll() is not None


@pytest.mark.e2e
def test_signals_at_random_moments_of_start_up_leave_nothing_running(tmp_path: Path) -> None:
    if redis_binary() is None:
        pytest.skip("redis-server is not on PATH")
    seed = int(os.environ.get("EXTAUTHZ_TEST_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    state = tmp_path / "demo"
    started_in = 0.0
    for run in range(RUNS):
        mark = uuid.uuid4().hex
        offset = free_offset(rng)
        log = tmp_path / f"demo-{run}.log"
        # the first run starts fully: how long start-up takes here; the others are signalled
        # at a random moment of it (key generation and the user are kept from the first run)
        delay = rng.uniform(0.0, started_in * 1.2) if run else None
        how = rng.choice(HOW) if run else "SIGTERM"
        what = f"run {run}: {how} after {delay}s (EXTAUTHZ_TEST_SEED={seed})"
        t0 = time.monotonic()
        read_end, write_end = os.pipe() if how == PIPE_GONE else (-1, -1)
        demo = run_demo(state, offset, mark, log, stdout=write_end if read_end >= 0 else None)
        if read_end >= 0:
            os.close(write_end)
        try:
            if delay is None:
                wait_until(running(log, demo), timeout=90, description="the demo to run")
                started_in = time.monotonic() - t0
            else:
                time.sleep(delay)
            if read_end >= 0:
                os.close(read_end)  # the demo's next line of output meets a broken pipe
                read_end = -1
            if how == "SIGTERM":
                demo.send_signal(signal.SIGTERM)
            else:
                os.killpg(demo.pid, signal.SIGINT)
            try:
                status = demo.wait(60)
            except subprocess.TimeoutExpired:
                pytest.fail(f"{what}: the demo did not exit\n{log.read_text()}")
            output = log.read_text()
            # a signal before Python runs the demo's first line ends it before it did anything
            assert status == 0 or (delay or 0) < 0.2 and "demo:" not in output, (
                f"{what}: exit status {status}\n{output}"
            )
            left = marked_processes(mark, tmp_path)
            assert not left, f"{what}: left running: {left}\n{output}"
            taken = [p + offset for p in DEFAULT_PORTS if port_accepts(p + offset)]
            assert not taken, f"{what}: ports still taken: {taken}\n{output}"
        finally:
            if read_end >= 0:
                os.close(read_end)
            if demo.poll() is None:
                demo.kill()
                demo.wait(10)
            kill_marked(mark, tmp_path)


HARNESS_USER = """
import sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from harness.redis import RedisServer
redis = RedisServer(Path(sys.argv[2])).start()
print(redis.pid, flush=True)
time.sleep(60)
"""


@pytest.mark.e2e
def test_sigterm_to_a_harness_user_without_a_handler_stops_its_processes(
    tmp_path: Path,
) -> None:
    if redis_binary() is None:
        pytest.skip("redis-server is not on PATH")
    mark = uuid.uuid4().hex
    user = subprocess.Popen(
        [sys.executable, "-c", HARNESS_USER, str(REPO_ROOT), str(tmp_path)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=marked_env(mark),
        start_new_session=True,
    )  # fmt: skip
    try:
        assert user.stdout is not None
        redis_pid = int(user.stdout.readline())
        assert redis_pid in marked_processes(mark, tmp_path)
        user.send_signal(signal.SIGTERM)
        user.wait(30)
        assert not marked_processes(mark, tmp_path), "redis-server left running after SIGTERM"
    finally:
        if user.poll() is None:
            user.kill()
            user.wait(10)
        if user.stdout is not None:
            user.stdout.close()
        kill_marked(mark, tmp_path)
