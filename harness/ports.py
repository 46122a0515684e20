"""Free loopback ports and whether a port accepts connections."""

from __future__ import annotations

import socket

LOOPBACK = "127.0.0.1"
"""Every process the harness starts binds to loopback only."""

RESERVED_PORTS = frozenset({6379, 6380, 6390, 26379})
"""Ports a developer machine (or the demo, on 6390) uses for its own Redis: never handed out."""


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port on ``host`` that nothing listens on right now and is not in
    :data:`RESERVED_PORTS`.

    The kernel picks it (bind to port 0); another process could take it before the caller
    binds, which :meth:`harness.redis.RedisServer.start` answers by retrying on a fresh port.

    :raises OSError: no port could be found in 50 tries.
    """
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
            port = int(sock.getsockname()[1])
        if port not in RESERVED_PORTS:
            return port
    raise OSError(f"no free port on {host} outside {sorted(RESERVED_PORTS)}")


def port_accepts(port: int, host: str = LOOPBACK, timeout: float = 0.2) -> bool:
    """True when a TCP connection to ``host:port`` succeeds now."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False

