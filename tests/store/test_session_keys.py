"""The session keys in Redis (extauthz.store.redis.keys): every key of a session, and of every
session of a subject, in one Redis Cluster slot; sessions written before tags keep working."""

from __future__ import annotations

import uuid
from dataclasses import replace

import pytest
import redis.asyncio as aioredis
from redis.crc import key_slot

from extauthz import tokens
from extauthz.errors import Reason, Unauthenticated
from extauthz.store.manager import SessionManager
from extauthz.store.model import Session
from extauthz.store.redis.keys import SessionKeys, is_tagged
from extauthz.store.redis.store import RedisSessionStore
from tests.fixtures.core import FakeClock

pytestmark = pytest.mark.e2e

IDLE = 600
ABSOLUTE = 3600


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def _manager(store: RedisSessionStore, clock: FakeClock) -> SessionManager:
    return SessionManager(
        store, idle_timeout=IDLE, absolute_timeout=ABSOLUTE, clock=clock, touch_interval=0.0
    )


async def _keys(redis_client: aioredis.Redis, prefix: str) -> list[str]:
    """The session keys under ``prefix`` (not the invalidation's sequence number)."""
    found = [k.decode() async for k in redis_client.scan_iter(match=f"{prefix}*")]
    return sorted(k for k in found if not k.startswith(f"{prefix}invalidate"))


async def test_every_key_of_a_subjects_sessions_shares_one_slot(
    redis_client: aioredis.Redis, clock: FakeClock
) -> None:
    """Create two sessions of one subject, touch, update, rotate and revoke one of them: every
    key written (record, sid index, subject set, issued markers, successor, tombstone) carries
    the subject's tag and maps to one slot; another subject's keys to its own tag."""
    prefix = f"k{uuid.uuid4().hex[:8]}:"
    store = RedisSessionStore(redis_client, prefix, clock=clock)
    sessions = _manager(store, clock)
    first, session = await sessions.create("alice", roles=["admin"])
    second, _ = await sessions.create("alice")
    clock.advance(1)
    await sessions.lookup(first)  # a touch
    await store.update(session.sid, lambda s: s)
    rotated = await sessions.rotate(first)
    assert rotated.token is not None and len(rotated.token) == tokens.TAGGED_TOKEN_LENGTH
    await sessions.revoke_token(second)
    tag = tokens.subject_tag("alice")
    keys = await _keys(redis_client, prefix)
    index = SessionKeys(prefix).slot_index(tag)
    assert index in keys and index.endswith("}i")  # the slot's index, named by the slot
    tagged = [key for key in keys if key != index]
    kinds = {key[len(prefix) + len(tag) + 2] for key in tagged}
    assert kinds == {"s", "n", "r"}, keys  # records, successor, tombstone
    assert all(key.startswith(f"{prefix}{{{tag}}}") for key in tagged), keys
    assert len({key_slot(key.encode()) for key in keys}) == 1
    other, _ = await sessions.create("bob")
    bob_keys = set(await _keys(redis_client, prefix)) - set(keys)
    assert len(bob_keys) == 2  # the record and the index of bob's slot
    bob_slot = key_slot(tokens.subject_tag("bob").encode())  # the slot of {tag} is the tag's
    assert {key_slot(k.encode()) for k in bob_keys} == {bob_slot}
    assert await sessions.revoke_token(other) is not None
    assert await store.revoke_subject("alice") == 1
    assert [k for k in await _keys(redis_client, prefix) if "}s:" in k] == []


async def _legacy_session(
    redis_client: aioredis.Redis, prefix: str, clock: FakeClock, sub: str
) -> tuple[str, Session]:
    """A session as extauthz wrote it before tags: an untagged token and sid, the keys
    ``session:``/``sid:``/``issued:``/``subject:`` and a JSON record."""
    token = tokens.mint_token()
    token_hash = tokens.token_hash(token)
    now = clock()
    session = Session(
        sid=tokens.mint_sid(None), sub=sub, created_at=now, last_seen=now,
        idle_timeout=IDLE, expires_at=now + ABSOLUTE, roles=("user",),
    )
    assert not is_tagged(token_hash) and len(token) == tokens.TOKEN_LENGTH
    await redis_client.set(f"{prefix}session:{token_hash}", session.to_json(), px=IDLE * 1000)
    await redis_client.set(f"{prefix}sid:{session.sid}", token_hash, px=IDLE * 1000)
    await redis_client.set(f"{prefix}issued:{token_hash}", "1", px=ABSOLUTE * 1000)
    await redis_client.sadd(f"{prefix}subject:{sub}", session.sid)
    return token, session


async def test_a_session_from_before_tags_keeps_working(
    redis_client: aioredis.Redis, clock: FakeClock
) -> None:
    """Looked up, touched, updated, rotated (its new token stays untagged, its keys where they
    were), listed with the subject's tagged sessions, and revoked with them."""
    prefix = f"o{uuid.uuid4().hex[:8]}:"
    store = RedisSessionStore(redis_client, prefix, clock=clock)
    sessions = _manager(store, clock)
    old, session = await _legacy_session(redis_client, prefix, clock, "carol")
    new, _ = await sessions.create("carol")
    clock.advance(1)
    assert (await redis_client.get(f"{prefix}session:{tokens.token_hash(old)}") or b"")[:1] == b"{"
    assert (await sessions.lookup(old)).sid == session.sid
    # the touch rewrote the JSON record compactly, in place
    raw = await redis_client.get(f"{prefix}session:{tokens.token_hash(old)}")
    assert raw is not None and raw[:1] != b"{" and Session.from_record(raw).version == 2
    updated = await store.update(session.sid, lambda s: s)
    assert updated is not None and updated.version == 3  # touched, then updated
    rotated = await sessions.rotate(old)
    assert rotated.token is not None and len(rotated.token) == tokens.TOKEN_LENGTH
    assert (await sessions.lookup(rotated.token)).sid == session.sid
    assert await redis_client.exists(f"{prefix}session:{tokens.token_hash(rotated.token)}") == 1
    assert await redis_client.get(f"{prefix}sid:{session.sid}") == tokens.token_hash(
        rotated.token
    ).encode()
    listed = await store.list_subject("carol")
    assert sorted(s.sid for s in listed) == sorted([session.sid, (await sessions.lookup(new)).sid])
    assert await store.revoke_subject("carol") == 2
    for token in (rotated.token, new):
        with pytest.raises(Unauthenticated) as denied:
            await sessions.lookup(token)
        assert denied.value.reason == Reason.REVOKED_SESSION
    keys = SessionKeys(prefix)
    assert await redis_client.exists(keys.index(session.sid)[0], keys.legacy_subject("carol")) == 0


async def test_a_key_prefix_with_a_brace_would_move_the_tag() -> None:
    """The hash tag is the first ``{...}`` of a key: the prefix must hold no brace (the
    settings refuse one); the keys then hash on the tag alone."""
    keys = SessionKeys("extauthz:")
    token_hash = tokens.token_hash(tokens.mint_token(tag="Zz09"))
    assert key_slot(keys.record(token_hash).encode()) == key_slot(b"Zz09")
    index, _ = keys.index(tokens.mint_sid(tokens.subject_tag("x{y}")))
    assert key_slot(index.encode()) == key_slot(tokens.subject_tag("x{y}").encode())


async def test_a_json_record_is_read_and_rewritten_compactly(
    redis_client: aioredis.Redis, clock: FakeClock
) -> None:
    """A record in JSON (the encoding before MessagePack) under tagged keys: read by the store
    and by the scripts (the version of a session update's compare-and-set), and written back
    compactly by the update, which publishes it."""
    prefix = f"j{uuid.uuid4().hex[:8]}:"
    store = RedisSessionStore(redis_client, prefix, clock=clock)
    sessions = _manager(store, clock)
    token, session = await sessions.create("dave", roles=["user"], data={"n": 1})
    key = SessionKeys(prefix).record(tokens.token_hash(token))
    await redis_client.set(key, session.to_json(), keepttl=True)
    assert Session.from_record(await redis_client.get(key) or b"") == session
    assert (await sessions.lookup(token)) == session.touched(clock())  # read, then touched
    assert (await redis_client.get(key) or b"")[:1] != b"{"
    await redis_client.set(key, session.to_json(), keepttl=True)  # JSON again, version 1
    updated = await store.update(session.sid, lambda s: replace(s, data={"n": 2}))
    assert updated is not None and updated.version == 2 and updated.data == {"n": 2}
    raw = await redis_client.get(key)
    assert raw is not None and raw[:1] != b"{" and Session.from_record(raw) == updated
    assert len(raw) < len(updated.to_json()) / 2
