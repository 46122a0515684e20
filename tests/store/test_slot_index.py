"""The slot's session index (extauthz.store.redis.keys, ``p{c}i``): sessions of the version
before it (sids ``<tag>.<22>`` in their tag's index ``p{tag}x``) keep working beside it, and
entries of ended sessions are pruned as it grows, a bounded step per creation."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from extauthz import tokens
from extauthz.errors import Reason, Unauthenticated
from extauthz.server.app import build_components
from extauthz.store.manager import SessionManager
from extauthz.store.model import Session
from extauthz.store.redis import store as store_module
from extauthz.store.redis.keys import SessionKeys
from extauthz.store.redis.store import INDEX_PRUNE_ABOVE, RedisSessionStore
from tests.fixtures.core import FakeClock
from tests.support import RedisServer
from tests.support.extauthz_nodes import node_settings

pytestmark = pytest.mark.e2e

IDLE = 600
ABSOLUTE = 3600


@pytest.fixture
async def view(redis_process: RedisServer) -> AsyncIterator[aioredis.Redis]:
    """The test's client for looking at the index: answers in strings."""
    redis_client = aioredis.Redis.from_url(redis_process.url, decode_responses=True)
    yield redis_client
    await redis_client.aclose()


def _stack(
    redis_client: aioredis.Redis,
) -> tuple[RedisSessionStore, SessionManager, FakeClock, str]:
    clock = FakeClock()
    prefix = f"i{uuid.uuid4().hex[:8]}:"
    store = RedisSessionStore(redis_client, prefix, clock=clock)
    manager = SessionManager(
        store, idle_timeout=IDLE, absolute_timeout=ABSOLUTE, clock=clock, touch_interval=0.0
    )
    return store, manager, clock, prefix


async def _session_of_the_version_before(
    redis_client: aioredis.Redis, prefix: str, clock: FakeClock, sub: str
) -> tuple[str, Session]:
    """A session as the version before slot indexes wrote it: a sid ``<tag>.<22>``, its
    record, and its entry ``<sid without tag> -> <hash without tag>`` in ``p{tag}x``."""
    tag = tokens.subject_tag(sub)
    token = tokens.mint_token(tag=tag)
    token_hash = tokens.token_hash(token)
    now = clock()
    session = Session(
        sid=f"{tag}.{secrets.token_urlsafe(16)}", sub=sub, created_at=now, last_seen=now,
        idle_timeout=IDLE, expires_at=now + ABSOLUTE, roles=("user",),
    )  # fmt: skip
    assert tokens.sid_tag(session.sid) == tag
    record = SessionKeys(prefix).record(token_hash)
    await redis_client.set(record, session.to_record(), px=ABSOLUTE * 1000)
    index = f"{prefix}{{{tag}}}x"
    await redis_client.hset(index, session.sid[len(tag) + 1 :], token_hash[len(tag) + 1 :])
    await redis_client.pexpire(index, ABSOLUTE * 1000)
    return token, session


async def test_a_session_of_the_version_before_is_found_refreshed_and_revoked(
    redis_client: aioredis.Redis,
    view: aioredis.Redis,
) -> None:
    """Beside a session of this version (same subject): looked up by token and by sid,
    touched, updated, rotated (its entry stays in its tag's index), listed, and revoked by
    revoke-all with the new one; both indexes are empty after."""
    store, sessions, clock, prefix = _stack(redis_client)
    old_token, old = await _session_of_the_version_before(redis_client, prefix, clock, "frank")
    new_token, new = await sessions.create("frank")
    assert new.sid[tokens.TAG_LENGTH] == "-" and old.sid[tokens.TAG_LENGTH] == "."
    clock.advance(1)
    assert (await sessions.lookup(old_token)).sid == old.sid
    touched = await store.get_by_sid(old.sid)
    assert touched is not None and touched.version == 2 and touched.last_seen == clock()
    updated = await store.update(old.sid, lambda s: s)
    assert updated is not None and updated.version == 3
    rotated = await sessions.rotate(old_token)
    assert rotated.token is not None
    assert (await sessions.lookup(rotated.token)).sid == old.sid
    tag_index = f"{prefix}{{{tokens.subject_tag('frank')}}}x"
    assert await view.hlen(tag_index) == 1  # the rotation moved the entry, in place
    listed = await store.list_subject("frank")
    assert sorted(s.sid for s in listed) == sorted([old.sid, new.sid])
    assert await store.revoke_subject("frank") == 2
    for token in (rotated.token, new_token):
        with pytest.raises(Unauthenticated) as denied:
            await sessions.lookup(token)
        assert denied.value.reason == Reason.REVOKED_SESSION
    assert await redis_client.exists(tag_index) == 0
    slot_index = SessionKeys(prefix).slot_index(tokens.subject_tag("frank"))
    assert [f async for f in view.hscan_iter(slot_index, match="*-*")] == []


async def test_revoke_all_reaches_only_the_subjects_tag_in_the_slot_index(
    redis_client: aioredis.Redis,
) -> None:
    """Two tags of one slot share its index: revoking every session of one subject leaves
    the other's alone."""
    store, sessions, _, prefix = _stack(redis_client)
    keys = SessionKeys(prefix)
    alone = "grace-0"
    target = keys.slot_index(tokens.subject_tag(alone))
    other = next(
        f"grace-{n}"
        for n in range(1, 200_000)
        if tokens.subject_tag(f"grace-{n}") != tokens.subject_tag(alone)
        and keys.slot_index(tokens.subject_tag(f"grace-{n}")) == target
    )
    token, _ = await sessions.create(alone)
    other_token, _ = await sessions.create(other)
    assert await store.revoke_subject(other) == 1
    assert (await sessions.lookup(token)).sub == alone
    with pytest.raises(Unauthenticated):
        await sessions.lookup(other_token)
    assert [s.sub for s in await store.list_subject(alone)] == [alone]


async def _gone(redis_client: aioredis.Redis, store: RedisSessionStore, tokens_: list[str]) -> None:
    """End sessions as their absolute expiry does: the record (their TTL) goes."""
    await redis_client.delete(*(store.keys.record(tokens.token_hash(t)) for t in tokens_))


async def test_the_slot_index_is_pruned_above_32_then_when_it_has_doubled(
    redis_client: aioredis.Redis,
    view: aioredis.Redis,
) -> None:
    """33 creations (one subject: one slot's index) prune once (nothing ended yet); after 30
    sessions ended the index keeps growing until it has doubled (66), and the next creation
    removes the 30 ended entries."""
    store, sessions, _, _ = _stack(redis_client)
    index = store.keys.slot_index(tokens.subject_tag("heidi"))
    made = [(await sessions.create("heidi"))[0] for _ in range(INDEX_PRUNE_ABOVE + 1)]
    assert await view.hget(index, "#") == "33 0"
    await _gone(redis_client, store, made[:30])
    for _ in range(2 * 33 - len(made)):
        made.append((await sessions.create("heidi"))[0])
    assert await view.hlen(index) == 66 + 1  # not pruned yet: 66 is not above 2 x 33
    await sessions.create("heidi")
    assert await view.hget(index, "#") == "37 0"
    assert await view.hlen(index) == 37 + 1
    for token in made[30:]:
        assert (await sessions.lookup(token)).sub == "heidi"


async def test_a_prune_of_a_large_index_takes_bounded_steps(
    redis_client: aioredis.Redis, view: aioredis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A slot's index in hashtable encoding (more entries than ``hash-max-listpack-entries``)
    is pruned a few entries per creation (an ``HSCAN`` step), its cursor kept in ``#``, until
    the scan is done: then every ended entry is gone and the live ones stay."""
    before = str((await view.config_get("hash-max-listpack-entries"))["hash-max-listpack-entries"])
    await view.config_set("hash-max-listpack-entries", 8)
    monkeypatch.setattr(store_module, "INDEX_PRUNE_STEP", 2)
    try:
        store, sessions, _, _ = _stack(redis_client)
        index = store.keys.slot_index(tokens.subject_tag("ivan"))
        made = [(await sessions.create("ivan"))[0] for _ in range(INDEX_PRUNE_ABOVE)]
        await _gone(redis_client, store, made[:20])
        assert await view.object("encoding", index) == "hashtable"
        made.append((await sessions.create("ivan"))[0])  # 33 entries: the prune starts
        cursors = [(await view.hget(index, "#") or "").split()[1]]
        for _ in range(200):
            if cursors[-1] == "0":
                break
            made.append((await sessions.create("ivan"))[0])
            cursors.append((await view.hget(index, "#") or "").split()[1])
        assert len(cursors) > 3 and cursors[0] != "0" and cursors[-1] == "0", cursors
        live = {tokens.token_hash(t)[5:] for t in made[20:]}
        left = {v for f, v in (await view.hgetall(index)).items() if f != "#"}
        assert left == live
    finally:
        await view.config_set("hash-max-listpack-entries", before)


@pytest.mark.parametrize(
    "bookkeeping",
    [
        "5 18446744073709551616",  # a cursor past 2^64: HSCAN refuses it ("invalid cursor")
        "99999999999999999999999 0",  # a count no index reaches twice: never pruned again
    ],
)
async def test_a_malformed_bookkeeping_field_fails_no_creation_and_the_prune_starts_over(
    redis_client: aioredis.Redis, view: aioredis.Redis, bookkeeping: str
) -> None:
    """Regression: a '#' that the create script did not write (by hand, a bad restore) made
    every creation in the slot fail after writing its record (a refused cursor), or stopped
    the pruning for good (an absurd count). The script reads such a value as no prune state:
    the creation succeeds and the prune runs from the start."""
    store, sessions, _, _ = _stack(redis_client)
    index = store.keys.slot_index(tokens.subject_tag("judy"))
    made = [(await sessions.create("judy"))[0] for _ in range(INDEX_PRUNE_ABOVE + 8)]
    await _gone(redis_client, store, made[:10])
    await view.hset(index, "#", bookkeeping)
    made.append((await sessions.create("judy"))[0])
    live = len(made) - 10
    assert await view.hget(index, "#") == f"{live} 0"
    assert len(await store.list_subject("judy")) == live
    for token in made[10:]:
        assert (await sessions.lookup(token)).sub == "judy"


async def test_index_by_tag_writes_new_sessions_as_the_version_before_did(
    redis_client: aioredis.Redis, view: aioredis.Redis
) -> None:
    """Regression (rolling upgrade): nodes of the version before take a sid ``t-<22>`` for one
    from before tags, so on a cluster their touches, logouts and rotations of such sessions
    fail (CROSSSLOT) and on one primary their rotations move them out of every index.
    ``store.session_index = "tag"`` mints ``t.<22>`` into ``p{t}x``, the layout that version
    reads; once every node is upgraded, ``"slot"`` again, and revoke-all reaches both kinds."""
    store, _, clock, prefix = _stack(redis_client)
    by_tag = SessionManager(
        store, idle_timeout=IDLE, absolute_timeout=ABSOLUTE, clock=clock, touch_interval=0.0,
        sid_separator=tokens.TAG_INDEX_SID_SEPARATOR,
    )  # fmt: skip
    tag = tokens.subject_tag("kate")
    token, session = await by_tag.create("kate")
    assert session.sid.startswith(f"{tag}.") and tokens.sid_tag(session.sid) == tag
    entry = await view.hget(f"{prefix}{{{tag}}}x", session.sid[len(tag) + 1 :])
    assert entry == tokens.token_hash(token)[len(tag) + 1 :]
    assert await view.exists(SessionKeys(prefix).slot_index(tag)) == 0
    by_slot = SessionManager(
        store, idle_timeout=IDLE, absolute_timeout=ABSOLUTE, clock=clock, touch_interval=0.0
    )
    later_token, later = await by_slot.create("kate")
    assert later.sid.startswith(f"{tag}-")
    assert sorted(s.sid for s in await store.list_subject("kate")) == sorted(
        [session.sid, later.sid]
    )
    assert await store.revoke_subject("kate") == 2
    for gone in (token, later_token):
        with pytest.raises(Unauthenticated):
            await by_slot.lookup(gone)


@pytest.mark.parametrize(("setting", "separator"), [("tag", "."), ("slot", "-"), (None, "-")])
async def test_store_session_index_chooses_the_sid_a_node_mints(
    tmp_path: Path, setting: str | None, separator: str
) -> None:
    table = {"strategy": "sticky", "backend": "memory"}
    chosen = {"session_index": setting} if setting else {}
    components = build_components(node_settings(tmp_path, "n1", table | chosen))
    _, session = await components.sessions.create("lena")
    assert session.sid[tokens.TAG_LENGTH] == separator


async def test_glob_characters_in_a_sid_or_subject_reach_no_other_session(
    redis_client: aioredis.Redis,
) -> None:
    """A subject's listing scans its slot's index with ``MATCH <tag>-*``: the pattern is built
    from the tag (4 base62 characters of a hash), never from the subject or a sid, so ``*``,
    ``?``, ``[``, ``\\`` in either reach no one else's sessions."""
    store, sessions, _, _ = _stack(redis_client)
    token, session = await sessions.create("victim")
    tag = session.sid[: tokens.TAG_LENGTH]
    for sid in ("*", f"{tag}-*", f"{tag}-" + "?" * 22, f"{tag}.[a-z]*", "\\*", "#", ""):
        assert await store.get_by_sid(sid) is None
        assert await store.token_hash_of(sid) is None
        assert await store.revoke_sid(sid) is None
    for sub in ("*", "?", "[", "\\", "victim*", "*-*", "#"):
        assert await store.list_subject(sub) == []
        assert await store.revoke_subject(sub) == 0
    assert (await sessions.lookup(token)).sid == session.sid


async def test_revoke_all_spares_another_subject_with_the_same_tag(
    redis_client: aioredis.Redis,
) -> None:
    """Two subjects whose tags collide (62^4 tags: a few thousand subjects find a pair) share
    ``MATCH <tag>-*`` and ``p{tag}x``: their records tell them apart, in both indexes."""
    seen: dict[str, str] = {}
    pair = None
    for n in range(100_000):
        tag = tokens.subject_tag(f"user-{n}")
        if tag in seen:
            pair = (seen[tag], f"user-{n}")
            break
        seen[tag] = f"user-{n}"
    assert pair is not None
    one, other = pair
    store, sessions, clock, prefix = _stack(redis_client)
    _, mine = await sessions.create(one)
    _, mine_before = await _session_of_the_version_before(redis_client, prefix, clock, one)
    theirs = [(await sessions.create(other))[0]]
    theirs.append((await _session_of_the_version_before(redis_client, prefix, clock, other))[0])
    listed = sorted(s.sid for s in await store.list_subject(one))
    assert listed == sorted([mine.sid, mine_before.sid])
    assert await store.revoke_subject(one) == 2
    for token in theirs:
        assert (await sessions.lookup(token)).sub == other
    assert len(await store.list_subject(other)) == 2
