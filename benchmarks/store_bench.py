"""Session store figures: Redis memory and keys per session, session creations per second.

Starts a ``redis-server`` of its own on a free port (no persistence), creates ``--sessions``
sessions with the default fields (a subject, no scopes, roles or data; the default idle and
absolute timeouts) through the real code (``SessionManager.create`` on ``RedisSessionStore``)
from ``--concurrency`` coroutines of one event loop, and prints:

* bytes per session: the growth of ``INFO memory`` ``used_memory`` divided by the count;
* keys per session: the growth of ``DBSIZE`` divided by the count;
* ``MEMORY USAGE`` of each key of one session (what Redis charges per key, samples 0);
* creations per second (wall clock over all creations, one Python process), and the CPU
  time per creation of that process and of redis-server (a shared machine stretches the
  wall clock; the CPU time says what one core each would do);
* creations per second of one node: ``--processes`` (default: the CPU count, as
  ``server.workers = "auto"``) processes creating at once on the same Redis, each like the
  one above (``--processes 1``: not measured).

``--sessions-per-subject`` spreads the sessions over fewer subjects (default 1: every session
its own subject, the dearest case: no two sessions share a tag). ``--json OUT`` writes the figures.

    python benchmarks/store_bench.py [--sessions 100000] [--processes N] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import redis.asyncio as aioredis  # noqa: E402

from extauthz.store.manager import SessionManager  # noqa: E402
from extauthz.store.redis.store import RedisSessionStore  # noqa: E402
from harness.redis import RedisServer  # noqa: E402

PREFIX = "extauthz:"  # store.key_prefix's default
IDLE_TIMEOUT = 1800  # session.idle_timeout_seconds's default
ABSOLUTE_TIMEOUT = 43200  # session.absolute_timeout_seconds's default


def _session_manager(client: aioredis.Redis) -> SessionManager:
    """Sessions with the default timeouts on a ``RedisSessionStore`` over ``client``."""
    return SessionManager(
        RedisSessionStore(client, PREFIX),
        idle_timeout=IDLE_TIMEOUT, absolute_timeout=ABSOLUTE_TIMEOUT,
    )  # fmt: skip


async def _used_memory(client: aioredis.Redis) -> int:
    return int((await client.info("memory"))["used_memory"])


async def _create_all(
    sessions: SessionManager, count: int, per_subject: int, concurrency: int, first_n: int = 0
) -> tuple[float, list[str]]:
    """Create ``count`` sessions from ``concurrency`` coroutines (subjects numbered from
    ``first_n``); return the seconds taken and the subjects of the first sessions (for the
    per-key sample)."""
    queue = iter(range(first_n, first_n + count))
    first: list[str] = []

    async def worker() -> None:
        for n in queue:
            sub = f"user-{n // per_subject:08d}@example.com"
            await sessions.create(sub)
            if n == first_n:
                first.append(sub)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - started, first


async def _redis_cpu(client: aioredis.Redis) -> float:
    info = await client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


async def _key_usage(client: aioredis.Redis) -> dict[str, int]:
    """``MEMORY USAGE`` of the keys of one session, by the key name with ids blanked."""
    usage: dict[str, int] = {}
    async for key in client.scan_iter(match=f"{PREFIX}*", count=1000):
        name = key.decode()
        kind = re.sub(r"\{[^}]*\}", "{t}", name[len(PREFIX) :].split(":")[0])
        if kind in usage or "invalidate" in kind:
            continue
        usage[kind] = int(await client.memory_usage(key, samples=0) or 0)
        if len(usage) >= 8:
            break
    return usage


async def measure(url: str, count: int, per_subject: int, concurrency: int) -> dict[str, Any]:
    client = aioredis.Redis.from_url(url, max_connections=concurrency + 4)
    try:
        sessions = _session_manager(client)
        await sessions.create("warm-up")  # connections, scripts, the seq key
        await client.delete(*[k async for k in client.scan_iter(match=f"{PREFIX}*")])
        memory_before, keys_before = await _used_memory(client), int(await client.dbsize())
        redis_cpu, cpu = await _redis_cpu(client), time.process_time()
        seconds, _ = await _create_all(sessions, count, per_subject, concurrency)
        cpu, redis_cpu = time.process_time() - cpu, await _redis_cpu(client) - redis_cpu
        memory_after, keys_after = await _used_memory(client), int(await client.dbsize())
        return {
            "sessions": count,
            "sessions_per_subject": per_subject,
            "concurrency": concurrency,
            "bytes_per_session": round((memory_after - memory_before) / count, 1),
            "keys_per_session": round((keys_after - keys_before) / count, 2),
            "creates_per_second": round(count / seconds),
            # CPU per creation: what the rate would be with a core each (a loaded machine
            # stretches the wall clock, not these)
            "python_cpu_us_per_create": round(cpu / count * 1e6, 1),
            "redis_cpu_us_per_create": round(redis_cpu / count * 1e6, 1),
            "memory_usage_per_key": await _key_usage(client),
            "redis_version": (await client.info("server"))["redis_version"],
        }
    finally:
        await client.aclose()


async def _node_share(
    url: str, start_at: float, first_n: int, count: int, per_subject: int, concurrency: int
) -> tuple[float, float, float]:
    client = aioredis.Redis.from_url(url, max_connections=concurrency + 4)
    try:
        sessions = _session_manager(client)
        await sessions.create(f"warm-up-{first_n}")
        await asyncio.sleep(max(0.0, start_at - time.time()))
        started, cpu = time.time(), time.process_time()
        await _create_all(sessions, count, per_subject, concurrency, first_n)
        return started, time.time(), time.process_time() - cpu
    finally:
        await client.aclose()


def _node_process(url: str, start_at: float, first_n: int, count: int, per_subject: int,
                  concurrency: int) -> tuple[float, float, float]:  # fmt: skip
    """One process of a node (a ``server.workers`` worker's share of the creations)."""
    return asyncio.run(_node_share(url, start_at, first_n, count, per_subject, concurrency))


def measure_node(
    url: str, count: int, per_subject: int, concurrency: int, processes: int
) -> dict[str, Any]:
    """``processes`` processes create ``count`` sessions between them, all starting at once
    (after their connections and scripts are warm); creations per second over the span from
    the first start to the last finish."""
    share = count // processes
    with ProcessPoolExecutor(processes, mp_context=get_context("spawn")) as pool:
        start_at = time.time() + 5.0  # after every process has started and warmed up
        runs = list(pool.map(
            _node_process, [url] * processes, [start_at] * processes,
            [10**9 + i * share for i in range(processes)], [share] * processes,
            [per_subject] * processes, [concurrency] * processes,
        ))  # fmt: skip
    if any(started > start_at + 1.0 for started, _, _ in runs):
        raise SystemExit("store_bench: a node process started late; the machine is too busy")
    span = max(end for _, end, _ in runs) - min(started for started, _, _ in runs)
    return {
        "processes": processes,
        "node_creates_per_second": round(share * processes / span),
        "node_python_cpu_us_per_create": round(
            sum(cpu for _, _, cpu in runs) / (share * processes) * 1e6, 1
        ),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=100_000)
    parser.add_argument("--sessions-per-subject", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--processes", type=int, default=os.cpu_count() or 1,
                        help="processes of the per-node rate (default: the CPU count; 1: skip)")
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="store-bench-") as work:
        redis = RedisServer(Path(work), name="store-bench-redis").start()
        try:
            figures = asyncio.run(
                measure(redis.url, args.sessions, args.sessions_per_subject, args.concurrency)
            )
            if args.processes > 1:
                figures.update(measure_node(redis.url, args.sessions,
                                            args.sessions_per_subject, args.concurrency,
                                            args.processes))  # fmt: skip
        finally:
            redis.stop()
    print(
        f"{figures['sessions']} sessions ({figures['sessions_per_subject']} per subject), "
        f"Redis {figures['redis_version']}: {figures['bytes_per_session']} bytes/session, "
        f"{figures['keys_per_session']} keys/session, {figures['creates_per_second']} "
        f"creates/s ({figures['concurrency']} concurrent, one process); CPU per create: "
        f"{figures['python_cpu_us_per_create']} µs Python, {figures['redis_cpu_us_per_create']} "
        f"µs Redis"
    )
    if "processes" in figures:
        print(f"one node, {figures['processes']} processes at once: "
              f"{figures['node_creates_per_second']} creates/s; CPU per create: "
              f"{figures['node_python_cpu_us_per_create']} µs Python")  # fmt: skip
    print("MEMORY USAGE per key:", json.dumps(figures["memory_usage_per_key"]))
    if args.json is not None:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
