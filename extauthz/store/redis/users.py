"""The Redis-backed user store: one Redis hash per user at ``<key_prefix>user:<name>``."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping

from extauthz.login.users.records import (
    _NAME,
    UserRecord,
    UserStoreError,
    _record,
    _validate_hash,
    validate_name,
)
from extauthz.store.redis import scripts
from extauthz.store.redis.clients import Redis
from extauthz.store.redis.errors import text, translated


def _json_list(fields: Mapping[str, str], key: str) -> list[str]:
    value = json.loads(fields.get(key, "[]"))
    if not isinstance(value, list):
        raise ValueError(f"{key} must be a JSON list of strings")
    return value


def _glob_escape(text: str) -> str:
    return re.sub(r"([*?\[\]\\])", r"\\\1", text)


class RedisUserStore:
    """Users in Redis, one hash per user at ``<key_prefix>user:<name>``.

    Fields: ``password_hash`` (PHC string), ``roles`` and ``scopes`` (JSON lists of strings),
    ``disabled`` (``"0"``/``"1"``). Every command touches one key, so the store also works on
    Redis Cluster. ``names()`` uses ``SCAN``. Works with ``decode_responses`` on or off.
    Raises :class:`~extauthz.errors.StoreUnavailable` when Redis fails and
    :class:`UserStoreError` naming the key when a stored record is malformed.
    """

    def __init__(self, client: Redis, key_prefix: str = "extauthz:") -> None:
        self._redis = client
        self._prefix = key_prefix + "user:"
        self._set_hash = client.register_script(scripts.SET_HASH_IF_EXISTS)

    def key(self, name: str) -> str:
        return self._prefix + validate_name(name)

    @translated("user get")
    async def get(self, name: str) -> UserRecord | None:
        key = self.key(name)
        raw = await self._redis.hgetall(key)
        if not raw:
            return None
        fields = {text(k): text(v) for k, v in raw.items()}
        try:
            return _record(
                name,
                fields.get("password_hash", ""),
                _json_list(fields, "roles"),
                _json_list(fields, "scopes"),
                {"0": False, "1": True}[fields.get("disabled", "0")],
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise UserStoreError(f"redis key {key!r}: malformed user record: {exc}") from None

    @translated("user put")
    async def put(self, name: str, password_hash: str, roles: Iterable[str],
                  scopes: Iterable[str], *, disabled: bool = False) -> None:
        record = _record(name, password_hash, roles, scopes, disabled)
        key = self.key(name)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.delete(key)
            pipe.hset(key, mapping={
                "password_hash": record.password_hash,
                "roles": json.dumps(list(record.roles)),
                "scopes": json.dumps(list(record.scopes)),
                "disabled": "1" if record.disabled else "0",
            })
            await pipe.execute()

    @translated("user remove")
    async def remove(self, name: str) -> bool:
        return bool(await self._redis.delete(self.key(name)))

    @translated("user set password hash")
    async def set_password_hash(self, name: str, password_hash: str) -> bool:
        key = self.key(name)
        return bool(await self._set_hash(keys=[key], args=[_validate_hash(password_hash)]))

    @translated("user names")
    async def names(self) -> list[str]:
        found = set()
        async for key in self._redis.scan_iter(match=_glob_escape(self._prefix) + "*", count=500):
            name = text(key)[len(self._prefix):]
            if _NAME.fullmatch(name):
                found.add(name)
        return sorted(found)


