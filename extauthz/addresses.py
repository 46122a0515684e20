"""Host predicates shared by the settings (listen addresses) and the OAuth redirect URI rules."""

from __future__ import annotations

import ipaddress


def is_loopback_host(host: str) -> bool:
    """Whether ``host`` (no brackets, no port) names this machine only: ``localhost`` or a
    loopback address (``127.0.0.0/8``, ``::1``)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
