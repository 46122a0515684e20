"""extauthz: Envoy external authorization with server-side sessions (phantom-token pattern)."""

from __future__ import annotations

__version__ = "0.1.0"
