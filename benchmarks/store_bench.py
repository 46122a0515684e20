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
  wall clock; the CPU time says what one core each would do).

``--sessions-per-subject`` spreads the sessions over fewer subjects (default 1: every session
its own subject, the dearest case for the per-subject index). ``--json OUT`` writes the figures.

    python benchmarks/store_bench.py [--sessions 100000] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import tempfile
import time
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


async def _used_memory(client: aioredis.Redis) -> int:
    return int((await client.info("memory"))["used_memory"])


async def _create_all(
    sessions: SessionManager, count: int, per_subject: int, concurrency: int
) -> tuple[float, list[str]]:
    """Create ``count`` sessions from ``concurrency`` coroutines; return the seconds taken and
    the subjects of the first sessions (for the per-key sample)."""
    queue = iter(range(count))
    first: list[str] = []

    async def worker() -> None:
        for n in queue:
            sub = f"user-{n // per_subject:08d}@example.com"
            await sessions.create(sub)
            if n == 0:
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
        store = RedisSessionStore(client, PREFIX)
        sessions = SessionManager(
            store, idle_timeout=IDLE_TIMEOUT, absolute_timeout=ABSOLUTE_TIMEOUT
        )
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=100_000)
    parser.add_argument("--sessions-per-subject", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="store-bench-") as work:
        redis = RedisServer(Path(work), name="store-bench-redis").start()
        try:
            figures = asyncio.run(
                measure(redis.url, args.sessions, args.sessions_per_subject, args.concurrency)
            )
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
    print("MEMORY USAGE per key:", json.dumps(figures["memory_usage_per_key"]))
    if args.json is not None:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
