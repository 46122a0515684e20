"""The OAuth records' protocol over every implementation (memory, and real Redis in
``e2e``): one use of a code or refresh token even under concurrent takes, families that see
their revocation, consent; and a Redis that does not answer raises StoreUnavailable."""

from __future__ import annotations

import asyncio
import time

import pytest
import redis.asyncio

from extauthz.errors import StoreUnavailable
from extauthz.oauth.records import CodeRecord, OAuthRecords, RefreshRecord
from extauthz.store.redis.oauth_records import RedisOAuthRecords
from tests.oauth.harness import Harness
from tests.support import RedisServer


def code_record(family: str = "fam1") -> CodeRecord:
    return CodeRecord("c1", "alice", "https://app.example/cb", "read", "x" * 43, family,
                      time.time() + 60)


def refresh_record(family: str = "fam1", ends: float | None = None) -> RefreshRecord:
    return RefreshRecord("c1", "alice", "read", family, ends or time.time() + 3600)


async def test_a_code_is_taken_once_even_when_taken_concurrently(records: OAuthRecords) -> None:
    await records.put_code("h1", code_record(), 60)
    taken = await asyncio.gather(*(records.take_code("h1") for _ in range(8)))
    assert all(t is not None and isinstance(t.record, CodeRecord) for t in taken)
    assert sum(1 for t in taken if t is not None and t.first) == 1
    assert await records.take_code("unknown") is None


async def test_a_refresh_token_is_used_once_and_peeking_does_not_use_it(
    records: OAuthRecords,
) -> None:
    await records.put_refresh("r1", refresh_record())
    seen = await records.peek_refresh("r1")
    assert seen is not None and seen.first
    taken = await asyncio.gather(*(records.take_refresh("r1") for _ in range(8)))
    assert sum(1 for t in taken if t is not None and t.first) == 1
    after = await records.peek_refresh("r1")
    assert after is not None and not after.first
    await records.put_refresh("old", refresh_record(ends=time.time() - 1))
    assert await records.peek_refresh("old") is None


async def test_a_family_knows_its_members_and_its_revocation(records: OAuthRecords) -> None:
    ends = time.time() + 3600
    assert await records.add_to_family("f1", client_id="c1", sub="alice", expires_at=ends,
                                       sid="s1")
    await records.put_refresh("r1", refresh_record("f1"))
    assert await records.add_to_family("f1", client_id="c1", sub="alice", expires_at=ends,
                                       refresh_hash="r1")
    assert "f1" in await records.client_families("c1")
    assert "f1" in await records.grant_families("alice", "c1")
    assert await records.grant_families("bob", "c1") == frozenset()
    members = await records.revoke_family("f1")
    assert members.sids == {"s1"} and members.refresh_hashes == {"r1"}
    assert await records.peek_refresh("r1") is None
    # a token issued into a revoked family is reported: the issuer revokes it again
    assert not await records.add_to_family("f1", client_id="c1", sub="alice", expires_at=ends,
                                           sid="s2")
    # a family revoked before anything joined it stays revoked
    await records.revoke_family("f2")
    assert not await records.add_to_family("f2", client_id="c1", sub="alice", expires_at=ends,
                                           sid="s3")


async def test_consent_is_remembered_per_user_and_client(records: OAuthRecords) -> None:
    assert await records.get_consent("alice", "c1") is None
    await records.put_consent("alice", "c1", frozenset({"read", "write"}), 60)
    assert await records.get_consent("alice", "c1") == frozenset({"read", "write"})
    assert await records.get_consent("bob", "c1") is None
    assert await records.get_consent("alice", "c2") is None
    await records.drop_consent("alice", "c1")
    assert await records.get_consent("alice", "c1") is None


@pytest.mark.e2e
async def test_redis_records_that_cannot_answer_raise_store_unavailable(
    fresh_redis: RedisServer,
) -> None:
    client = redis.asyncio.Redis.from_url(fresh_redis.url, socket_timeout=2)
    records = RedisOAuthRecords(client, "t:")
    await records.put_code("h1", code_record(), 60)
    fresh_redis.stop()
    try:
        with pytest.raises(StoreUnavailable):
            await records.take_code("h1")
        with pytest.raises(StoreUnavailable):
            await records.add_to_family("f", client_id="c", sub="s", expires_at=time.time() + 9)
        with pytest.raises(StoreUnavailable):
            await records.get_consent("alice", "c1")
    finally:
        await client.aclose()


@pytest.mark.e2e
@pytest.mark.parametrize("records", ["redis"], indirect=True)
async def test_redis_holds_no_code_or_token_in_the_clear(h: Harness, records: OAuthRecords) -> None:
    assert isinstance(records, RedisOAuthRecords)
    code, verifier = await h.code_for()
    body = await (await h.exchange(code, verifier)).json()
    secrets_sent = (code, body["access_token"], body["refresh_token"])
    client = records._redis
    async for key in client.scan_iter(match=records._p + "*"):
        kind = await client.type(key)
        values: list[bytes | str] = [key]
        if kind == b"string":
            values.append(await client.get(key) or b"")
        elif kind == b"set":
            values.extend(await client.smembers(key))
        elif kind == b"hash":
            values.extend((await client.hgetall(key)).values())
        for value in values:
            raw = value if isinstance(value, bytes) else value.encode()
            assert not any(s.encode() in raw for s in secrets_sent), key
