"""Regression tests: a hostile or corrupt session record in the store never crashes the
Check's decode and never names a session that lives forever (break-it review of the compact
MessagePack records)."""

from __future__ import annotations

import time
import uuid

import msgpack
import pytest
import redis.asyncio as aioredis

from extauthz import tokens
from extauthz.errors import Unauthenticated
from extauthz.store.manager import SessionManager
from extauthz.store.model import Session
from extauthz.store.redis.keys import SessionKeys
from extauthz.store.redis.store import RedisSessionStore
from tests.fixtures.core import FakeClock
from tests.support import RedisServer

NOW = time.time()
BASE = {"i": "sid", "u": "alice", "c": NOW, "t": 600, "v": 1, "l": NOW, "e": NOW + 3600}
JSON = '{"sid":"a","sub":"b","created_at":1,"last_seen":1,"idle_timeout":%s,"expires_at":%s}'
DEEP = "[" * 100_000 + "]" * 100_000


def _without(code: str, **extra: object) -> bytes:
    return bytes(msgpack.packb({**{k: v for k, v in BASE.items() if k != code}, **extra}))


HOSTILE = {
    # OverflowError escaped from_record (int(inf))
    "json idle_timeout 1e999": (JSON % ("1e999", "2")).encode(),
    "msgpack idle_timeout inf": _without("t", t=float("inf")),
    # RecursionError escaped from_record (json nesting in a JSON record or in "d")
    "json nested data": b'{"sid":"a","sub":"b","data":' + DEEP.encode() + b"}",
    "msgpack nested d": _without("d", d=DEEP),
    # NaN/inf times: a record that is alive forever (now < NaN is False, so is_alive was True)
    "msgpack expires NaN": _without("e", e=float("nan")),
    "msgpack expires offset NaN": _without("e", E=float("nan")),
    "msgpack created 'nan'": _without("c", c="nan"),
    "json expires NaN": (JSON % ("1", "NaN")).encode(),
    "json expires Infinity": (JSON % ("1", "Infinity")).encode(),
    # a string where a list belongs read as one scope (or role) per character
    "msgpack scopes string": _without("s", s="admin"),
    "msgpack roles string": _without("r", r="admin"),
}


@pytest.mark.parametrize("raw", HOSTILE.values(), ids=HOSTILE.keys())
def test_a_hostile_record_is_not_a_session(raw: bytes) -> None:
    with pytest.raises(ValueError, match="not a session record"):
        Session.from_record(raw)


def test_the_valid_record_of_these_tests_reads() -> None:
    """The hostile cases differ from this one only in the field they break."""
    session = Session.from_record(_without("s", s=["read"]))
    assert session.scopes == ("read",) and session.is_alive(NOW)


HOSTILE_IN_REDIS = {
    k: HOSTILE[k] for k in ("msgpack expires NaN", "msgpack idle_timeout inf", "msgpack nested d")
}


@pytest.mark.e2e
@pytest.mark.parametrize("raw", HOSTILE_IN_REDIS.values(), ids=HOSTILE_IN_REDIS.keys())
async def test_a_hostile_record_in_redis_is_an_unknown_session(
    redis_process: RedisServer, raw: bytes
) -> None:
    """On a real Redis: a session's record overwritten with a hostile one makes its token an
    unknown session (a denial), neither allowed nor an exception out of the lookup."""
    client = aioredis.Redis.from_url(redis_process.url)
    try:
        clock = FakeClock()
        prefix = f"h{uuid.uuid4().hex[:8]}:"
        store = RedisSessionStore(client, prefix, clock=clock)
        sessions = SessionManager(store, idle_timeout=600, absolute_timeout=3600, clock=clock)
        token, _ = await sessions.create("alice")
        key = SessionKeys(prefix).record(tokens.token_hash(token))
        assert await client.exists(key) == 1
        await client.set(key, raw, keepttl=True)
        with pytest.raises(Unauthenticated):
            await sessions.lookup(token)
    finally:
        await client.aclose()
