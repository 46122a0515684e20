"""``extauthz serve`` with ``server.workers`` > 1: the settings of each worker, the listening
HTTP socket they share, and the worker's entry point (the supervisor itself:
:mod:`extauthz.server.workers`).

Worker ``i`` (0-based) is the whole node with two differences: its gRPC listener is
``server.grpc_listen``'s port + ``i`` (Envoy keeps one HTTP/2 connection per Envoy worker
thread per endpoint, so one endpoint per process is what spreads Checks: the generated Envoy
config lists them all), and its node id is ``<server.node_id>-w<i>`` (the node registry, the
invalidation barrier's memberships, the Redis client names, the ``node_id`` of the dynamic
metadata: each worker is a process of its own there; all run the same strategy). The HTTP
listener (``server.http_listen``) is one socket, bound once here without ``SO_REUSEPORT`` (a
second node on the address still fails to start) and accepted on by every worker: the kernel
hands each new connection to one waiting worker, and a worker that dies leaves no queued
connection behind.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import sys
from multiprocessing.connection import Connection
from socket import socket

from extauthz.errors import ExtauthzError
from extauthz.server.listeners import bind_tcp
from extauthz.server.shutdown import MARGIN_SECONDS
from extauthz.server.workers import SETTINGS_ERROR_EXIT, Supervisor, WorkerLink
from extauthz.settings import Settings, StoreBackend

__all__ = ["serve_workers", "worker_settings"]

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(processName)s] %(message)s"
# a worker's start (a fresh interpreter importing the node) on top of its drain
START_SECONDS = 10.0


def worker_settings(settings: Settings, node_id: str, index: int) -> Settings:
    """The settings of worker ``index``: gRPC on ``server.grpc_listen``'s port + ``index``,
    node id ``<node_id>-w<index>``; ``server.workers`` stays the node's count (the worker
    serves, it does not supervise: only ``extauthz serve`` reads it to start workers; the
    worker's ``extauthz_workers`` shows it)."""
    host, _, port = settings.server.grpc_listen.rpartition(":")
    server = dataclasses.replace(
        settings.server, grpc_listen=f"{host}:{int(port) + index}",
        node_id=f"{node_id}-w{index}", workers=settings.worker_count,
    )  # fmt: skip
    return dataclasses.replace(settings, server=server)


def auto_workers_note(settings: Settings) -> str | None:
    """The warning a node logs when ``server.workers = "auto"`` uses fewer workers than it has
    CPUs because the gRPC ports run into ``server.http_listen``'s (``Settings.worker_count``);
    ``None`` otherwise."""
    redis = settings.store.backend != StoreBackend.MEMORY
    if settings.server.workers != "auto" or not redis:
        return None
    if settings.worker_count >= settings.cpu_count:
        return None
    return (
        f"server.workers = auto: {settings.worker_count} of {settings.cpu_count} CPUs, the gRPC "
        "ports from server.grpc_listen's up to server.http_listen's: move one of them to use "
        "every CPU"
    )


def serve_workers(settings: Settings, log_level: str) -> int:
    """Run ``settings.worker_count`` workers under a :class:`Supervisor` until SIGTERM or
    SIGINT; the exit code.

    :raises SettingsError: ``server.http_listen`` cannot be bound.
    """
    count = settings.worker_count
    http_socket = bind_tcp("server.http_listen", settings.server.http_listen)
    node_id = settings.node_id  # "<hostname>-<pid>" of this process unless set
    host, _, port = settings.server.grpc_listen.rpartition(":")
    logging.getLogger("extauthz").info(
        "extauthz node_id=%s: %d workers, gRPC %s:%s-%d, HTTP %s", node_id, count, host, port,
        int(port) + count - 1, settings.server.http_listen,
    )  # fmt: skip
    supervisor = Supervisor(
        count,
        _worker_main,
        lambda i: (worker_settings(settings, node_id, i), http_socket, log_level),
        stop_within=settings.server.shutdown_grace_seconds + MARGIN_SECONDS + START_SECONDS,
    )
    try:
        return supervisor.run()
    finally:
        http_socket.close()


def _worker_main(
    index: int, conn: Connection, settings: Settings, http_socket: socket, log_level: str
) -> None:
    """A worker process: the node (:func:`extauthz.server.app.serve`) with its link."""
    logging.basicConfig(
        level=getattr(logging, log_level.upper(), logging.INFO), format=LOG_FORMAT,
        stream=sys.stderr,
    )  # fmt: skip
    from extauthz.server.app import serve  # in the worker only: the supervisor needs none of it

    try:
        code = asyncio.run(serve(settings, WorkerLink(index, conn, http_socket)))
    except ExtauthzError as exc:
        logging.getLogger("extauthz").error("worker %d: %s", index, exc)
        code = SETTINGS_ERROR_EXIT
    sys.exit(code)
