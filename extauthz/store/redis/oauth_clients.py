"""The Redis-backed OAuth client store: every client in one Redis hash,
``<key_prefix>oauth_clients``, field ``client_id``, value the client's fields as JSON."""

from __future__ import annotations

import json

from extauthz.oauth.clients import (
    ClientStoreError,
    OAuthClient,
    client_fields,
    client_from_fields,
    is_client_id,
    sorted_clients,
)
from extauthz.store.redis.clients import Redis
from extauthz.store.redis.errors import text, translated


class RedisClientStore:
    """OAuth clients (:class:`~extauthz.oauth.clients.ClientStore`) in Redis, one hash at
    ``<key_prefix>oauth_clients`` mapping ``client_id`` to a JSON object
    (:func:`~extauthz.oauth.clients.client_fields`: name, redirect_uris, scopes, confidential,
    secret_hash, created_at).

    Clients are few (registered by an administrator), so one key holds them all: every
    command touches that one key (Redis Cluster works) and ``list`` is one ``HGETALL``.
    Works with ``decode_responses`` on or off. Raises
    :class:`~extauthz.errors.StoreUnavailable` when Redis fails and
    :class:`~extauthz.oauth.clients.ClientStoreError` naming the key and field when a stored
    record is malformed.
    """

    def __init__(self, client: Redis, key_prefix: str = "extauthz:") -> None:
        self._redis = client
        self.key = key_prefix + "oauth_clients"

    def _parse(self, client_id: str, raw: object) -> OAuthClient:
        try:
            fields = json.loads(text(raw))
            if not isinstance(fields, dict):
                raise ValueError("not a JSON object")
            return client_from_fields(client_id, fields)
        except (ValueError, TypeError) as exc:  # json.JSONDecodeError is a ValueError
            raise ClientStoreError(
                f"redis key {self.key!r} field {client_id[:80]!r}: malformed client: {exc}"
            ) from None

    @translated("oauth client get")
    async def get(self, client_id: str) -> OAuthClient | None:
        if not is_client_id(client_id):
            return None
        raw = await self._redis.hget(self.key, client_id)
        return None if raw is None else self._parse(client_id, raw)

    @translated("oauth client put")
    async def put(self, client: OAuthClient) -> None:
        if not isinstance(client, OAuthClient):
            raise ValueError("put takes an OAuthClient")
        await self._redis.hset(self.key, client.client_id, json.dumps(client_fields(client)))

    @translated("oauth client remove")
    async def remove(self, client_id: str) -> bool:
        if not is_client_id(client_id):
            return False
        return bool(await self._redis.hdel(self.key, client_id))

    @translated("oauth client list")
    async def list(self) -> list[OAuthClient]:
        raw = await self._redis.hgetall(self.key)
        return sorted_clients(self._parse(text(k), v) for k, v in raw.items())
