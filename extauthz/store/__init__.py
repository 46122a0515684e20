"""The session store: the model, the store protocol, the manager (timeouts, sliding), the in-memory
store, the invalidation-safe cache, and the Redis package (docs/strategies.md)."""

from __future__ import annotations

from extauthz.store.manager import SessionManager
from extauthz.store.model import Session, SessionStore

__all__ = ["Session", "SessionManager", "SessionStore"]
