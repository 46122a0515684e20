"""Sessions: the model, the store protocol and its implementations."""

from __future__ import annotations

from extauthz.sessions.manager import SessionManager
from extauthz.sessions.model import Session, SessionStore

__all__ = ["Session", "SessionManager", "SessionStore"]
