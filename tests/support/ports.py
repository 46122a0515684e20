"""Free loopback ports and waiting for a port to accept connections."""

from __future__ import annotations

import socket
import time

LOOPBACK = "127.0.0.1"


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port on ``host`` that nothing listens on right now.

    The kernel picks it (bind to port 0); there is a small window in which another process could
    take it before the caller binds, which is acceptable for tests.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_accepts(port: int, host: str = LOOPBACK, timeout: float = 0.2) -> bool:
    """True when a TCP connection to ``host:port`` succeeds now."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_for_port(port: int, host: str = LOOPBACK, timeout: float = 10.0) -> None:
    """Wait until ``host:port`` accepts TCP connections.

    :raises TimeoutError: nothing accepted within ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if port_accepts(port, host):
            return
        time.sleep(0.05)
    raise TimeoutError(f"{host}:{port} did not accept connections within {timeout:.1f}s")
