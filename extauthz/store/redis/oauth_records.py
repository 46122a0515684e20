"""The authorization server's records in Redis (:class:`~extauthz.oauth.records.OAuthRecords`).

Keys under ``<key_prefix>oauth:`` (hashes are :func:`extauthz.tokens.token_hash` of a code
or refresh token; ``<subh>`` is SHA-256 of the subject):

- ``code:<hash>`` the code's JSON, with a TTL; ``code_used:<hash>`` set once (``SET NX``),
  the atomic one use;
- ``rt:<hash>`` a refresh token's JSON until its family's end; ``rt_used:<hash>`` its use;
- ``fam:<id>`` (hash: ``client_id``, ``sub``, ``revoked``), ``fam:<id>:sids`` and
  ``fam:<id>:rts`` (sets), until the family's end;
- ``client:<client_id>:fams`` and ``grant:<subh>:<client_id>:fams`` (sets of family ids);
- ``consent:<subh>:<client_id>`` the approved scopes (JSON list), with a TTL.

Adding to a family and revoking it are each one ``MULTI``: an add either sees the
revocation or is seen by it. On a Redis Cluster the keys that one ``MULTI`` reads or writes
share a hash tag: ``rt:{<hash>}``/``rt_used:{<hash>}`` and ``fam:{<id>}``, ``fam:{<id>}:sids``,
``fam:{<id>}:rts`` (:func:`~extauthz.store.redis.cluster.tagged`; the names on a single primary
are unchanged); the refresh tokens of a revoked family are then deleted without ``MULTI``.
Every Redis failure raises :class:`~extauthz.errors.StoreUnavailable`; a malformed record reads
as absent.
"""

from __future__ import annotations

import hashlib
import json
import time

from extauthz.oauth.records import CodeRecord, FamilyMembers, RefreshRecord, Taken
from extauthz.store.redis.clients import Redis
from extauthz.store.redis.cluster import is_cluster, tagged
from extauthz.store.redis.errors import text, translated

REVOKED_MEMORY_SECONDS = 3600  # a family revoked before anything joined it


def _subh(sub: str) -> str:
    return hashlib.sha256(sub.encode("utf-8", "surrogatepass")).hexdigest()


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))


class RedisOAuthRecords:
    """:class:`~extauthz.oauth.records.OAuthRecords` in Redis (works with
    ``decode_responses`` on or off)."""

    def __init__(self, client: Redis, key_prefix: str = "extauthz:") -> None:
        self._redis = client
        self._p = key_prefix + "oauth:"

    # -- codes ---------------------------------------------------------------------------

    @translated("oauth put_code")
    async def put_code(self, code_hash: str, record: CodeRecord, ttl: float) -> None:
        await self._redis.set(self._p + "code:" + code_hash, record.to_json(), px=_ms(ttl))

    @translated("oauth take_code")
    async def take_code(self, code_hash: str) -> Taken | None:
        key = self._p + "code:" + code_hash
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.get(key)
            pipe.pttl(key)
            raw, ttl = await pipe.execute()
        if raw is None:
            return None
        try:
            record = CodeRecord.from_json(text(raw))
        except ValueError:
            return None
        first = await self._redis.set(
            self._p + "code_used:" + code_hash, "1", nx=True, px=max(int(ttl), 1000)
        )
        return Taken(record, bool(first))

    # -- refresh tokens ------------------------------------------------------------------

    def _rt(self, token_hash: str, used: bool = False) -> str:
        return self._p + ("rt_used:" if used else "rt:") + tagged(token_hash, self._redis)

    @translated("oauth put_refresh")
    async def put_refresh(self, token_hash: str, record: RefreshRecord) -> None:
        await self._redis.set(
            self._rt(token_hash), record.to_json(),
            pxat=_ms(record.family_expires_at),
        )

    async def _refresh(self, token_hash: str) -> tuple[RefreshRecord, bool] | None:
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.get(self._rt(token_hash))
            pipe.exists(self._rt(token_hash, used=True))
            raw, used = await pipe.execute()
        if raw is None:
            return None
        try:
            record = RefreshRecord.from_json(text(raw))
        except ValueError:
            return None
        if time.time() >= record.family_expires_at:
            return None
        return record, bool(used)

    @translated("oauth peek_refresh")
    async def peek_refresh(self, token_hash: str) -> Taken | None:
        found = await self._refresh(token_hash)
        return Taken(found[0], not found[1]) if found is not None else None

    @translated("oauth take_refresh")
    async def take_refresh(self, token_hash: str) -> Taken | None:
        found = await self._refresh(token_hash)
        if found is None:
            return None
        record = found[0]
        first = await self._redis.set(
            self._rt(token_hash, used=True), "1", nx=True, pxat=_ms(record.family_expires_at)
        )
        return Taken(record, bool(first))

    # -- families ------------------------------------------------------------------------

    def _fam(self, family: str) -> str:
        return self._p + "fam:" + tagged(family, self._redis)

    def _client_index(self, client_id: str) -> str:
        return self._p + "client:" + client_id + ":fams"

    def _grant_index(self, sub: str, client_id: str) -> str:
        return self._p + "grant:" + _subh(sub) + ":" + client_id + ":fams"

    @translated("oauth add_to_family")
    async def add_to_family(
        self,
        family: str,
        *,
        client_id: str,
        sub: str,
        expires_at: float,
        sid: str | None = None,
        refresh_hash: str | None = None,
    ) -> bool:
        fam, until = self._fam(family), _ms(expires_at)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hsetnx(fam, "client_id", client_id)
            pipe.hsetnx(fam, "sub", sub)
            if sid is not None:
                pipe.sadd(fam + ":sids", sid)
            if refresh_hash is not None:
                pipe.sadd(fam + ":rts", refresh_hash)
            for key in (fam, fam + ":sids", fam + ":rts"):
                pipe.pexpireat(key, until, gt=True)
                pipe.pexpireat(key, until, nx=True)
            pipe.hget(fam, "revoked")
            results = await pipe.execute()
        for index in (self._client_index(client_id), self._grant_index(sub, client_id)):
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.sadd(index, family)
                pipe.pexpireat(index, until, gt=True)
                pipe.pexpireat(index, until, nx=True)
                await pipe.execute()
        return results[-1] is None

    @translated("oauth revoke_family")
    async def revoke_family(self, family: str) -> FamilyMembers:
        fam = self._fam(family)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(fam, "revoked", "1")
            pipe.pexpire(fam, _ms(REVOKED_MEMORY_SECONDS), nx=True)
            # raw SMEMBERS: redis-py 8.1's cluster MULTI hands smembers()'s ``keys=`` to the
            # reply callback, which refuses it (TypeError)
            pipe.execute_command("SMEMBERS", fam + ":sids")
            pipe.execute_command("SMEMBERS", fam + ":rts")
            pipe.hget(fam, "client_id")
            _, _, sids, rts, client_id = await pipe.execute()
        hashes = frozenset(text(h) for h in rts)
        # the family is marked revoked above: what follows needs no MULTI, and a cluster's
        # refresh tokens live in many slots
        async with self._redis.pipeline(transaction=not is_cluster(self._redis)) as pipe:
            for token_hash in hashes:
                pipe.delete(self._rt(token_hash))
            if client_id is not None:
                pipe.srem(self._client_index(text(client_id)), family)
            await pipe.execute()
        return FamilyMembers(frozenset(text(s) for s in sids), hashes)

    @translated("oauth client_families")
    async def client_families(self, client_id: str) -> frozenset[str]:
        return frozenset(text(f) for f in await self._redis.smembers(self._client_index(client_id)))

    @translated("oauth grant_families")
    async def grant_families(self, sub: str, client_id: str) -> frozenset[str]:
        found = await self._redis.smembers(self._grant_index(sub, client_id))
        return frozenset(text(f) for f in found)

    # -- consent -------------------------------------------------------------------------

    def _consent(self, sub: str, client_id: str) -> str:
        return self._p + "consent:" + _subh(sub) + ":" + client_id

    @translated("oauth get_consent")
    async def get_consent(self, sub: str, client_id: str) -> frozenset[str] | None:
        raw = await self._redis.get(self._consent(sub, client_id))
        if raw is None:
            return None
        try:
            scopes = json.loads(text(raw))
        except ValueError:
            return None
        if not isinstance(scopes, list) or not all(isinstance(s, str) for s in scopes):
            return None
        return frozenset(scopes)

    @translated("oauth put_consent")
    async def put_consent(
        self, sub: str, client_id: str, scopes: frozenset[str], ttl: float
    ) -> None:
        await self._redis.set(
            self._consent(sub, client_id), json.dumps(sorted(scopes)), px=_ms(ttl)
        )

    @translated("oauth drop_consent")
    async def drop_consent(self, sub: str, client_id: str) -> None:
        await self._redis.delete(self._consent(sub, client_id))
