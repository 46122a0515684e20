"""Token rotation (:meth:`SessionManager.rotate`) on the in-memory store and on a real Redis:
one new token per rotation however many callers race, the old token valid during the grace
and revoked after it, revocation of the session ending both tokens, and no rotation of a token
that names no live session."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable

import pytest
import redis.asyncio as aioredis

from extauthz import tokens
from extauthz.errors import Reason, Unauthenticated
from extauthz.store.cache import CachingSessionStore, lookup_source
from extauthz.store.manager import Rotated, SessionManager
from extauthz.store.memory import MemorySessionStore
from extauthz.store.model import Session, SessionStore, Successor
from extauthz.store.redis.channel import Channel
from extauthz.store.redis.invalidation import InvalidationSubscriber
from extauthz.store.redis.keys import SessionKeys
from extauthz.store.redis.membership import Membership
from extauthz.store.redis.store import RedisSessionStore
from tests.fixtures.core import FakeClock
from tests.support import RedisServer

GRACE = 5.0
RACERS = 50

StoreFactory = Callable[[], SessionStore]


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.e2e)])
async def stores(
    request: pytest.FixtureRequest, clock: FakeClock
) -> AsyncIterator[StoreFactory]:
    """Builds stores over one shared state: the same dict for memory, the same Redis (a client
    of its own per store, as separate nodes have) for Redis."""
    if request.param == "memory":
        shared = MemorySessionStore(clock=clock)
        yield lambda: shared
        return
    server: RedisServer = request.getfixturevalue("redis_process")
    prefix = f"r{uuid.uuid4().hex[:8]}:"
    clients: list[aioredis.Redis] = []

    def build() -> SessionStore:
        clients.append(aioredis.Redis.from_url(server.url))
        return RedisSessionStore(clients[-1], prefix, clock=clock)

    yield build
    for client in clients:
        await client.aclose()


def manager(store: SessionStore, clock: FakeClock) -> SessionManager:
    return SessionManager(
        store, idle_timeout=600, absolute_timeout=3600, clock=clock, rotation_grace_seconds=GRACE
    )


async def expect_denied(reason: Reason, call: object) -> None:
    with pytest.raises(Unauthenticated) as caught:
        await call  # type: ignore[misc]
    assert caught.value.reason == reason


async def test_rotation_keeps_the_session_and_the_old_token_lives_only_for_the_grace(
    stores: StoreFactory, clock: FakeClock
) -> None:
    sessions = manager(stores(), clock)
    old, session = await sessions.create("alice", scopes=["read"], data={"cart": 3})
    clock.advance(10)
    rotated = await sessions.rotate(old)
    assert rotated.created and rotated.token is not None and rotated.token != old
    assert tokens.has_token_shape(rotated.token)
    assert rotated.grace_until == clock() + GRACE
    new = rotated.session
    assert (new.sid, new.sub, new.scopes) == (session.sid, "alice", ("read",))
    assert dict(new.data) == {"cart": 3}
    assert (new.created_at, new.expires_at, new.rotated_at) == (
        session.created_at,
        session.expires_at,
        clock(),
    )
    assert new.token_issued_at == clock() and session.token_issued_at == session.created_at
    assert await sessions.store.token_hash_of(session.sid) == tokens.token_hash(rotated.token)

    # during the grace the old token still reaches the session, flagged as superseded
    clock.advance(GRACE - 0.5)
    found = await sessions.find(old)
    assert found.superseded and found.session.sid == session.sid
    assert not (await sessions.find(rotated.token)).superseded

    # after it, the old token is a stale cookie: revoked_session, not a guess
    clock.advance(1)
    await expect_denied(Reason.REVOKED_SESSION, sessions.lookup(old))
    await expect_denied(Reason.REVOKED_SESSION, sessions.rotate(old))
    assert (await sessions.lookup(rotated.token)).sid == session.sid
    assert [s.sid for s in await sessions.store.list_subject("alice")] == [session.sid]


async def test_concurrent_rotations_of_one_token_make_exactly_one_new_token(
    stores: StoreFactory, clock: FakeClock
) -> None:
    # every racer on a manager (and, on Redis, a connection) of its own, as separate nodes
    racers = [manager(stores(), clock) for _ in range(RACERS)]
    old, session = await racers[0].create("alice")
    clock.advance(10)
    results = await asyncio.gather(*(r.rotate(old) for r in racers))
    assert sum(r.created for r in results) == 1
    new_tokens = {r.token for r in results}
    assert len(new_tokens) == 1 and None not in new_tokens
    (new,) = new_tokens
    assert new is not None
    assert {r.session.sid for r in results} == {session.sid}
    store = racers[0].store
    assert await store.token_hash_of(session.sid) == tokens.token_hash(new)
    assert len(await store.list_subject("alice")) == 1
    assert (await racers[1].lookup(old)).sid == session.sid  # nobody lost the session
    assert (await racers[2].lookup(new)).sid == session.sid


async def test_a_rotated_token_is_not_rotated_again_during_its_grace(
    stores: StoreFactory, clock: FakeClock
) -> None:
    sessions = manager(stores(), clock)
    old, _ = await sessions.create("alice")
    first = await sessions.rotate(old)
    clock.advance(1)
    again = await sessions.rotate(old)
    assert not again.created
    assert again.token == first.token and again.grace_until == first.grace_until
    # the new token itself can be rotated: a second, separate rotation
    assert first.token is not None
    second = await sessions.rotate(first.token)
    assert second.created and second.token not in (old, first.token)
    # the oldest token follows the chain within its grace, and learns the newest token
    latest = await sessions.rotate(old)
    assert not latest.created and latest.token == second.token
    assert (await sessions.find(old)).superseded


async def test_revoking_the_session_ends_the_new_and_the_old_token(
    stores: StoreFactory, clock: FakeClock
) -> None:
    sessions = manager(stores(), clock)
    old, session = await sessions.create("alice")
    rotated = await sessions.rotate(old)
    assert rotated.token is not None
    assert await sessions.store.revoke_sid(session.sid) is not None
    await expect_denied(Reason.REVOKED_SESSION, sessions.lookup(rotated.token))
    await expect_denied(Reason.REVOKED_SESSION, sessions.lookup(old))  # within its grace
    await expect_denied(Reason.REVOKED_SESSION, sessions.rotate(old))


async def test_a_logout_with_the_old_token_during_the_grace_ends_the_session(
    stores: StoreFactory, clock: FakeClock
) -> None:
    sessions = manager(stores(), clock)
    old, session = await sessions.create("alice")
    rotated = await sessions.rotate(old)
    assert rotated.token is not None
    gone = await sessions.revoke_token(old)
    assert gone is not None and gone.sid == session.sid
    await expect_denied(Reason.REVOKED_SESSION, sessions.lookup(rotated.token))


async def test_rotating_a_token_of_no_live_session_fails_closed(
    stores: StoreFactory, clock: FakeClock
) -> None:
    sessions = manager(stores(), clock)
    revoked, _ = await sessions.create("alice")
    await sessions.revoke_token(revoked)
    await expect_denied(Reason.REVOKED_SESSION, sessions.rotate(revoked))
    await expect_denied(Reason.UNKNOWN_SESSION, sessions.rotate(tokens.mint_token()))
    await expect_denied(Reason.MALFORMED_CREDENTIAL, sessions.rotate("xat_nope"))
    expired, _ = await sessions.create("bob")
    clock.advance(601)  # idle timeout (the memory store forgets such a record at once)
    with pytest.raises(Unauthenticated) as caught:
        await sessions.rotate(expired)
    assert caught.value.reason in (Reason.SESSION_EXPIRED, Reason.UNKNOWN_SESSION)
    # nothing was created for anyone
    assert await sessions.store.list_subject("alice") == []
    assert await sessions.store.token_hash_of("no-such-sid") is None


async def test_a_record_changed_since_it_was_read_is_not_rotated(
    stores: StoreFactory, clock: FakeClock
) -> None:
    store = stores()
    sessions = manager(store, clock)
    old, session = await sessions.create("alice", data={"v": 1})
    old_hash = tokens.token_hash(old)
    changed = session.touched(clock() + 1)
    assert await store.touch(old_hash, changed)
    stale = Successor(tokens.token_hash(tokens.mint_token()), "", clock() + GRACE)
    assert await store.rotate(old_hash, session.version, session, stale) is None
    assert await store.get(stale.token_hash) is None
    assert await store.successor(old_hash) is None
    # the manager reads again and rotates the current version
    rotated = await sessions.rotate(old)
    assert rotated.created and rotated.session.version == changed.version + 1


async def test_rotation_by_session_id_leaves_old_token_holders_without_the_new_token(
    stores: StoreFactory, clock: FakeClock
) -> None:
    sessions = manager(stores(), clock)
    old, session = await sessions.create("alice")
    by_sid = await sessions.rotate_sid(session.sid)
    assert by_sid.created and by_sid.token is not None
    learned = await sessions.rotate(old)
    assert not learned.created and learned.token is None  # nothing sealed for them
    assert (await sessions.lookup(old)).sid == session.sid  # but allowed in the grace
    await expect_denied(Reason.UNKNOWN_SESSION, sessions.rotate_sid("no-such-sid"))


def test_a_sealed_successor_opens_only_with_the_old_token() -> None:
    old, new, other = tokens.mint_token(), tokens.mint_token(), tokens.mint_token()
    sealed = tokens.seal_successor(old, new)
    assert new not in sealed and tokens.token_hash(new) not in sealed
    assert tokens.open_successor(old, sealed) == new
    assert tokens.open_successor(other, sealed) is None
    assert tokens.open_successor(old, sealed[:-4] + "AAAA") is None
    assert tokens.open_successor(old, "") is None
    assert tokens.open_successor(old, "%%%") is None
    assert tokens.open_successor(old, tokens.seal_successor(old, "not-a-token")) is None


class AlwaysTrusted:
    """A push channel that is always up (the cache's trust source, no Redis)."""

    def trusted(self) -> bool:
        return True

    def add_listener(self, listener: object) -> None:
        return None

    def down_seconds(self) -> float | None:
        return None

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None


class CountingStore(MemorySessionStore):
    def __init__(self, clock: FakeClock) -> None:
        super().__init__(clock=clock)
        self.calls: Counter[str] = Counter()

    async def get(self, token_hash: str) -> Session | None:
        self.calls["get"] += 1
        return await super().get(token_hash)

    async def successor(self, token_hash: str) -> Successor | None:
        self.calls["successor"] += 1
        return await super().successor(token_hash)


async def test_the_cache_remembers_a_rotation_and_answers_the_old_token_without_the_store(
    clock: FakeClock,
) -> None:
    inner = CountingStore(clock)
    sessions = manager(CachingSessionStore(inner, AlwaysTrusted()), clock)
    old, _ = await sessions.create("alice")
    await sessions.lookup(old)
    rotated = await sessions.rotate(old)
    before = inner.calls.copy()
    for _ in range(3):
        found = await sessions.find(old)
        assert found.superseded and found.current_token == rotated.token
    assert inner.calls["successor"] == before["successor"]  # known since the rotation
    assert inner.calls["get"] == before["get"] + 1  # the new token's record, then cached
    clock.advance(GRACE)
    await expect_denied(Reason.REVOKED_SESSION, sessions.lookup(old))


# -- Redis only: the grace's TTL and other nodes' caches --------------------------------------


@pytest.mark.e2e
async def test_redis_forgets_the_successor_when_the_grace_ends(
    redis_process: RedisServer,
) -> None:
    client = aioredis.Redis.from_url(redis_process.url)
    try:
        sessions = SessionManager(
            RedisSessionStore(client, f"g{uuid.uuid4().hex[:8]}:"),
            idle_timeout=600,
            absolute_timeout=3600,
            rotation_grace_seconds=0.3,
        )
        old, _ = await sessions.create("alice")
        await sessions.rotate(old)
        assert await sessions.store.successor(tokens.token_hash(old)) is not None
        await asyncio.sleep(0.5)
        assert await sessions.store.successor(tokens.token_hash(old)) is None
        await expect_denied(Reason.REVOKED_SESSION, sessions.lookup(old))
    finally:
        await client.aclose()


async def _until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)


@pytest.mark.e2e
async def test_a_rotation_on_one_node_drops_the_old_token_from_another_nodes_cache(
    fresh_redis: RedisServer,
) -> None:
    rotator, cacher = (aioredis.Redis.from_url(fresh_redis.url) for _ in range(2))
    subscriber = InvalidationSubscriber(
        Membership(cacher, "c:", "node-b"), Channel(cacher, "c:invalidate"), trust_window=0.3
    )
    cache = CachingSessionStore(RedisSessionStore(cacher, "c:"), subscriber)
    node_a = SessionManager(RedisSessionStore(rotator, "c:"), idle_timeout=600,
                            absolute_timeout=3600, rotation_grace_seconds=GRACE)  # fmt: skip
    node_b = SessionManager(cache, idle_timeout=600, absolute_timeout=3600,
                            rotation_grace_seconds=GRACE)  # fmt: skip
    await cache.start()
    try:
        await _until(subscriber.trusted)
        old, session = await node_a.create("alice")
        await node_b.lookup(old)
        await node_b.lookup(old)
        assert lookup_source.get() == "hit" and len(cache) == 1
        rotated = await node_a.rotate(old)
        await _until(lambda: len(cache) == 0)  # the push reached node B
        found = await node_b.find(old)
        assert found.superseded and found.session.rotated_at is not None
        assert await cache.get(tokens.token_hash(old)) is None
        assert len(cache) == 1  # the new token only: a rotated token is never cached again
        # node B learns the same new token node A made
        assert (await node_b.rotate(old)).token == rotated.token
    finally:
        await cache.stop()
        await rotator.aclose()
        await cacher.aclose()


@pytest.mark.e2e
@pytest.mark.parametrize("after", ["sid", "record"])
async def test_a_revocation_racing_a_rotation_ends_the_new_token_too(
    redis_process: RedisServer, clock: FakeClock, after: str
) -> None:
    """The rotation lands right after the revocation read the sid key, or the record, before
    it wrote (real Redis; the interleaving is forced by running the rotation inside the
    revoker's read): the session must end under the new token too, not live on under it."""
    prefix = f"x{uuid.uuid4().hex[:8]}:"
    rotator_client = aioredis.Redis.from_url(redis_process.url)
    revoker_client = aioredis.Redis.from_url(redis_process.url)
    try:
        rotator = manager(RedisSessionStore(rotator_client, prefix, clock=clock), clock)
        revoker = RedisSessionStore(revoker_client, prefix, clock=clock)
        old, session = await rotator.create("alice")
        keys = SessionKeys(prefix)
        key = keys.index(session.sid)[0] if after == "sid" else keys.record(tokens.token_hash(old))
        rotated: list[Rotated] = []
        get, hget = revoker_client.get, revoker_client.hget

        async def then_rotate(name: str, value: object) -> object:
            if name == key and not rotated:
                rotated.append(await rotator.rotate(old))
            return value

        async def get_then_rotate(name: str) -> object:
            return await then_rotate(name, await get(name))

        async def hget_then_rotate(name: str, field: str) -> object:
            return await then_rotate(name, await hget(name, field))

        revoker_client.get = get_then_rotate  # type: ignore[assignment,method-assign]
        revoker_client.hget = hget_then_rotate  # type: ignore[assignment,method-assign]
        await revoker.revoke_sid(session.sid)
        assert rotated and rotated[0].token is not None
        with pytest.raises(Unauthenticated):
            await rotator.lookup(rotated[0].token)
    finally:
        await rotator_client.aclose()
        await revoker_client.aclose()


@pytest.mark.e2e
async def test_a_logout_racing_a_rotation_ends_the_new_token_too(
    redis_process: RedisServer, clock: FakeClock
) -> None:
    """A logout (:meth:`SessionManager.revoke_token`) whose token is rotated right after it
    found the record (real Redis; the rotation runs inside the logout's read): the session
    ends under the new token too."""
    prefix = f"y{uuid.uuid4().hex[:8]}:"
    rotator_client = aioredis.Redis.from_url(redis_process.url)
    logout_client = aioredis.Redis.from_url(redis_process.url)
    try:
        rotator = manager(RedisSessionStore(rotator_client, prefix, clock=clock), clock)
        logout = manager(RedisSessionStore(logout_client, prefix, clock=clock), clock)
        old, _ = await rotator.create("alice")
        rotated: list[Rotated] = []
        read = logout_client.get

        async def read_then_rotate(name: str, *args: object, **kwargs: object) -> object:
            value = await read(name, *args, **kwargs)
            if name == SessionKeys(prefix).record(tokens.token_hash(old)) and not rotated:
                rotated.append(await rotator.rotate(old))
            return value

        logout_client.get = read_then_rotate  # type: ignore[assignment,method-assign]
        await logout.revoke_token(old)
        assert rotated and rotated[0].token is not None
        with pytest.raises(Unauthenticated):
            await rotator.lookup(rotated[0].token)
    finally:
        await rotator_client.aclose()
        await logout_client.aclose()
