"""Fixed-window rate-limit counters in Redis (the semantics: :mod:`extauthz.login.ratelimit`)."""

from __future__ import annotations

import redis.asyncio

from extauthz.login.ratelimit import RateKey, Verdict, _check_config, _verdict

# INCR and the expiry in one atomic step. A key without a TTL (left by a crash between two
# non-atomic commands in older code, or created by hand) would never expire: repair it.
_HIT = """
local count = redis.call('INCR', KEYS[1])
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  ttl = tonumber(ARGV[1])
end
return {count, ttl}
"""

_PEEK = """
local count = redis.call('GET', KEYS[1])
if not count then
  return {0, 0}
end
return {tonumber(count), redis.call('PTTL', KEYS[1])}
"""

# DECR keeps the key's TTL; a missing key (window over, or reset) is left alone
_REFUND = """
local count = tonumber(redis.call('GET', KEYS[1]) or '0')
if count > 0 then
  return redis.call('DECR', KEYS[1])
end
return 0
"""


class RedisRateLimiter:
    """Fixed-window counters in Redis at ``<key_prefix>rl:<RateKey.storage_key>``.

    Each key is a counter with a millisecond TTL equal to the window, created and incremented
    by one Lua script (atomic, one round trip). Shared by every node using the same Redis.
    ``redis.exceptions.RedisError`` (connection, timeout, ...) propagates unchanged.
    """

    def __init__(self, client: redis.asyncio.Redis, key_prefix: str, limit: int,
                 window_seconds: int) -> None:
        _check_config(limit, window_seconds)
        self.limit = limit
        self.window_seconds = window_seconds
        self._prefix = key_prefix + "rl:"
        self._hit = client.register_script(_HIT)
        self._peek = client.register_script(_PEEK)
        self._refund = client.register_script(_REFUND)
        self._redis = client

    def redis_key(self, key: RateKey) -> str:
        return self._prefix + key.storage_key

    async def hit(self, key: RateKey) -> Verdict:
        count, ttl_ms = await self._hit(keys=[self.redis_key(key)],
                                        args=[self.window_seconds * 1000])
        return _verdict(int(count), self.limit, int(ttl_ms) / 1000, is_hit=True)

    async def blocked(self, key: RateKey) -> Verdict:
        count, ttl_ms = await self._peek(keys=[self.redis_key(key)])
        return _verdict(int(count), self.limit, int(ttl_ms) / 1000, is_hit=False)

    async def reset(self, key: RateKey) -> None:
        await self._redis.delete(self.redis_key(key))

    async def refund(self, key: RateKey) -> None:
        await self._refund(keys=[self.redis_key(key)])


