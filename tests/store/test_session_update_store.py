"""``SessionStore.update``: compare-and-set on the record's version, on the in-memory store and
on a real Redis (a ``redis-server`` of this module's own); the push invalidation it publishes;
and that the idle-deadline slide (``touch``) never writes back data an update replaced."""

from __future__ import annotations

import uuid
from dataclasses import replace

import pytest
import redis.asyncio as aioredis

from extauthz import tokens
from extauthz.store.manager import SessionManager
from extauthz.store.model import Session, SessionStore, VersionConflict
from extauthz.store.redis.store import RedisSessionStore
from tests.fixtures.core import FakeClock
from tests.support import RedisServer


def manager(store: SessionStore, clock: FakeClock) -> SessionManager:
    return SessionManager(store, idle_timeout=600, absolute_timeout=3600, clock=clock,
                          touch_interval=0)  # fmt: skip


def with_data(**data: object) -> object:
    return lambda s: replace(s, data={**s.data, **data})


async def test_update_replaces_data_and_bumps_the_version(
    store: SessionStore, clock: FakeClock
) -> None:
    m = manager(store, clock)
    token, session = await m.create("alice", scopes=["read"], data={"a": 1})
    updated = await store.update(session.sid, with_data(b=2))  # type: ignore[arg-type]
    assert updated is not None
    assert updated.data == {"a": 1, "b": 2}
    assert updated.version == session.version + 1
    assert await store.get(tokens.token_hash(token)) == updated
    assert await store.get_by_sid(session.sid) == updated


async def test_update_keeps_identity_and_expiry_whatever_the_change_returns(
    store: SessionStore, clock: FakeClock
) -> None:
    _, session = await manager(store, clock).create("alice")
    updated = await store.update(
        session.sid, lambda s: replace(s, sid="other", expires_at=s.expires_at + 9999)
    )
    assert updated is not None
    assert (updated.sid, updated.expires_at) == (session.sid, session.expires_at)


async def test_update_of_a_missing_session_and_a_refused_change(
    store: SessionStore, clock: FakeClock
) -> None:
    assert await store.update("no-such-sid", with_data(a=1)) is None  # type: ignore[arg-type]
    token, session = await manager(store, clock).create("alice", data={"a": 1})

    def refuse(s: Session) -> Session:
        raise ValueError("no")

    with pytest.raises(ValueError):
        await store.update(session.sid, refuse)
    assert await store.get(tokens.token_hash(token)) == session
    await store.revoke(tokens.token_hash(token))
    assert await store.update(session.sid, with_data(a=2)) is None  # type: ignore[arg-type]


async def test_a_slide_never_writes_back_data_an_update_replaced(
    store: SessionStore, clock: FakeClock
) -> None:
    """A Check read the record, an update landed, then the Check slides the idle deadline:
    the slide is refused and the lookup answers the updated record."""
    m = manager(store, clock)
    token, session = await m.create("alice", data={"theme": "light"})
    token_hash = tokens.token_hash(token)
    stale = await store.get(token_hash)
    assert stale is not None
    await store.update(session.sid, with_data(theme="dark"))  # type: ignore[arg-type]
    clock.advance(5)
    assert await store.touch(token_hash, stale.touched(clock())) is False
    assert (await store.get(token_hash)).data == {"theme": "dark"}  # type: ignore[union-attr]

    # the same through the manager, the update racing the lookup between its read and slide
    real_get = store.get

    async def get_then_update(h: str) -> Session | None:
        found = await real_get(h)
        await store.update(session.sid, with_data(theme="blue"))  # type: ignore[arg-type]
        return found

    store.get = get_then_update  # type: ignore[method-assign,assignment]
    clock.advance(5)
    looked_up = await m.lookup(token)
    store.get = real_get  # type: ignore[method-assign]
    assert looked_up.data == {"theme": "blue"}
    assert (await real_get(token_hash)).data == {"theme": "blue"}  # type: ignore[union-attr]


@pytest.mark.e2e
async def test_redis_update_retries_on_a_concurrent_write_then_gives_up(
    redis_process: RedisServer, clock: FakeClock
) -> None:
    """Another writer (a slide) changes the record between the update's read and its write:
    the attempt loses and is made again on the new record; a writer that always gets in
    between makes the update give up with ``VersionConflict`` after ``attempts``."""
    client = aioredis.Redis.from_url(redis_process.url)
    try:
        store = RedisSessionStore(client, f"u{uuid.uuid4().hex[:8]}:", clock=clock)
        token, session = await manager(store, clock).create("alice", data={"n": 0})
        token_hash = tokens.token_hash(token)
        read_record = store._get_record
        races = 0

        async def read_then_slide(h: str) -> object:
            nonlocal races
            raw = await read_record(h)
            if races > 0:
                races -= 1
                current = await store.get(token_hash)
                assert current is not None
                assert await store.touch(token_hash, current.touched(clock()))
            return raw

        store._get_record = read_then_slide  # type: ignore[method-assign,assignment]
        bump = lambda s: replace(s, data={"n": s.data["n"] + 1})  # noqa: E731

        races = 1  # the first attempt loses, the second is applied
        updated = await store.update(session.sid, bump, attempts=3)
        assert updated is not None and updated.data == {"n": 1}

        races = 3  # every attempt loses
        with pytest.raises(VersionConflict):
            await store.update(session.sid, bump, attempts=3)
        stored = await store.get(token_hash)
        assert stored is not None and stored.data == {"n": 1}
    finally:
        await client.aclose()


@pytest.mark.e2e
async def test_redis_update_publishes_an_invalidation(
    redis_process: RedisServer, clock: FakeClock
) -> None:
    client = aioredis.Redis.from_url(redis_process.url)
    pubsub = client.pubsub()
    try:
        store = RedisSessionStore(client, f"u{uuid.uuid4().hex[:8]}:", clock=clock)
        token, session = await manager(store, clock).create("alice")
        await pubsub.subscribe(store.invalidation_channel)
        await store.update(session.sid, with_data(a=1))  # type: ignore[arg-type]
        message = None
        for _ in range(50):
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.1)
            if message is not None:
                break
        assert message is not None
        seq, _, published = message["data"].decode().partition(":")
        assert published == tokens.token_hash(token) and int(seq) > 0
    finally:
        await pubsub.aclose()
        await client.aclose()
