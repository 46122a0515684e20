"""What the benchmark measures with: HTTP probes, Envoy's and Redis' counters, CPU time from
``/proc``, and wrk (run and report parsing)."""

from __future__ import annotations

import argparse
import contextlib
import http.client
import os
import re
import resource
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.scenarios import BenchError
from harness.envoy import EnvoyProcess
from harness.ports import LOOPBACK
from harness.redis import RedisServer

CLK_TCK = os.sysconf("SC_CLK_TCK")


# -- probes -----------------------------------------------------------------------------------


def http_get(
    port: int, path: str = "/", bearer: str | None = None
) -> tuple[int, bytes, list[tuple[str, str]]]:
    """``(status, body, headers)`` of one GET."""
    conn = http.client.HTTPConnection(LOOPBACK, port, timeout=5)
    try:
        headers = {"Authorization": f"Bearer {bearer}"} if bearer is not None else {}
        conn.request("GET", path, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read(), resp.getheaders()
    finally:
        conn.close()


def envoy_counters(envoy: EnvoyProcess) -> dict[str, int]:
    status, body = envoy.admin_get("/stats?filter=^http\\.bench_", timeout=5)
    if status != 200:
        raise BenchError(f"Envoy admin /stats answered {status}")
    counters: dict[str, int] = {}
    for line in body.splitlines():
        name, sep, value = line.partition(": ")
        if sep and value.strip().isdigit():
            counters[name] = int(value)
    return counters


def redis_commands(redis: RedisServer) -> int:
    import redis as redis_py

    client = redis_py.Redis(host=LOOPBACK, port=redis.port, socket_timeout=5)
    try:
        return int(client.info("stats")["total_commands_processed"])
    finally:
        client.close()


def cpu_seconds(pid: int) -> float:
    """utime + stime of every thread of ``pid`` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # fields 14 and 15 of stat(5)


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants (from ``/proc/<pid>/task/<tid>/children``), parents first;
    processes that exit meanwhile are left out."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop(0)
        found.append(current)
        try:
            tasks = list(Path(f"/proc/{current}/task").iterdir())
        except OSError:
            continue
        for task in tasks:
            with contextlib.suppress(OSError):
                todo += [int(c) for c in (task / "children").read_text().split()]
    return found


def process_role(pid: int, root: int) -> str:
    """``main`` (the process started), ``helper`` (multiprocessing's resource tracker, which
    the ``spawn`` start method runs beside the workers) or ``worker``."""
    if pid == root:
        return "main"
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return "worker"
    return "helper" if b"resource_tracker" in cmdline else "worker"


def tree_cpu_seconds(pid: int) -> float:
    """:func:`cpu_seconds` of ``pid`` and of each of its descendants (a supervisor and its
    workers) that still runs."""
    total = 0.0
    for p in process_tree(pid):
        with contextlib.suppress(OSError):
            total += cpu_seconds(p)
    return total


def machine_busy_seconds() -> float:
    """CPU time spent by every process on the machine so far (all CPUs, not idle/iowait)."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return (sum(values[:8]) - values[3] - values[4]) / CLK_TCK


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


# -- wrk --------------------------------------------------------------------------------------

_UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if not match:
        raise BenchError(f"wrk: cannot read the latency {text!r}")
    return float(match.group(1)) * _UNIT_MS[match.group(2)]


def parse_wrk(out: str) -> dict[str, Any]:
    """requests/s, latency percentiles (ms), request and error counts from wrk's report."""
    result: dict[str, Any] = {"non_2xx": 0, "socket_errors": 0}
    match = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if not match:
        raise BenchError(f"wrk: no Requests/sec in its output:\n{out}")
    result["rps"] = float(match.group(1))
    match = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m)", out)
    if not match:
        raise BenchError(f"wrk: no request count in its output:\n{out}")
    result["requests"] = int(match.group(1))
    result["elapsed_s"] = _ms(match.group(2) + match.group(3)) / 1000
    for pct in ("50", "75", "90", "99"):
        match = re.search(rf"^\s+{pct}%\s+(\S+)\s*$", out, re.M)  # "1.29s " ends in a space
        if not match:
            raise BenchError(f"wrk: no {pct}% latency in its output (run with --latency):\n{out}")
        result[f"p{pct}_ms"] = _ms(match.group(1))
    match = re.search(r"^\s+Latency\s+(\S+)\s+(\S+)\s+(\S+)", out, re.M)
    if match:
        result["avg_ms"], result["max_ms"] = _ms(match.group(1)), _ms(match.group(3))
    match = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    if match:
        result["non_2xx"] = int(match.group(1))
    match = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if match:
        result["socket_errors"] = sum(int(g) for g in match.groups())
    return result


# wrk's request hook: each request carries the next of several bearer tokens, round robin
_ROUND_ROBIN_LUA = """
tokens = {%s}
counter = 0
request = function()
  counter = counter + 1
  return wrk.format(nil, nil, {["Authorization"] = "Bearer " .. tokens[counter %% #tokens + 1]})
end
"""
# wrk's summary hook: the latency distribution (microseconds) at the percentiles of SPECTRUM
_PERCENTILES_LUA = """
done = function(summary, latency, requests)
  for _, p in ipairs({%s}) do
    io.write(string.format("percentile %%s %%d\\n", p, latency:percentile(p)))
  end
  io.write(string.format("percentile 0 %%d\\npercentile 100 %%d\\n", latency.min, latency.max))
end
"""
# the percentiles a latency distribution is reported at (the plots' x axis)
SPECTRUM = (0.0, 10.0, 25.0, 50.0, 75.0, 90.0, 95.0, 99.0, 99.5, 99.9, 99.95, 99.99)


# what a browser's fetch() from a page of the same site sends besides its credential (a recent
# Chrome's headers; no cookie): every scenario's request carries them, so that a CheckRequest
# holds what it would in production (ext_authz_all_headers: all of them)
BROWSER_HEADERS = (
    "User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36",
    "Accept: application/json, text/plain, */*",
    "Accept-Language: en-GB,en-US;q=0.9,en;q=0.8",
    "Accept-Encoding: gzip, deflate, br, zstd",
    'Sec-Ch-Ua: "Chromium";v="131", "Not_A Brand";v="24"',
    "Sec-Ch-Ua-Mobile: ?0",
    'Sec-Ch-Ua-Platform: "Linux"',
    "Sec-Fetch-Site: same-origin",
    "Sec-Fetch-Mode: cors",
    "Sec-Fetch-Dest: empty",
    "Referer: http://127.0.0.1/app/orders?page=2",
    "Priority: u=1, i",
)


def h2load_headers() -> list[str]:
    """h2load's ``-H`` arguments for :data:`BROWSER_HEADERS` (HTTP/2: names in lower case)."""
    argv = []
    for line in BROWSER_HEADERS:
        name, _, value = line.partition(": ")
        argv += ["-H", f"{name.lower()}: {value}"]
    return argv


def run_wrk(
    args: argparse.Namespace,
    port: int,
    bearer: str | Sequence[str],
    duration: int,
    *,
    connections: int | None = None,
    percentiles: bool = False,
) -> str:
    """wrk against ``port`` with one bearer token, or several taken in turn (a Lua hook), and
    :data:`BROWSER_HEADERS`; ``percentiles``: also print ``percentile P MICROSECONDS`` lines
    (:func:`parse_percentiles`).
    """
    conns = args.connections if connections is None else connections
    threads = min(args.threads, conns)
    argv = [
        args.wrk, f"-t{threads}", f"-c{conns}", f"-d{duration}s", "--latency",
        "--timeout", "5s",
    ]  # fmt: skip
    for line in BROWSER_HEADERS:
        argv += ["-H", line]
    lua = ""
    if isinstance(bearer, str):
        argv += ["-H", f"Authorization: Bearer {bearer}"]
    else:
        lua += _ROUND_ROBIN_LUA % ", ".join(f'"{t}"' for t in bearer)
    if percentiles:
        lua += _PERCENTILES_LUA % ", ".join(repr(p) for p in SPECTRUM[1:])
    with tempfile.NamedTemporaryFile("w", suffix=".lua", prefix="wrk-") as script:
        if lua:
            script.write(lua)
            script.flush()
            argv += ["-s", script.name]
        argv.append(f"http://{LOOPBACK}:{port}/")
        proc = subprocess.run(
            argv, capture_output=True, text=True, timeout=duration + 30, check=False
        )
    if proc.returncode != 0:
        raise BenchError(f"wrk exited {proc.returncode}: {proc.stderr.strip()}")
    return proc.stdout


def parse_percentiles(out: str) -> dict[float, float]:
    """``{percentile: milliseconds}`` from the ``percentile P MICROSECONDS`` lines of
    :func:`run_wrk`'s output (0: the minimum, 100: the maximum)."""
    found = {
        float(m.group(1)): int(m.group(2)) / 1000.0
        for m in re.finditer(r"^percentile ([\d.]+) (\d+)$", out, re.M)
    }
    if not found:
        raise BenchError(f"wrk: no percentiles in its output:\n{out}")
    return found
