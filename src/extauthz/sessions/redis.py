"""The Redis session store.

Key layout (``p`` is the configured key prefix)::

    p + "session:" + <token hash>   the session record (JSON), expiring at its deadline
    p + "sid:" + <sid>              the token hash of session <sid>, same expiry
    p + "subject:" + <sub>          a set of the subject's sids (stale members are pruned)

Every change publishes the token hash on ``p + "invalidate"`` so in-process caches on
every node drop it. Writes that must survive a failover (create, revoke) can be made to wait
for ``wait_replicas`` replicas (``WAIT``, https://redis.io/commands/wait/); when fewer
acknowledge in ``wait_timeout_ms`` the write raises :class:`StoreWriteNotDurable`.

The client is handed in (a plain ``redis.asyncio.Redis`` or one from
``Sentinel.master_for``): this module does not know the topology.
"""

from __future__ import annotations

import math
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from extauthz.errors import StoreUnavailable, StoreWriteNotDurable
from extauthz.sessions.model import Session


@asynccontextmanager
async def unavailable_on_redis_error(what: str) -> AsyncIterator[None]:
    """Turn any redis-py error into :class:`StoreUnavailable` naming the operation."""
    try:
        yield
    except RedisError as exc:
        raise StoreUnavailable(f"redis {what}: {exc.__class__.__name__}: {exc}") from exc
    except OSError as exc:
        raise StoreUnavailable(f"redis {what}: {exc.__class__.__name__}: {exc}") from exc


class RedisSessionStore:
    backend = "redis"

    def __init__(
        self,
        client: aioredis.Redis,
        key_prefix: str = "extauthz:",
        *,
        wait_replicas: int = 0,
        wait_timeout_ms: int = 500,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._redis = client
        self._prefix = key_prefix
        self._wait_replicas = wait_replicas
        self._wait_timeout_ms = wait_timeout_ms
        self._clock = clock
        self.invalidation_channel = key_prefix + "invalidate"

    def _session_key(self, token_hash: str) -> str:
        return f"{self._prefix}session:{token_hash}"

    def _sid_key(self, sid: str) -> str:
        return f"{self._prefix}sid:{sid}"

    def _subject_key(self, sub: str) -> str:
        return f"{self._prefix}subject:{sub}"

    def _ttl_ms(self, session: Session) -> int:
        return max(1, math.ceil((session.deadline - self._clock()) * 1000))

    async def _wait_durable(self) -> None:
        if self._wait_replicas <= 0:
            return
        acked = await self._redis.execute_command(
            "WAIT", self._wait_replicas, self._wait_timeout_ms
        )
        if int(acked) < self._wait_replicas:
            raise StoreWriteNotDurable(
                f"redis WAIT: {acked} of {self._wait_replicas} replicas acknowledged "
                f"within {self._wait_timeout_ms} ms"
            )

    async def create(self, token_hash: str, session: Session) -> None:
        ttl = self._ttl_ms(session)
        absolute_ms = max(1, math.ceil((session.expires_at - self._clock()) * 1000))
        async with unavailable_on_redis_error("create"):
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.set(self._session_key(token_hash), session.to_json(), px=ttl)
                pipe.set(self._sid_key(session.sid), token_hash, px=ttl)
                pipe.sadd(self._subject_key(session.sub), session.sid)
                pipe.pexpire(self._subject_key(session.sub), absolute_ms, gt=True)
                pipe.pexpire(self._subject_key(session.sub), absolute_ms, nx=True)
                await pipe.execute()
            await self._wait_durable()

    async def get(self, token_hash: str) -> Session | None:
        async with unavailable_on_redis_error("get"):
            raw = await self._redis.get(self._session_key(token_hash))
        return self._decode(raw)

    @staticmethod
    def _decode(raw: bytes | str | None) -> Session | None:
        if raw is None:
            return None
        try:
            return Session.from_json(raw)
        except ValueError:
            return None  # a corrupt record names no live session

    async def touch(self, token_hash: str, session: Session) -> bool:
        ttl = self._ttl_ms(session)
        async with unavailable_on_redis_error("touch"):
            async with self._redis.pipeline(transaction=True) as pipe:
                # XX: never re-create a record that a logout deleted meanwhile
                pipe.set(self._session_key(token_hash), session.to_json(), px=ttl, xx=True)
                pipe.pexpire(self._sid_key(session.sid), ttl)
                stored, _ = await pipe.execute()
        return bool(stored)

    async def get_by_sid(self, sid: str) -> Session | None:
        async with unavailable_on_redis_error("get_by_sid"):
            token_hash = await self._redis.get(self._sid_key(sid))
            if token_hash is None:
                return None
            raw = await self._redis.get(self._session_key(_text(token_hash)))
        return self._decode(raw)

    async def revoke(self, token_hash: str) -> Session | None:
        async with unavailable_on_redis_error("revoke"):
            raw = await self._redis.get(self._session_key(token_hash))
            session = self._decode(raw)
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.delete(self._session_key(token_hash))
                if session is not None:
                    pipe.delete(self._sid_key(session.sid))
                    pipe.srem(self._subject_key(session.sub), session.sid)
                pipe.publish(self.invalidation_channel, token_hash)
                await pipe.execute()
            await self._wait_durable()
        return session

    async def revoke_sid(self, sid: str) -> Session | None:
        async with unavailable_on_redis_error("revoke_sid"):
            token_hash = await self._redis.get(self._sid_key(sid))
        if token_hash is None:
            return None
        return await self.revoke(_text(token_hash))

    async def revoke_subject(self, sub: str) -> int:
        async with unavailable_on_redis_error("revoke_subject"):
            sids = await self._redis.smembers(self._subject_key(sub))
        revoked = 0
        for sid in sorted(_text(s) for s in sids):
            if await self.revoke_sid(sid) is not None:
                revoked += 1
        return revoked

    async def list_subject(self, sub: str) -> list[Session]:
        async with unavailable_on_redis_error("list_subject"):
            sids = sorted(_text(s) for s in await self._redis.smembers(self._subject_key(sub)))
            if not sids:
                return []
            hashes = await self._redis.mget([self._sid_key(s) for s in sids])
            live = [(sid, _text(h)) for sid, h in zip(sids, hashes, strict=True) if h]
            stale = [sid for sid, h in zip(sids, hashes, strict=True) if not h]
            if stale:
                await self._redis.srem(self._subject_key(sub), *stale)
            if not live:
                return []
            records = await self._redis.mget([self._session_key(h) for _, h in live])
        sessions = [s for s in (self._decode(r) for r in records) if s is not None]
        return sorted(sessions, key=lambda s: s.created_at)

    async def ping(self) -> None:
        async with unavailable_on_redis_error("ping"):
            await self._redis.ping()

    async def close(self) -> None:
        await self._redis.aclose()


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
