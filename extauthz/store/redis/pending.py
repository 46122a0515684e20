"""Pending logins in Redis: one string per pending login at ``<key_prefix>pending:<token
hash>`` holding its JSON, expiring with it; taken with ``GETDEL`` (Redis 6.2)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from extauthz.login.mfa.pending import PendingLogin
from extauthz.store.redis.clients import Redis
from extauthz.store.redis.errors import text, translated


class RedisPendingLogins:
    """:class:`~extauthz.login.mfa.pending.PendingLogins` in Redis. A malformed record
    reads as absent (it cannot be a login anyone should finish)."""

    def __init__(
        self,
        client: Redis,
        key_prefix: str = "extauthz:",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._redis = client
        self._prefix = key_prefix + "pending:"
        self._clock = clock

    def _ttl(self, pending: PendingLogin) -> int:
        return max(1, math.ceil(pending.expires_at - self._clock()))

    @staticmethod
    def _parse(raw: object) -> PendingLogin | None:
        if raw is None:
            return None
        try:
            return PendingLogin.from_json(text(raw))
        except ValueError:
            return None

    @translated("pending put")
    async def put(self, token_hash: str, pending: PendingLogin) -> None:
        await self._redis.set(self._prefix + token_hash, pending.to_json(), ex=self._ttl(pending))

    @translated("pending get")
    async def get(self, token_hash: str) -> PendingLogin | None:
        return self._parse(await self._redis.get(self._prefix + token_hash))

    @translated("pending replace")
    async def replace(self, token_hash: str, pending: PendingLogin) -> bool:
        key = self._prefix + token_hash
        return bool(await self._redis.set(key, pending.to_json(), xx=True, keepttl=True))

    @translated("pending take")
    async def take(self, token_hash: str) -> PendingLogin | None:
        return self._parse(await self._redis.getdel(self._prefix + token_hash))
