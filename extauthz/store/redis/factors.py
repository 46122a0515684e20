"""The Redis-backed factor store: one Redis hash per user at ``<key_prefix>mfa:<name>``,
field the factor id, value the factor's JSON
(:meth:`~extauthz.login.mfa.factors.Factor.to_json`)."""

from __future__ import annotations

from dataclasses import replace

from extauthz.errors import StoreUnavailable
from extauthz.login.mfa.factors import (
    CHANGE_ATTEMPTS,
    Factor,
    FactorChange,
    FactorStoreError,
    _sorted,
    validate_factor_id,
)
from extauthz.login.users.records import validate_name
from extauthz.store.redis import scripts
from extauthz.store.redis.clients import Redis
from extauthz.store.redis.errors import store_errors, text, translated


class RedisFactorStore:
    """Factors in Redis (:class:`~extauthz.login.mfa.factors.FactorStore`). Every command
    touches one key (Redis Cluster works); :meth:`change` is a compare-and-set script on the
    factor's field. Raises :class:`~extauthz.errors.StoreUnavailable` when Redis fails and
    :class:`FactorStoreError` naming the key for a malformed record."""

    def __init__(self, client: Redis, key_prefix: str = "extauthz:") -> None:
        self._redis = client
        self._prefix = key_prefix + "mfa:"
        self._cas = client.register_script(scripts.SET_FIELD_IF_UNCHANGED)

    def key(self, user: str) -> str:
        return self._prefix + validate_name(user)

    def _parse(self, key: str, factor_id: str, raw: str) -> Factor:
        try:
            return Factor.from_json(factor_id, raw)
        except ValueError as exc:
            raise FactorStoreError(f"redis key {key!r}: malformed factor: {exc}") from None

    @translated("factors get")
    async def factors(self, user: str) -> list[Factor]:
        key = self.key(user)
        raw = await self._redis.hgetall(key)
        return _sorted({text(k): self._parse(key, text(k), text(v)) for k, v in raw.items()})

    @translated("factor put")
    async def put(self, user: str, factor: Factor) -> None:
        await self._redis.hset(self.key(user), validate_factor_id(factor.id), factor.to_json())

    async def change(
        self, user: str, factor_id: str, change: FactorChange, *, attempts: int = CHANGE_ATTEMPTS
    ) -> Factor | None:
        key = self.key(user)
        for _ in range(attempts):
            async with store_errors("factor get"):
                raw = await self._redis.hget(key, factor_id)
            if raw is None:
                return None
            old = text(raw)
            new = replace(change(self._parse(key, factor_id, old)), id=factor_id)
            async with store_errors("factor change"):
                if await self._cas(keys=[key], args=[factor_id, old, new.to_json()]):
                    return new
        raise StoreUnavailable("factor change: every attempt lost to another write")

    @translated("factor remove")
    async def remove(self, user: str, factor_id: str) -> bool:
        return bool(await self._redis.hdel(self.key(user), factor_id))

    @translated("factors remove")
    async def remove_all(self, user: str) -> int:
        key = self.key(user)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hlen(key)
            pipe.delete(key)
            count, _ = await pipe.execute()
        return int(count)
