"""Free loopback ports and whether a port accepts connections."""

from __future__ import annotations

import random
import socket

LOOPBACK = "127.0.0.1"
"""Every process the harness starts binds to loopback only."""

RESERVED_PORTS = frozenset({6379, 6380, 6390, 26379})
"""Ports a developer machine (or the demo, on 6390) uses for its own Redis: never handed out."""


FIRST_PORT = 10000
"""The lowest port :func:`free_port` hands out."""

_handed_out: set[int] = set()


def _ephemeral_low(path: str = "/proc/sys/net/ipv4/ip_local_port_range") -> int:
    """The first port of the kernel's ephemeral range (32768 when it cannot be read)."""
    try:
        with open(path) as fh:
            return int(fh.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _bindable(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port on ``host`` that nothing listens on right now, not in
    :data:`RESERVED_PORTS` and not handed out before by this process.

    It is taken below the kernel's ephemeral range, so that no outgoing connection (a client
    of Redis, of extauthz, ...) is given the same port as its source port between this call
    and the caller's bind. (A port the kernel picked with a bind to port 0 lies inside that
    range, and was once taken that way before Envoy could listen on it.) Another process
    could still take it first, which :meth:`harness.redis.RedisServer.start` answers by
    retrying on a fresh port. Where the ephemeral range starts below :data:`FIRST_PORT`, the
    kernel picks.

    :raises OSError: no port could be found in 200 tries.
    """
    low = _ephemeral_low()
    for _ in range(200):
        if low > FIRST_PORT:
            port = random.randrange(FIRST_PORT, low)
            if port in _handed_out or not _bindable(host, port):
                continue
        else:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                sock.bind((host, 0))
                port = int(sock.getsockname()[1])
        if port not in RESERVED_PORTS:
            _handed_out.add(port)
            return port
    raise OSError(f"no free port on {host} outside {sorted(RESERVED_PORTS)}")


def free_ports(count: int, host: str = LOOPBACK) -> int:
    """The first of ``count`` consecutive free ports (as :func:`free_port` finds one): the
    gRPC ports of ``count`` extauthz workers.

    :raises OSError: no such range could be found in 200 tries.
    """
    for _ in range(200):
        first = free_port(host)
        rest = range(first + 1, first + count)
        if all(p not in _handed_out and p not in RESERVED_PORTS and _bindable(host, p)
               for p in rest):  # fmt: skip
            _handed_out.update(rest)
            return first
    raise OSError(f"no {count} consecutive free ports on {host}")


def free_port_pair(offset: int, host: str = LOOPBACK) -> int:
    """A port free together with ``port + offset`` (a Redis Cluster node and its bus port),
    both below the kernel's ephemeral range and never handed out before, like
    :func:`free_port`'s.

    :raises OSError: no such pair could be found in 500 tries.
    """
    high = _ephemeral_low() - offset
    for _ in range(500):
        port = random.randrange(FIRST_PORT, max(FIRST_PORT + 1, high))
        pair = (port, port + offset)
        if any(p in _handed_out or p in RESERVED_PORTS for p in pair):
            continue
        if all(_bindable(host, p) for p in pair):
            _handed_out.update(pair)
            return port
    raise OSError(f"no free port pair (port, port + {offset}) on {host}")


def port_accepts(port: int, host: str = LOOPBACK, timeout: float = 0.2) -> bool:
    """True when a TCP connection to ``host:port`` succeeds now."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False

