"""The node's listening sockets: bound before anything else starts, never shared.

A second ``extauthz serve`` on the address of a running one must not start: gRPC would
otherwise share the port with ``SO_REUSEPORT`` (the kernel then splits new connections between
two nodes with different in-memory stores). Both listeners are bound without it, and a taken
address stops start-up with a :class:`~extauthz.errors.SettingsError` naming the setting and
the address, before the node registers in the store.
"""

from __future__ import annotations

import socket

from extauthz.errors import SettingsError


def address_in_use(key: str, listen: str, detail: str) -> SettingsError:
    """The start-up error for a listen address that cannot be bound."""
    return SettingsError(
        f"{key}: cannot listen on {listen} ({detail}); is another extauthz serve "
        "(or another program) already listening there?"
    )


def bind_tcp(key: str, listen: str) -> socket.socket:
    """A TCP socket bound to ``listen`` (``HOST:PORT``, IPv6 hosts in brackets), without
    ``SO_REUSEPORT``; the server that uses it calls ``listen``.

    :raises SettingsError: the address is taken or not available; the message names ``key``.
    """
    host, _, port = listen.rpartition(":")
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host.strip("[]") or None, int(port), type=socket.SOCK_STREAM,
            flags=socket.AI_PASSIVE,
        )[0]  # fmt: skip
    except (OSError, ValueError) as exc:
        raise address_in_use(key, listen, str(exc)) from None
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT only
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise address_in_use(key, listen, exc.strerror or str(exc)) from None
    return sock
