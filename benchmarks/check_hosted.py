"""Where a cached Check's CPU goes once grpc.aio hosts it: the no-op server against extauthz's
pipeline, without Envoy.

    .venv/bin/python -m benchmarks.check_hosted [--calls 20000] [--concurrency 32] [--rounds 2]

(``tests/e2e/test_check_hosted.py`` runs it with a few calls.)

Each variant is a ``grpc.aio`` server in a process of its own on a free loopback port, driven by
one ``grpc.aio`` client (this process) with ``--concurrency`` calls in flight, the same
``CheckRequest`` bytes every time (:func:`benchmarks.check_loop.pipeline`: Bearer token, a few
headers):

* ``no-op``: answers a prebuilt OK ``CheckResponse`` (``benchmarks/noop_authz.py``'s);
* ``no-op, extauthz-sized``: answers a prebuilt copy of extauthz's own response to that
  request (the JWT header mutation and the dynamic metadata): what the response's size costs;
* ``extauthz``: the composition root's ``AuthorizationServicer.Check`` on an in-memory store
  (:mod:`benchmarks.check_loop`'s set-up); the server also counts the CPU time of its own
  thread spent inside ``Check`` (``time.thread_time``), which is what the pipeline costs
  where grpc's callbacks run between the calls.

Printed per variant and round: calls per second, the server's CPU time per call
(``/proc/PID/stat``) and, for extauthz, the part of it inside ``Check``; then
``check_loop``'s figure for the same pipeline called back to back in one coroutine. The
difference between the two ``Check`` figures is the cost of running the pipeline cold
(docs/benchmarks.md, 'Where the rest goes').
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import grpc  # noqa: E402
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc  # noqa: E402

from benchmarks.check_loop import _Context, pipeline  # noqa: E402
from benchmarks.probes import cpu_seconds  # noqa: E402
from harness.ports import free_port  # noqa: E402

VARIANTS = ("noop", "noop_sized", "extauthz")
LABELS = {"noop": "no-op", "noop_sized": "no-op, extauthz-sized response",
          "extauthz": "extauthz (in-memory store)"}  # fmt: skip
READY_SECONDS = 30.0


class _Prebuilt:
    """A Check that answers one prebuilt response."""

    def __init__(self, response: Any) -> None:
        self._response = response

    async def Check(self, request: Any, context: Any) -> Any:
        return self._response


class _Timed:
    """extauthz's Check, with the CPU time of this thread spent inside it."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.calls = 0
        self.thread_ns = 0

    async def Check(self, request: Any, context: Any) -> Any:
        started = time.thread_time_ns()
        response = await self._inner.Check(request, context)
        self.thread_ns += time.thread_time_ns() - started
        self.calls += 1
        return response


async def _serve(variant: str, port: int, work: Path) -> None:
    servicer, wire = await pipeline()
    (work / "request.bin").write_bytes(wire)
    timed: _Timed | None = None
    if variant == "extauthz":
        timed = _Timed(servicer)
        handler: Any = timed
    elif variant == "noop_sized":
        request = external_auth_pb2.CheckRequest.FromString(wire)
        handler = _Prebuilt(await servicer.Check(request, _Context()))
    else:
        ok = external_auth_pb2.CheckResponse()
        ok.ok_response.SetInParent()
        handler = _Prebuilt(ok)
    server = grpc.aio.server()
    external_auth_pb2_grpc.add_AuthorizationServicer_to_server(handler, server)
    if server.add_insecure_port(f"127.0.0.1:{port}") == 0:
        raise SystemExit(f"check_hosted: cannot bind port {port}")
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGUSR1, lambda: _report(timed, work))
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    (work / "ready").write_text("1")
    await stop.wait()
    await server.stop(0)


def _report(timed: _Timed | None, work: Path) -> None:
    """Write the in-Check counters and reset them (SIGUSR1 from the client)."""
    figures = {"calls": timed.calls, "thread_ns": timed.thread_ns} if timed else {}
    (work / "in_check.json.tmp").write_text(json.dumps(figures))
    (work / "in_check.json.tmp").replace(work / "in_check.json")
    if timed:
        timed.calls = timed.thread_ns = 0


async def _drive(port: int, wire: bytes, calls: int, concurrency: int, pid: int) -> dict[str, Any]:
    request = external_auth_pb2.CheckRequest.FromString(wire)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = external_auth_pb2_grpc.AuthorizationStub(channel)

        async def caller(count: int) -> None:
            for _ in range(count):
                response = await stub.Check(request, timeout=5)
                if response.status.code != 0:
                    raise SystemExit(f"check_hosted: the Check did not allow: {response}")

        await asyncio.gather(*(caller(200) for _ in range(concurrency)))  # warm-up
        per_caller = max(calls // concurrency, 1)
        cpu, started = cpu_seconds(pid), time.monotonic()
        await asyncio.gather(*(caller(per_caller) for _ in range(concurrency)))
        wall, cpu = time.monotonic() - started, cpu_seconds(pid) - cpu
    done = per_caller * concurrency
    return {"calls_per_second": done / wall, "server_cpu_us": cpu / done * 1e6, "calls": done}


def _in_check(proc: subprocess.Popen[bytes], work: Path) -> dict[str, int]:
    (work / "in_check.json").unlink(missing_ok=True)
    proc.send_signal(signal.SIGUSR1)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if (work / "in_check.json").exists():
            return dict(json.loads((work / "in_check.json").read_text()))
        time.sleep(0.05)
    raise SystemExit("check_hosted: the server did not report its in-Check time")


def _measure(variant: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    work = Path(tempfile.mkdtemp(prefix=f"check-hosted-{variant}-"))
    port = free_port()
    argv = [sys.executable, "-m", "benchmarks.check_hosted", "--serve", variant,
            "--port", str(port), "--work", str(work)]  # fmt: skip
    proc = subprocess.Popen(argv, cwd=REPO)
    try:
        deadline = time.monotonic() + READY_SECONDS
        while not (work / "ready").exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"check_hosted: the {variant} server did not start")
            time.sleep(0.1)
        wire = (work / "request.bin").read_bytes()
        rounds = []
        for _ in range(args.rounds):
            _in_check(proc, work)  # reset: the warm-up is not counted
            result = asyncio.run(_drive(port, wire, args.calls, args.concurrency, proc.pid))
            counted = _in_check(proc, work)
            if counted.get("calls"):
                result["in_check_us"] = counted["thread_ns"] / counted["calls"] / 1000
            rounds.append(result)
        return rounds
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=20_000, help="measured calls per round")
    parser.add_argument("--concurrency", type=int, default=32, help="calls in flight")
    parser.add_argument("--rounds", type=int, default=2, help="measured rounds per variant")
    parser.add_argument("--loop-calls", type=int, default=14_000,
                        help="calls of the back-to-back comparison (check_loop)")
    parser.add_argument("--serve", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        asyncio.run(_serve(args.serve, args.port, args.work))
        return 0
    if args.calls < args.concurrency or args.rounds < 1 or args.loop_calls < 7:
        parser.error("--calls must be at least --concurrency, --rounds at least 1, "
                     "--loop-calls at least 7")
    print(f"{'variant':34} {'calls/s':>8} {'server CPU µs/call':>19} {'in Check µs':>12}")
    for variant in VARIANTS:
        for result in _measure(variant, args):
            in_check = result.get("in_check_us")
            print(f"{LABELS[variant]:34} {result['calls_per_second']:8.0f} "
                  f"{result['server_cpu_us']:19.0f} "
                  f"{'' if in_check is None else f'{in_check:.0f}':>12}")  # fmt: skip
    from benchmarks.check_loop import run

    fastest, median = asyncio.run(run(args.loop_calls))
    print(f"extauthz's Check back to back in one coroutine (check_loop): {fastest:.0f} µs CPU "
          f"(fastest batch), median {median:.0f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
