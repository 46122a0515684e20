"""Scale figures of the central strategy on a Redis Cluster: sessions spread over the shards,
memory per session on each shard, the creation rate, and the rate of session lookups with no
cache (what every Check costs the store on a cache miss).

    .venv/bin/python benchmarks/cluster_bench.py                        (100,000 sessions)
    .venv/bin/python benchmarks/cluster_bench.py --sessions 1000000 --json out.json

What runs, all on 127.0.0.1 and on free ports, stopped by PID at the end: a Redis Cluster of
its own (``harness.redis_cluster``: 3 primaries, 1 replica each, no persistence). The sessions
are created through :class:`~extauthz.store.manager.SessionManager` on the store the server
builds for ``store.cluster_nodes`` (``RedisSessionStore`` on a ``StoreCluster``, every create a
``MULTI``/``EXEC`` plus ``WAIT 1`` on the slot's primary), ``--concurrency`` at a time. Memory is
``INFO memory`` ``used_memory`` of each primary before and after, divided by the sessions that
landed on it (``DBSIZE`` growth over the keys one session writes). The lookup phase calls
``SessionManager.lookup`` on random tokens for ``--check-seconds`` (no session cache: every call
is a store read). One Python process drives all of it: on a small machine the figures are the
client's, not the cluster's (the script prints the CPU seconds of each).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import redis  # noqa: E402

from benchmarks.probes import cpu_seconds  # noqa: E402
from extauthz.store.manager import SessionManager  # noqa: E402
from extauthz.store.redis.clients import RedisClients, RedisEndpoints  # noqa: E402
from extauthz.store.redis.store import RedisSessionStore  # noqa: E402
from harness.ports import LOOPBACK  # noqa: E402
from harness.redis_cluster import RedisCluster  # noqa: E402


def primaries(cluster: RedisCluster) -> list[int]:
    return sorted(port for port, role in cluster.roles().items() if role == "primary")


def shard_figures(cluster: RedisCluster) -> dict[int, dict[str, int]]:
    """Each primary's ``used_memory`` (bytes) and ``DBSIZE`` now."""
    out = {}
    for port in primaries(cluster):
        with redis.Redis(host=LOOPBACK, port=port) as r:
            memory = r.info("memory")
            out[port] = {"used_memory": int(memory["used_memory"]), "keys": int(r.dbsize())}
    return out


async def create(manager: SessionManager, count: int, concurrency: int) -> list[str]:
    tokens: list[str] = []
    next_n = 0

    async def worker() -> None:
        nonlocal next_n
        while next_n < count:
            n = next_n
            next_n += 1
            token, _ = await manager.create(f"user-{n}", roles=("reader",))
            tokens.append(token)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return tokens


async def lookups(
    manager: SessionManager, tokens: list[str], seconds: float, concurrency: int
) -> int:
    done = 0
    deadline = time.monotonic() + seconds

    async def worker() -> None:
        nonlocal done
        while time.monotonic() < deadline:
            await manager.lookup(random.choice(tokens))
            done += 1

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return done


async def run(args: argparse.Namespace, cluster: RedisCluster) -> dict[str, Any]:
    clients = RedisClients(
        RedisEndpoints(
            primary_url="redis://unused:1/0",
            cluster_nodes=tuple(cluster.startup_nodes),
            timeout_seconds=2.0,
            pool_size=args.concurrency,
            name="bench",
        )
    )
    store = RedisSessionStore(clients.primary, "extauthz:", wait_replicas=1, wait_timeout_ms=1000)
    # no slide falls due during the run: a lookup is the one GET a Check's cache miss costs
    manager = SessionManager(
        store, idle_timeout=86400, absolute_timeout=86400, touch_interval=86400
    )
    try:
        await manager.create("warm-up")
        before = shard_figures(cluster)
        cpu0 = cpu_seconds_self()
        t0 = time.perf_counter()
        tokens = await create(manager, args.sessions, args.concurrency)
        create_s = time.perf_counter() - t0
        create_cpu = cpu_seconds_self() - cpu0
        after = shard_figures(cluster)
        keys_total = sum(after[p]["keys"] - before[p]["keys"] for p in after)
        keys_per_session = keys_total / len(tokens)
        shards = {}
        for port in after:
            sessions = (after[port]["keys"] - before[port]["keys"]) / keys_per_session
            grown = after[port]["used_memory"] - before[port]["used_memory"]
            shards[str(port)] = {
                "sessions": round(sessions),
                "used_memory_growth_bytes": grown,
                "bytes_per_session": round(grown / sessions, 1) if sessions else None,
            }
        cpu0 = cpu_seconds_self()
        done = await lookups(manager, tokens, args.check_seconds, args.concurrency)
        lookup_cpu = cpu_seconds_self() - cpu0
        return {
            "sessions": len(tokens),
            "concurrency": args.concurrency,
            "keys_per_session": round(keys_per_session, 2),
            "create_seconds": round(create_s, 1),
            "creates_per_second": round(len(tokens) / create_s),
            "create_client_cpu_seconds": round(create_cpu, 1),
            "shards": shards,
            "lookups": done,
            "lookups_per_second_cache_cold": round(done / args.check_seconds),
            "lookup_client_cpu_seconds": round(lookup_cpu, 1),
        }
    finally:
        await clients.aclose()


def cpu_seconds_self() -> float:
    return cpu_seconds(os.getpid())


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    p.add_argument("--sessions", type=int, default=100_000, help="sessions to create")
    p.add_argument("--concurrency", type=int, default=64, help="requests in flight")
    p.add_argument("--check-seconds", type=float, default=10.0, help="seconds of lookups")
    p.add_argument("--json", type=Path, metavar="OUT", help="also write the results as JSON")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="extauthz-cluster-bench-") as work:
        cluster = RedisCluster(Path(work), node_timeout_ms=5000)
        try:
            cluster.start()
            result = asyncio.run(run(args, cluster))
        finally:
            cluster.stop()
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
