"""``extauthz.v1.ApiKeyAdmin`` in process (extauthz.server.apikey_admin): the key shown once and
stored hashed, lifetimes (default, maximum), names, listing with the last use, revocation by id
of keys only, and the admin token."""

from __future__ import annotations

from typing import Any

import grpc
import pytest

from extauthz import tokens
from extauthz._proto.extauthz.v1 import admin_pb2
from extauthz.errors import Reason, Unauthenticated
from extauthz.server.admin import AdminGuard
from extauthz.server.apikey_admin import ApiKeyAdminServicer, lifetime_seconds
from extauthz.store.manager import SessionManager
from extauthz.store.memory import MemorySessionStore
from tests.fixtures.core import ADMIN_METADATA, ADMIN_TOKEN, Aborted, FakeClock, FakeServicerContext

DAY = 86400


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(1_000_000.0)


@pytest.fixture
def store(clock: FakeClock) -> MemorySessionStore:
    return MemorySessionStore(clock=clock)


@pytest.fixture
def sessions(store: MemorySessionStore, clock: FakeClock) -> SessionManager:
    return SessionManager(store, idle_timeout=600, absolute_timeout=3600, clock=clock)


@pytest.fixture
def admin(sessions: SessionManager) -> ApiKeyAdminServicer:
    return ApiKeyAdminServicer(sessions, AdminGuard(ADMIN_TOKEN), 90, 365)


def ctx() -> FakeServicerContext:
    return FakeServicerContext(ADMIN_METADATA)


async def create(admin: ApiKeyAdminServicer, **fields: Any) -> admin_pb2.CreateApiKeyResponse:
    request = admin_pb2.CreateApiKeyRequest(**{"sub": "svc", "name": "reports", **fields})
    return await admin.CreateApiKey(request, ctx())


async def test_a_key_is_shown_once_and_stored_only_hashed(
    admin: ApiKeyAdminServicer, store: MemorySessionStore, clock: FakeClock
) -> None:
    reply = await create(admin, scopes=["reports:read"])
    key = reply.api_key
    assert tokens.has_token_shape(key, tokens.API_KEY_PREFIX)
    assert reply.key.sub == "svc" and reply.key.name == "reports"
    assert list(reply.key.scopes) == ["reports:read"]
    assert reply.key.expires_at.seconds == int(clock() + 90 * DAY)  # the default lifetime
    assert not reply.key.HasField("last_used_at")
    session = await store.get(tokens.token_hash(key))
    assert session is not None and session.kind == "api_key" and session.sid == reply.key.key_id
    assert key not in repr(store.__dict__)
    listed = await admin.ListApiKeys(admin_pb2.ListApiKeysRequest(sub="svc"), ctx())
    assert key not in str(listed)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"lifetime_seconds": 366 * DAY}, "at most 365 days (api_keys.max_lifetime_days)"),
        ({"lifetime_seconds": -1}, "must not be negative"),
        ({"sub": ""}, "subject"),
        ({"name": ""}, "name must be 1-100"),
        ({"name": "x" * 101}, "name must be 1-100"),
        ({"name": "line\nbreak"}, "control characters"),
        ({"name": "bidi\u202eiz"}, "control characters"),
        ({"scopes": ["has space"]}, "scope"),
    ],
)
async def test_bad_requests_are_invalid_arguments_and_create_nothing(
    admin: ApiKeyAdminServicer, store: MemorySessionStore, fields: dict[str, object], message: str
) -> None:
    with pytest.raises(Aborted) as refused:
        await create(admin, **fields)
    assert refused.value.code is grpc.StatusCode.INVALID_ARGUMENT
    assert message in refused.value.details
    assert await store.list_subject("svc") == []


async def test_the_maximum_lifetime_is_allowed(
    admin: ApiKeyAdminServicer, clock: FakeClock
) -> None:
    reply = await create(admin, lifetime_seconds=365 * DAY)
    assert reply.key.expires_at.seconds == int(clock() + 365 * DAY)


def test_lifetime_seconds() -> None:
    assert lifetime_seconds(0, default_days=90, max_days=365) == 90 * DAY
    assert lifetime_seconds(60, default_days=90, max_days=365) == 60
    with pytest.raises(ValueError, match="at most 1 days"):
        lifetime_seconds(DAY + 1, default_days=1, max_days=1)


async def test_the_list_shows_keys_only_with_their_last_use(
    admin: ApiKeyAdminServicer, sessions: SessionManager, clock: FakeClock
) -> None:
    first = await create(admin, name="first")
    second = await create(admin, name="second")
    await sessions.create("svc")  # a login session of the same subject is no key
    clock.advance(5)
    await sessions.lookup(first.api_key)
    listed = await admin.ListApiKeys(admin_pb2.ListApiKeysRequest(sub="svc"), ctx())
    by_name = {k.name: k for k in listed.keys}
    assert set(by_name) == {"first", "second"}
    assert by_name["first"].last_used_at.seconds == int(clock())
    assert not by_name["second"].HasField("last_used_at")
    assert by_name["second"].key_id == second.key.key_id


async def test_revoke_by_id_refuses_the_key_at_once_and_only_keys(
    admin: ApiKeyAdminServicer, sessions: SessionManager
) -> None:
    reply = await create(admin)
    login_token, login = await sessions.create("svc")
    revoke = admin_pb2.RevokeApiKeyRequest
    # a login session's id is not a key id: nothing happens to it
    assert not (await admin.RevokeApiKey(revoke(key_id=login.sid), ctx())).revoked
    await sessions.lookup(login_token)
    assert (await admin.RevokeApiKey(revoke(key_id=reply.key.key_id), ctx())).revoked
    assert not (await admin.RevokeApiKey(revoke(key_id=reply.key.key_id), ctx())).revoked
    assert not (await admin.RevokeApiKey(revoke(key_id="-nope\n"), ctx())).revoked
    with pytest.raises(Unauthenticated) as refused:
        await sessions.lookup(reply.api_key)
    assert refused.value.reason is Reason.REVOKED_SESSION


async def test_every_call_needs_the_admin_token(admin: ApiKeyAdminServicer) -> None:
    calls = [
        admin.CreateApiKey(
            admin_pb2.CreateApiKeyRequest(sub="svc", name="n"), FakeServicerContext()
        ),
        admin.ListApiKeys(admin_pb2.ListApiKeysRequest(sub="svc"), FakeServicerContext()),
        admin.RevokeApiKey(admin_pb2.RevokeApiKeyRequest(key_id="k"), FakeServicerContext()),
    ]
    for call in calls:
        with pytest.raises(Aborted) as refused:
            await call
        assert refused.value.code is grpc.StatusCode.UNAUTHENTICATED
