"""What ``server.workers = "auto"`` resolves to on this machine (``Settings.worker_count``)."""

from __future__ import annotations

import os


def cpu_count() -> int:
    """The CPUs this process may run on (``os.sched_getaffinity``, else ``os.cpu_count()``)."""
    if hasattr(os, "sched_getaffinity"):
        return max(len(os.sched_getaffinity(0)), 1)
    return os.cpu_count() or 1


def port_room(grpc_listen: str, http_listen: str) -> int:
    """How many workers fit on consecutive gRPC ports from ``grpc_listen``'s (``HOST:PORT``)
    before ``http_listen``'s port or past 65535: at least 1."""
    first = int(grpc_listen.rpartition(":")[2])
    http = int(http_listen.rpartition(":")[2])
    room = 65536 - first
    if http > first:
        room = min(room, http - first)
    return max(room, 1)
