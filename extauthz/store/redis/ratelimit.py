"""Fixed-window rate-limit counters in Redis (the semantics: :mod:`extauthz.login.ratelimit`)."""

from __future__ import annotations

from extauthz.login.ratelimit import RateKey, Verdict, _check_config, _verdict
from extauthz.store.redis import scripts
from extauthz.store.redis.clients import Redis
from extauthz.store.redis.errors import translated


class RedisRateLimiter:
    """Fixed-window counters in Redis at ``<key_prefix>rl:<RateKey.storage_key>``.

    Each key is a counter with a millisecond TTL equal to the window, created and incremented
    by one Lua script (atomic, one round trip). Shared by every node using the same Redis.
    A Redis that does not answer raises :class:`~extauthz.errors.StoreUnavailable`.
    """

    def __init__(self, client: Redis, key_prefix: str, limit: int,
                 window_seconds: int) -> None:
        _check_config(limit, window_seconds)
        self.limit = limit
        self.window_seconds = window_seconds
        self._prefix = key_prefix + "rl:"
        self._hit = client.register_script(scripts.RATE_HIT)
        self._peek = client.register_script(scripts.RATE_PEEK)
        self._refund = client.register_script(scripts.RATE_REFUND)
        self._redis = client

    def redis_key(self, key: RateKey) -> str:
        return self._prefix + key.storage_key

    @translated("rate limit hit")
    async def hit(self, key: RateKey) -> Verdict:
        count, ttl_ms = await self._hit(keys=[self.redis_key(key)],
                                        args=[self.window_seconds * 1000])
        return _verdict(int(count), self.limit, int(ttl_ms) / 1000, is_hit=True)

    @translated("rate limit blocked")
    async def blocked(self, key: RateKey) -> Verdict:
        count, ttl_ms = await self._peek(keys=[self.redis_key(key)])
        return _verdict(int(count), self.limit, int(ttl_ms) / 1000, is_hit=False)

    @translated("rate limit reset")
    async def reset(self, key: RateKey) -> None:
        await self._redis.delete(self.redis_key(key))

    @translated("rate limit refund")
    async def refund(self, key: RateKey) -> None:
        await self._refund(keys=[self.redis_key(key)])
