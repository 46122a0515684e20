"""Session-store behaviour, the same tests over the in-memory store and the Redis store
(a ``redis-server`` of this module's own on a free port), plus the manager's idle timeout,
absolute expiry and sliding on an injected clock."""

from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import replace

import pytest
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from extauthz import tokens
from extauthz.errors import (
    Reason,
    StoreUnavailable,
    StoreWriteNotDurable,
    Unauthenticated,
)
from extauthz.store.manager import SessionManager, validate_session_data, validate_subject
from extauthz.store.memory import MemorySessionStore
from extauthz.store.model import Session, SessionStore
from extauthz.store.redis.store import RedisSessionStore
from tests.fixtures.core import FakeClock
from tests.support import free_port

IDLE = 600
ABSOLUTE = 3600


def new_session(
    clock: FakeClock, sub: str = "alice", sid: str | None = None, **kw: object
) -> Session:
    now = clock()
    values: dict[str, object] = {
        "sid": sid or tokens.mint_sid(tokens.subject_tag(sub)),
        "sub": sub,
        "created_at": now,
        "last_seen": now,
        "idle_timeout": IDLE,
        "expires_at": now + ABSOLUTE,
        "scopes": ("read",),
        "roles": ("user",),
        "data": {"tenant": "t1", "n": [1, 2]},
    }
    values.update(kw)
    return Session(**values)  # type: ignore[arg-type]


def a_hash(sub: str = "alice") -> str:
    """A token hash of ``sub``'s tag (on a Redis Cluster a session's keys share its slot)."""
    return tokens.token_hash(tokens.mint_token(tag=tokens.subject_tag(sub)))


# -- the store protocol ---------------------------------------------------------------------------


async def test_create_get_and_get_by_sid(store: SessionStore, clock: FakeClock) -> None:
    s = new_session(clock)
    h = a_hash()
    await store.create(h, s)
    assert await store.get(h) == s
    assert await store.get_by_sid(s.sid) == s
    assert await store.get(a_hash()) is None
    assert await store.get_by_sid("no-such-sid") is None


async def test_touch_replaces_the_record(store: SessionStore, clock: FakeClock) -> None:
    s = new_session(clock)
    h = a_hash()
    await store.create(h, s)
    clock.advance(30)
    touched = s.touched(clock())
    assert await store.touch(h, touched) is True
    assert await store.get(h) == touched
    assert (await store.get(h)).version == s.version + 1  # type: ignore[union-attr]


async def test_touch_never_resurrects_a_revoked_session(
    store: SessionStore, clock: FakeClock
) -> None:
    s = new_session(clock)
    h = a_hash()
    await store.create(h, s)
    assert await store.revoke(h) == s
    assert await store.touch(h, s.touched(clock() + 1)) is False
    assert await store.get(h) is None
    assert await store.get_by_sid(s.sid) is None
    assert await store.touch(a_hash(), s) is False  # never existed


async def test_revoke_returns_what_was_deleted_once(store: SessionStore, clock: FakeClock) -> None:
    s = new_session(clock)
    h = a_hash()
    await store.create(h, s)
    assert await store.revoke(h) == s
    assert await store.revoke(h) is None
    assert await store.list_subject("alice") == []


async def test_revoke_sid(store: SessionStore, clock: FakeClock) -> None:
    keep, drop = new_session(clock), new_session(clock)
    hk, hd = a_hash(), a_hash()
    await store.create(hk, keep)
    await store.create(hd, drop)
    assert await store.revoke_sid(drop.sid) == drop
    assert await store.revoke_sid(drop.sid) is None
    assert await store.get(hd) is None
    assert await store.get(hk) == keep


async def test_revoke_subject_and_list_subject(store: SessionStore, clock: FakeClock) -> None:
    alice = []
    for _ in range(3):
        s = new_session(clock, "alice")
        await store.create(a_hash(), s)
        alice.append(s)
        clock.advance(1)
    bob = new_session(clock, "bob")
    hb = a_hash("bob")
    await store.create(hb, bob)
    assert await store.list_subject("alice") == alice  # oldest first
    assert await store.list_subject("nobody") == []
    assert await store.revoke_subject("alice") == 3
    assert await store.revoke_subject("alice") == 0
    assert await store.list_subject("alice") == []
    for s in alice:
        assert await store.get_by_sid(s.sid) is None
    assert await store.get(hb) == bob
    assert await store.list_subject("bob") == [bob]


async def test_ping_and_close(store: SessionStore) -> None:
    await store.ping()
    assert store.backend in ("memory", "redis")


# -- the manager (idle timeout, absolute expiry, sliding) on an injected clock ---------------------


def manager(
    store: SessionStore, clock: FakeClock, touch_interval: float | None = 0.0
) -> SessionManager:
    return SessionManager(
        store,
        idle_timeout=IDLE,
        absolute_timeout=ABSOLUTE,
        clock=clock,
        touch_interval=touch_interval,
    )


async def expect_denied(m: SessionManager, token: str, *reasons: Reason) -> None:
    with pytest.raises(Unauthenticated) as caught:
        await m.lookup(token)
    assert caught.value.reason in reasons


async def test_create_then_lookup(store: SessionStore, clock: FakeClock) -> None:
    m = manager(store, clock)
    token, created = await m.create("alice", scopes=["a", "b", "a"], roles=["r"], data={"k": "v"})
    assert tokens.has_token_shape(token)
    assert created.sid not in token and token not in created.sid
    found = await m.lookup(token)
    assert (found.sid, found.sub, found.scopes, found.roles, dict(found.data)) == (
        created.sid, "alice", ("a", "b"), ("r",), {"k": "v"},
    )  # fmt: skip
    assert await store.get(token) is None  # keyed by the hash, never by the token
    assert await store.get(tokens.token_hash(token)) is not None


async def test_a_token_with_a_lifetime_lives_exactly_that_long_and_never_slides(
    store: SessionStore, clock: FakeClock
) -> None:
    """An application's access token or an API key: ``lifetime_seconds`` from now, used or
    not; an API key has its own prefix and is looked up like any session."""
    m = manager(store, clock)
    token, created = await m.create(
        "client:app", kind="oauth", client_id="app", lifetime_seconds=600
    )
    key, key_session = await m.create("alice", kind="api_key", lifetime_seconds=IDLE * 3)
    assert tokens.has_token_shape(token) and tokens.has_token_shape(key, tokens.API_KEY_PREFIX)
    assert not tokens.has_token_shape(key)
    assert (created.kind, created.client_id, created.expires_at) == ("oauth", "app", clock() + 600)
    assert (await m.lookup(key)).kind == "api_key"
    for _ in range(5):
        clock.advance(IDLE / 2)  # the key is used, so a login session would slide past this
        assert (await m.lookup(key)).sid == key_session.sid
    clock.now = key_session.expires_at
    await expect_denied(m, key, Reason.SESSION_EXPIRED, Reason.UNKNOWN_SESSION)
    for bad in ({"kind": "admin"}, {"lifetime_seconds": 0}):
        with pytest.raises(ValueError):
            await m.create("alice", **bad)


async def test_idle_timeout(store: SessionStore, clock: FakeClock) -> None:
    m = manager(store, clock)
    token, _ = await m.create("alice")
    clock.advance(IDLE - 1)
    await m.lookup(token)  # slides the idle deadline
    clock.advance(IDLE - 1)
    await m.lookup(token)
    clock.advance(IDLE)
    await expect_denied(m, token, Reason.SESSION_EXPIRED, Reason.UNKNOWN_SESSION)


async def test_absolute_expiry_wins_over_sliding(store: SessionStore, clock: FakeClock) -> None:
    m = manager(store, clock)
    token, created = await m.create("alice")
    while clock() + IDLE / 2 < created.expires_at:
        clock.advance(IDLE / 2)
        await m.lookup(token)
    clock.now = created.expires_at
    await expect_denied(m, token, Reason.SESSION_EXPIRED, Reason.UNKNOWN_SESSION)


async def test_lookup_writes_at_most_once_per_touch_interval(
    store: SessionStore, clock: FakeClock
) -> None:
    m = manager(store, clock, touch_interval=60)
    token, created = await m.create("alice")
    clock.advance(59)
    assert (await m.lookup(token)).version == created.version
    clock.advance(1)
    assert (await m.lookup(token)).version == created.version + 1
    assert (await store.get(tokens.token_hash(token))).last_seen == clock()  # type: ignore[union-attr]


async def test_a_revoked_session_is_remembered_until_its_absolute_expiry(
    store: SessionStore, clock: FakeClock
) -> None:
    """The store keeps a tombstone of a revoked token's hash until the session's absolute
    expiry (as long as its cookie may live): the lookup says ``revoked_session``, then, once
    the tombstone is gone, ``unknown_session``."""
    m = manager(store, clock)
    token, session = await m.create("alice")
    never, _ = await m.create("bob")
    assert (await m.revoke_token(token)) is not None
    await expect_denied(m, token, Reason.REVOKED_SESSION)
    assert await m.was_revoked(token) and not await m.was_revoked(never)
    assert await m.revoke_token(token) is None
    assert await m.was_revoked(token)  # a second revocation does not forget the first
    if isinstance(store, RedisSessionStore):
        # Redis expires the tombstone on its own clock: its TTL is the absolute expiry's
        ttl_ms = await store.client.pttl(store._revoked_key(tokens.token_hash(token)))
        assert (ABSOLUTE - 5) * 1000 < ttl_ms <= ABSOLUTE * 1000
        return
    clock.now = session.expires_at
    await expect_denied(m, token, Reason.UNKNOWN_SESSION)
    assert not await m.was_revoked(token)
    assert await m.revoke_token("not-a-token") is None


async def test_lookup_rejects_a_bad_shape_without_touching_the_store(clock: FakeClock) -> None:
    class NoStore(MemorySessionStore):
        async def get(self, token_hash: str) -> Session | None:
            raise AssertionError("the store was asked")

    m = manager(NoStore(clock), clock)
    token = tokens.mint_token()
    await expect_denied(
        m, token[:-1] + ("A" if token[-1] != "A" else "B"), Reason.MALFORMED_CREDENTIAL
    )


async def test_create_validates_subject_and_data(clock: FakeClock) -> None:
    m = manager(MemorySessionStore(clock), clock)
    for sub in ("", "x" * 257):
        with pytest.raises(ValueError):
            await m.create(sub)
    with pytest.raises(ValueError):
        await m.create("alice", data={"big": "x" * 5000})
    with pytest.raises(ValueError):
        validate_session_data({"f": object()})
    with pytest.raises(ValueError):
        validate_session_data(["not", "an", "object"])  # type: ignore[arg-type]


def test_a_subject_with_any_control_or_bidi_character_is_refused_ascii_or_not() -> None:
    """The all-printable-ASCII fast path of validate_subject takes no control character:
    each C0 character and DEL, in any position, is refused as before, and so are C1, line
    and paragraph separators, lone surrogates and bidirectional controls."""
    unsafe = [chr(c) for c in (*range(32), 127)] + ["\x85", "\u2028", "\u2029", "\ud800",
                                                     "\u202e", "\u2066"]
    for c in unsafe:
        for sub in (c, f"alice{c}", f"{c}alice", f"al{c}ice"):
            with pytest.raises(ValueError):
                validate_subject(sub)
    printable_ascii = "".join(chr(c) for c in range(32, 127))
    assert validate_subject(printable_ascii) == printable_ascii
    assert validate_subject("zoë ☃") == "zoë ☃"


def test_session_data_with_a_non_finite_number_is_refused() -> None:
    """json.dumps would write ``Infinity``, which is no JSON (RFC 8259 section 6): the JWT
    carrying it could not be read by an upstream."""
    for value in (float("inf"), float("-inf"), float("nan")):
        with pytest.raises(ValueError):
            validate_session_data({"n": value})


def test_session_json_round_trip_and_corrupt_records() -> None:
    s = new_session(FakeClock())
    assert Session.from_json(s.to_json()) == s
    for bad in ("", "[]", "{}", '{"sid": 1}', "not json"):
        with pytest.raises(ValueError):
            Session.from_json(bad)


def test_session_kind_and_client_id_round_trip_and_login_records_keep_their_shape() -> None:
    s = new_session(FakeClock())
    assert "kind" not in json.loads(s.to_json()) and "client_id" not in json.loads(s.to_json())
    oauth = replace(s, kind="oauth", client_id="app-1")
    assert Session.from_json(oauth.to_json()) == oauth
    record = json.loads(oauth.to_json())
    assert (record["kind"], record["client_id"]) == ("oauth", "app-1")
    record["kind"] = "admin"  # a kind no version of extauthz wrote
    with pytest.raises(ValueError):
        Session.from_json(json.dumps(record))


def test_session_amr_and_auth_time_round_trip_and_old_records_keep_their_shape() -> None:
    s = new_session(FakeClock())
    assert "amr" not in json.loads(s.to_json()) and "auth_time" not in json.loads(s.to_json())
    assert s.authenticated_at == s.created_at
    strong = replace(s, amr=("pwd", "otp", "mfa"), auth_time=s.created_at + 60)
    assert Session.from_json(strong.to_json()) == strong
    assert strong.authenticated_at == s.created_at + 60
    record = json.loads(strong.to_json())
    assert record["amr"] == ["pwd", "otp", "mfa"]
    record["amr"] = "pwd"  # not a list
    with pytest.raises(ValueError):
        Session.from_json(json.dumps(record))


# -- Redis only ------------------------------------------------------------------------------------


def prefix() -> str:
    return f"t{uuid.uuid4().hex[:8]}:"


@pytest.mark.e2e
async def test_redis_ttl_follows_the_deadline(
    redis_client: aioredis.Redis, clock: FakeClock
) -> None:
    p = prefix()
    store = RedisSessionStore(redis_client, p, clock=clock)
    # a session from before tags (untagged token and sid): the keys it had then
    s = new_session(clock, sid=uuid.uuid4().hex, expires_at=clock() + 2 * IDLE)
    h = tokens.token_hash(tokens.mint_token())
    await store.create(h, s)
    ttl = await redis_client.pttl(f"{p}session:{h}")
    assert IDLE * 1000 - 2000 < ttl <= IDLE * 1000  # idle deadline comes first
    assert IDLE * 1000 - 2000 < await redis_client.pttl(f"{p}sid:{s.sid}") <= IDLE * 1000
    subject_ttl = await redis_client.pttl(f"{p}subject:alice")
    assert 2 * IDLE * 1000 - 2000 < subject_ttl <= 2 * IDLE * 1000  # absolute expiry
    # slide to 100 s before the absolute expiry: now the absolute expiry comes first
    clock.advance(2 * IDLE - 100)
    assert await store.touch(h, s.touched(clock()))
    ttl = await redis_client.pttl(f"{p}session:{h}")
    assert 98_000 < ttl <= 100_000
    assert 98_000 < await redis_client.pttl(f"{p}sid:{s.sid}") <= 100_000


@pytest.mark.e2e
async def test_redis_touch_after_revoke_leaves_no_key(
    redis_client: aioredis.Redis, clock: FakeClock
) -> None:
    p = prefix()
    store = RedisSessionStore(redis_client, p, clock=clock)
    s = new_session(clock, sid=uuid.uuid4().hex)  # from before tags
    h = tokens.token_hash(tokens.mint_token())
    await store.create(h, s)
    await store.revoke(h)
    assert await store.touch(h, s.touched(clock())) is False
    assert await redis_client.exists(f"{p}session:{h}", f"{p}sid:{s.sid}") == 0


@pytest.mark.e2e
async def test_redis_keys_never_contain_the_token(
    redis_client: aioredis.Redis, clock: FakeClock
) -> None:
    p = prefix()
    m = manager(RedisSessionStore(redis_client, p, clock=clock), clock)
    token, _ = await m.create("alice")
    keys = [k.decode() async for k in redis_client.scan_iter(match=f"{p}*")]
    assert keys and not any(token in k for k in keys)
    for key in keys:
        kind = await redis_client.type(key)
        assert isinstance(kind, bytes)
        value = await redis_client.get(key) if kind == b"string" else b""
        assert isinstance(value, bytes) and token.encode() not in value


@pytest.mark.e2e
async def test_redis_corrupt_record_is_no_session(
    redis_client: aioredis.Redis, clock: FakeClock
) -> None:
    p = prefix()
    store = RedisSessionStore(redis_client, p, clock=clock)
    h = a_hash()
    await redis_client.set(store.keys.record(h), b"\xff{not json")
    assert await store.get(h) is None


@pytest.mark.e2e
async def test_redis_revoke_publishes_an_invalidation(
    redis_client: aioredis.Redis, clock: FakeClock
) -> None:
    p = prefix()
    store = RedisSessionStore(redis_client, p, clock=clock)
    h = a_hash()
    await store.create(h, new_session(clock))
    pubsub = redis_client.pubsub()
    await pubsub.subscribe(store.invalidation_channel)
    try:
        await pubsub.get_message(timeout=1.0)  # the subscribe confirmation
        await store.revoke(h)
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=2.0)
        assert message is not None and message["data"].decode().endswith(h)
    finally:
        await pubsub.aclose()


@pytest.mark.e2e
async def test_redis_wait_without_replicas_is_not_durable(
    redis_client: aioredis.Redis, clock: FakeClock
) -> None:
    store = RedisSessionStore(
        redis_client, prefix(), wait_replicas=1, wait_timeout_ms=50, clock=clock
    )
    with pytest.raises(StoreWriteNotDurable, match="0 of 1 replicas"):
        await store.create(a_hash(), new_session(clock))


async def test_redis_on_a_dead_port_is_unavailable_for_every_call(clock: FakeClock) -> None:
    client = aioredis.Redis(
        host="127.0.0.1", port=free_port(), socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 0)
    )
    store = RedisSessionStore(client, prefix(), clock=clock)
    s = new_session(clock)
    calls = [
        store.ping(),
        store.get(a_hash()),
        store.create(a_hash(), s),
        store.touch(a_hash(), s),
        store.get_by_sid("x"),
        store.revoke(a_hash()),
        store.revoke_sid("x"),
        store.revoke_subject("alice"),
        store.list_subject("alice"),
        # regression: lost its @translated when ping moved beside it into RedisPrimary
        store.online_replicas(),
    ]
    try:
        for call in calls:
            with pytest.raises(StoreUnavailable):
                await asyncio.wait_for(call, 5)
    finally:
        await client.aclose()


async def test_memory_store_drops_expired_records(clock: FakeClock) -> None:
    store = MemorySessionStore(clock)
    s = new_session(clock)
    h = a_hash()
    await store.create(h, s)
    clock.advance(IDLE)
    assert await store.get(h) is None
    assert await store.get_by_sid(s.sid) is None
    assert await store.touch(h, replace(s, last_seen=clock())) is False
