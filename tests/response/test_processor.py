"""The SessionUpdater on the in-memory store, and the ext_proc adapter around it: which
headers a response loses and gains, what the session becomes, what is counted."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from envoy.config.core.v3.base_pb2 import HeaderMap, HeaderValue, Metadata
from envoy.service.ext_proc.v3.external_processor_pb2 import HttpHeaders, ProcessingRequest
from google.protobuf.struct_pb2 import Struct

from extauthz.check.minting import JwtMinter
from extauthz.errors import StoreUnavailable
from extauthz.keys.keyring import KeyRing
from extauthz.login.cookies import SessionCookie
from extauthz.response.ext_proc_adapter import (
    pass_through,
    to_processing_response,
    to_response_context,
)
from extauthz.response.processor import (
    ResponseChanges,
    ResponseContext,
    SessionUpdater,
    UpdateLimits,
    cookie_name_of,
)
from extauthz.response.updates import Allowlist
from extauthz.store.manager import SessionManager
from extauthz.store.memory import MemorySessionStore
from extauthz.store.model import Session
from extauthz.store.redis.store import RedisSessionStore
from tests.fixtures.core import AUDIENCE, ISSUER, key_dir
from tests.support import RedisServer

HEADER = "x-extauthz-session-update"
COOKIE = SessionCookie("sess", secure=True)


class Harness:
    def __init__(self, check_session: Callable[[Session], None] | None = None) -> None:
        self.store = MemorySessionStore()
        self.manager = SessionManager(self.store, idle_timeout=600, absolute_timeout=3600)
        self.counts: Counter[tuple[str, str]] = Counter()
        self.updater = SessionUpdater(
            self.store,
            Allowlist.from_entries(["shop=cart", "shop=theme"]),
            COOKIE,
            header=HEADER,
            count=lambda result, reason: self.counts.update([(result, reason)]),
            rotate=self.manager.rotate_sid,
            check_session=check_session,
        )

    async def session(self) -> tuple[str, Session]:
        return await self.manager.create("alice", scopes=["read"], data={"theme": "light"})

    async def run(
        self,
        sid: str,
        *values: str,
        cookies: tuple[str, ...] = (),
        decision: str = "allow",
        cluster: str = "shop",
    ) -> ResponseChanges:
        ctx = ResponseContext(cluster, sid, decision, values, cookies)
        return await self.updater.process(ctx)


@pytest.fixture
def h() -> Harness:
    return Harness()


async def test_a_patch_is_merged_and_the_header_removed(h: Harness) -> None:
    token, session = await h.session()
    changes = await h.run(session.sid, '{"cart": {"n": 1}, "theme": null}')
    assert changes == ResponseChanges(remove=(HEADER,))
    updated = await h.manager.lookup(token)
    assert updated.data == {"cart": {"n": 1}}
    assert updated.version > session.version
    assert (updated.sub, updated.scopes, updated.expires_at) == (
        "alice",
        ("read",),
        session.expires_at,
    )
    assert h.counts == {("applied", "merge_patch"): 1}


@pytest.mark.parametrize(
    ("kw", "value", "reason"),
    [
        ({"cluster": "other"}, '{"cart": 1}', "key_not_allowed"),
        ({}, '{"roles": ["admin"]}', "reserved_key"),
        ({}, '{"cart": "' + "x" * 4090 + '"}', "too_large"),
        ({"decision": "deny"}, '{"cart": 1}', "denied_request"),
        ({"decision": ""}, '{"cart": 1}', "no_session"),
        ({}, '"rotate"', "not_a_cookie_session"),  # run() passes no credential
        ({}, "{", "invalid_json"),
    ],
)
async def test_refusals_change_nothing_but_the_header(
    h: Harness, kw: dict[str, str], value: str, reason: str
) -> None:
    token, session = await h.session()
    changes = await h.run(
        session.sid, value, decision=kw.get("decision", "allow"), cluster=kw.get("cluster", "shop")
    )
    assert changes == ResponseChanges(remove=(HEADER,))
    assert (await h.manager.lookup(token)).data == {"theme": "light"}
    assert h.counts == {("refused", reason): 1}


async def test_repeated_header_and_unknown_session(h: Harness) -> None:
    _, session = await h.session()
    await h.run(session.sid, '{"cart": 1}', '{"cart": 2}')
    await h.run("no-such-sid", '{"cart": 1}')
    assert h.counts == {("refused", "repeated_header"): 1, ("refused", "session_gone"): 1}


async def test_merged_data_over_the_session_limit(h: Harness) -> None:
    token, session = await h.session()
    await h.run(session.sid, '{"cart": "' + "c" * 3000 + '"}')
    await h.run(session.sid, '{"theme": "' + "t" * 3000 + '"}')
    assert h.counts[("refused", "data_too_large")] == 1
    assert (await h.manager.lookup(token)).data == {"theme": "light", "cart": "c" * 3000}


async def test_logout_revokes_and_clears_the_cookie(h: Harness) -> None:
    token, session = await h.session()
    changes = await h.run(session.sid, '"logout"')
    assert changes.remove == (HEADER,)
    assert changes.append == tuple(("set-cookie", v) for v in COOKIE.clearing())
    assert await h.manager.was_revoked(token)


async def test_an_upstream_session_cookie_is_dropped_and_the_others_kept(h: Harness) -> None:
    changes = await h.run("", cookies=("a=1", "sess=x; Path=/", " sess=; Max-Age=0", "sessx=2"))
    assert changes == ResponseChanges(
        remove=("set-cookie",), append=(("set-cookie", "a=1"), ("set-cookie", "sessx=2"))
    )
    assert h.counts == {("dropped_cookie", "shop"): 1}
    assert await h.run("", cookies=("a=1",)) == ResponseChanges()
    # a denial is Envoy's own reply from the Check's answer: its clearing cookie is extauthz's
    clearing = COOKIE.clearing()
    assert await h.run("", cookies=clearing, decision="deny") == ResponseChanges()
    assert await h.run("s", cookies=clearing, decision="allow") != ResponseChanges()


def test_cookie_name_of() -> None:
    assert cookie_name_of("a=b; Path=/") == "a"
    assert cookie_name_of("  a =b") == "a"
    assert cookie_name_of("novalue") == ""
    assert cookie_name_of("x; a=b") == ""


async def test_a_store_that_cannot_answer_is_not_a_refusal(h: Harness) -> None:
    _, session = await h.session()

    async def down(*args: object, **kw: object) -> None:
        raise StoreUnavailable("down")

    h.store.update = down  # type: ignore[method-assign]
    with pytest.raises(StoreUnavailable):
        await h.run(session.sid, '{"cart": 1}')
    assert not h.counts


def _request(
    headers: list[HeaderValue], metadata: dict[str, str], cluster: str
) -> ProcessingRequest:
    struct, attributes = Struct(), Struct()
    struct.update(metadata)
    attributes.update({"xds.cluster_name": cluster})
    return ProcessingRequest(
        response_headers=HttpHeaders(headers=HeaderMap(headers=headers)),
        metadata_context=Metadata(filter_metadata={"envoy.filters.http.ext_authz": struct}),
        attributes={"envoy.filters.http.ext_proc": attributes},
    )


def test_the_adapter_reads_headers_metadata_and_cluster() -> None:
    request = _request(
        [
            HeaderValue(key=":status", raw_value=b"200"),
            HeaderValue(key="X-Extauthz-Session-Update", raw_value=b'{"a": 1}'),
            HeaderValue(key="set-cookie", raw_value=b"a=1"),
            HeaderValue(key="Set-Cookie", value="b=2"),
        ],
        {"sid": "s1", "decision": "allow", "reason": "session_valid"},
        "shop",
    )
    ctx = to_response_context(request, HEADER)
    assert ctx == ResponseContext("shop", "s1", "allow", (b'{"a": 1}',), ("a=1", "b=2"))
    empty = to_response_context(ProcessingRequest(response_headers=HttpHeaders()), HEADER)
    assert empty == ResponseContext("", "", "")


def test_the_adapter_writes_raw_values_appended() -> None:
    reply = to_processing_response(ResponseChanges(("set-cookie",), (("set-cookie", "a=1"),)))
    mutation = reply.response_headers.response.header_mutation
    assert list(mutation.remove_headers) == ["set-cookie"]
    (option,) = mutation.set_headers
    # Envoy 1.36-1.40: value-only headers arrive empty, append_action is ignored here
    assert (option.header.key, option.header.raw_value, option.header.value) == (
        "set-cookie",
        b"a=1",
        "",
    )
    assert option.append.value is True
    other = pass_through(ProcessingRequest(request_headers=HttpHeaders()))
    assert other.WhichOneof("response") == "request_headers"


async def test_rotate_sets_a_new_cookie_for_cookie_sessions_only(h: Harness) -> None:
    token, session = await h.session()
    ctx = ResponseContext("shop", session.sid, "allow", ('"rotate"',), credential="bearer")
    assert await h.updater.process(ctx) == ResponseChanges(remove=(HEADER,))
    assert h.counts == {("refused", "not_a_cookie_session"): 1}

    ctx = ResponseContext("shop", session.sid, "allow", ('"rotate"',), credential="cookie")
    changes = await h.updater.process(ctx)
    ((name, value),) = changes.append
    assert name == "set-cookie" and value.startswith("sess=") and "Max-Age=" in value
    new_token = value.split(";", 1)[0].split("=", 1)[1]
    assert new_token != token
    assert (await h.manager.lookup(new_token)).sid == session.sid
    assert h.counts[("applied", "rotate")] == 1


@pytest.mark.e2e
async def test_concurrent_updates_of_one_session_all_apply(redis_process: RedisServer) -> None:
    """Updates of one session on one node wait for each other: on a real Redis, with a single
    compare-and-set attempt each, none of 20 concurrent updates loses to the others."""
    client = aioredis.Redis.from_url(redis_process.url)
    try:
        store = RedisSessionStore(client, f"p{uuid.uuid4().hex[:8]}:")
        manager = SessionManager(store, idle_timeout=600, absolute_timeout=3600)
        counts: Counter[tuple[str, str]] = Counter()
        updater = SessionUpdater(
            store, Allowlist.from_entries(["shop=cart"]), COOKIE, header=HEADER,
            limits=UpdateLimits(attempts=1),
            count=lambda result, reason: counts.update([(result, reason)]),
        )  # fmt: skip
        token, session = await manager.create("alice")
        contexts = [
            ResponseContext("shop", session.sid, "allow", (f'{{"cart": {{"i{i}": {i}}}}}',))
            for i in range(20)
        ]
        await asyncio.gather(*(updater.process(ctx) for ctx in contexts))
        assert counts == {("applied", "merge_patch"): 20}
        assert (await manager.lookup(token)).data["cart"] == {f"i{i}": i for i in range(20)}
    finally:
        await client.aclose()


async def test_an_update_that_would_make_the_jwt_exceed_its_bound_is_refused(
    tmp_path: Path,
) -> None:
    """``jwt.max_bytes`` holds for updated sessions as for new ones: data within the 4 KiB
    session-data limit can still make the JWT too large for the upstreams' header limits."""
    minter = JwtMinter(
        KeyRing.from_directory(key_dir(tmp_path)), issuer=ISSUER, audience=AUDIENCE, max_bytes=1024
    )
    h = Harness(check_session=minter.check_size)
    token, session = await h.session()
    minter.check_size(session)
    await h.run(session.sid, '{"cart": "' + "c" * 1500 + '"}')
    assert h.counts == {("refused", "data_too_large"): 1}
    after = await h.manager.lookup(token)
    assert after.data == {"theme": "light"}
    minter.check_size(after)


async def test_the_upstreams_other_cookies_keep_their_bytes(h: Harness) -> None:
    """When the session cookie's line is dropped, the other Set-Cookie lines are written back:
    byte for byte, also when they are not UTF-8 (obs-text, RFC 9110 section 5.5)."""
    request = _request(
        [
            HeaderValue(key="set-cookie", raw_value=b"sess=planted"),
            HeaderValue(key="set-cookie", raw_value=b"pref=caf\xe9; Path=/"),
        ],
        {"sid": "s1", "decision": "allow"},
        "shop",
    )
    changes = await h.updater.process(to_response_context(request, HEADER))
    mutation = to_processing_response(changes).response_headers.response.header_mutation
    assert list(mutation.remove_headers) == ["set-cookie"]
    assert [o.header.raw_value for o in mutation.set_headers] == [b"pref=caf\xe9; Path=/"]
