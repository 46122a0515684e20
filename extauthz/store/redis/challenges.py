"""WebAuthn ceremonies in Redis: one string per ceremony at ``<key_prefix>webauthn:<challenge
hash>`` holding its JSON, expiring with it; taken with ``GETDEL`` (Redis 6.2)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from extauthz.login.mfa.challenges import Ceremony
from extauthz.store.redis.clients import Redis
from extauthz.store.redis.errors import text, translated


class RedisCeremonies:
    """:class:`~extauthz.login.mfa.challenges.Ceremonies` in Redis. A malformed record reads
    as absent."""

    def __init__(
        self,
        client: Redis,
        key_prefix: str = "extauthz:",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._redis = client
        self._prefix = key_prefix + "webauthn:"
        self._clock = clock

    @translated("webauthn put")
    async def put(self, key: str, ceremony: Ceremony) -> None:
        ttl = max(1, math.ceil(ceremony.expires_at - self._clock()))
        await self._redis.set(self._prefix + key, ceremony.to_json(), ex=ttl)

    @translated("webauthn take")
    async def take(self, key: str) -> Ceremony | None:
        raw = await self._redis.getdel(self._prefix + key)
        if raw is None:
            return None
        try:
            found = Ceremony.from_json(text(raw))
        except ValueError:
            return None
        return found if found.expires_at > self._clock() else None
