"""Asking Redis whether a session id is still indexed, whatever the key layout
(extauthz.store.redis.keys): for tests that look at the keys behind the store's back."""

from __future__ import annotations

from extauthz.store.redis.keys import SessionKeys


def index_probe(keys: SessionKeys, sid: str) -> tuple[str, ...]:
    """The Redis command that answers 1 while ``sid`` is indexed, else 0: ``HEXISTS`` of its
    field in its tag's index, or ``EXISTS`` of its own key (sessions from before tags)."""
    key, field = keys.index(sid)
    return ("HEXISTS", key, field) if field else ("EXISTS", key)
