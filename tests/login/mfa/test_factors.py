"""Factor records and stores (memory, file, Redis), the TOTP and recovery-code kinds, sealing
of secrets at rest, and pending logins (memory, Redis)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pyotp
import pytest
import redis.asyncio

from extauthz import tokens
from extauthz.errors import StoreUnavailable
from extauthz.login.mfa.factors import (
    Factor,
    FactorRejected,
    FactorStore,
    FactorStoreError,
    MemoryFactorStore,
)
from extauthz.login.mfa.file_store import FileFactorStore
from extauthz.login.mfa.kinds import Attempt
from extauthz.login.mfa.pending import MemoryPendingLogins, PendingLogin, PendingLogins
from extauthz.login.mfa.recovery import COUNT, RecoveryKind
from extauthz.login.mfa.sealing import SecretBox, load_key, new_key
from extauthz.login.mfa.totp import TotpKind
from extauthz.store.redis.factors import RedisFactorStore
from extauthz.store.redis.pending import RedisPendingLogins
from tests.fixtures.core import FakeClock
from tests.support import RedisServer

NOW = 1_800_000_000.0  # a multiple of 30: a fresh TOTP time-step


# ---------------------------------------------------------------- the kinds


def test_totp_accepts_the_current_code_once_and_a_later_one_after() -> None:
    kind = TotpKind(SecretBox())
    factor, secret = kind.new_factor("alice", NOW)
    assert not factor.confirmed and len(secret) == 32  # 160 bits, RFC 4226 §4 R6
    code = pyotp.TOTP(secret).at(NOW)
    used = kind.verify(factor, Attempt("alice", code, NOW))
    assert used.last_used_at == NOW and used.data["last_step"] == int(NOW // 30)
    with pytest.raises(FactorRejected):  # replayed within its window
        kind.verify(used, Attempt("alice", code, NOW + 10))
    with pytest.raises(FactorRejected):  # the previous step's code is older than the last use
        kind.verify(used, Attempt("alice", pyotp.TOTP(secret).at(NOW - 30), NOW + 10))
    later = pyotp.TOTP(secret).at(NOW + 30)
    assert kind.verify(used, Attempt("alice", later, NOW + 30)).data["last_step"] == int(
        NOW // 30
    ) + 1


def test_totp_refuses_wrong_malformed_and_far_codes() -> None:
    kind = TotpKind(SecretBox())
    factor, secret = kind.new_factor("alice", NOW)
    right = pyotp.TOTP(secret).at(NOW)
    wrong = f"{(int(right) + 1) % 1_000_000:06d}"
    for response in (wrong, "", "12345", "1234567", "abcdef", "١٢٣٤٥٦", right + "0"):
        with pytest.raises(FactorRejected):
            kind.verify(factor, Attempt("alice", response, NOW))
    with pytest.raises(FactorRejected):  # two steps away: outside the drift
        kind.verify(factor, Attempt("alice", pyotp.TOTP(secret).at(NOW - 60), NOW))
    assert kind.verify(factor, Attempt("alice", pyotp.TOTP(secret).at(NOW - 30), NOW))


def test_totp_secret_is_sealed_when_a_key_is_configured_and_bound_to_its_record(
    tmp_path: Path,
) -> None:
    key_file = tmp_path / "mfa.key"
    key_file.write_text(new_key() + "\n")
    box = SecretBox(load_key(str(key_file)))
    kind = TotpKind(box)
    factor, secret = kind.new_factor("alice", NOW)
    assert secret not in json.dumps(factor.data) and factor.data["secret"].startswith("aesgcm:")
    assert kind.secret_of("alice", factor) == secret
    with pytest.raises(ValueError):  # the sealed value copied to another user does not open
        kind.secret_of("bob", factor)
    with pytest.raises(FactorRejected):
        kind.verify(factor, Attempt("bob", pyotp.TOTP(secret).at(NOW), NOW))
    with pytest.raises(ValueError):  # without the key
        TotpKind(SecretBox()).secret_of("alice", factor)
    plain, plain_secret = TotpKind(SecretBox()).new_factor("alice", NOW)
    assert plain.data["secret"] == "plain:" + plain_secret  # documented: no key, no sealing
    assert kind.secret_of("alice", plain) == plain_secret  # a key added later still reads it
    key_file.write_text("too short")
    with pytest.raises(ValueError):
        load_key(str(key_file))


def test_totp_enrolment_shows_an_inline_svg_qr_code_of_the_otpauth_uri() -> None:
    kind = TotpKind(SecretBox(), issuer="Example")
    secret = "JBSWY3DPEHPK3PXP" * 2
    uri = kind.provisioning_uri("alice", secret)
    assert uri.startswith("otpauth://totp/Example:alice?") and f"secret={secret}" in uri
    svg = kind.qr_svg(uri)
    assert svg.startswith("<svg") and "<script" not in svg and "href" not in svg


def test_recovery_codes_work_once_each() -> None:
    kind = RecoveryKind()
    factor, codes = kind.new_factor("alice", NOW)
    assert len(codes) == len(set(codes)) == COUNT and factor.confirmed
    assert not any(c in json.dumps(factor.data) or c.replace("-", "") in json.dumps(factor.data)
                   for c in codes)
    used = kind.verify(factor, Attempt("alice", codes[3].lower(), NOW))
    assert kind.remaining(used) == COUNT - 1
    with pytest.raises(FactorRejected):
        kind.verify(used, Attempt("alice", codes[3], NOW))
    with pytest.raises(FactorRejected):  # another user's record key: the digest differs
        kind.verify(factor, Attempt("bob", codes[0], NOW))
    for bad in ("", "0000-0000-0000-0000", "not a code", codes[0] + "0"):
        with pytest.raises(FactorRejected):
            kind.verify(factor, Attempt("alice", bad, NOW))


# ---------------------------------------------------------------- the stores


@pytest.fixture(scope="module")
def redis_port(redis_process: RedisServer) -> int:
    return redis_process.port


@pytest.fixture
async def client(redis_port: int) -> AsyncIterator[redis.asyncio.Redis]:
    c = redis.asyncio.Redis(host="127.0.0.1", port=redis_port)
    await c.flushdb()
    try:
        yield c
    finally:
        await c.aclose()


@pytest.fixture(params=[
    "memory", "file", pytest.param("redis", marks=pytest.mark.e2e),
    pytest.param("redis-decoded", marks=pytest.mark.e2e),
])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[FactorStore]:
    if request.param == "memory":
        yield MemoryFactorStore()
    elif request.param == "file":
        yield FileFactorStore(tmp_path / "factors.json")
    else:
        port = request.getfixturevalue("redis_port")
        c = redis.asyncio.Redis(host="127.0.0.1", port=port,
                                decode_responses=request.param == "redis-decoded")
        await c.flushdb()
        yield RedisFactorStore(c, "t:")
        await c.aclose()


async def test_factor_store_round_trip_change_and_removal(store: FactorStore) -> None:
    kind = TotpKind(SecretBox())
    totp, secret = kind.new_factor("alice", NOW)
    recovery, codes = RecoveryKind().new_factor("alice", NOW + 1)
    await store.put("alice", totp)
    await store.put("alice", recovery)
    await store.put("bob", RecoveryKind().new_factor("bob", NOW)[0])
    assert [f.id for f in await store.factors("alice")] == [totp.id, recovery.id]
    assert await store.factors("carol") == []
    code = pyotp.TOTP(secret).at(NOW)

    def use(f: Factor) -> Factor:
        return kind.verify(f, Attempt("alice", code, NOW))

    changed = await store.change("alice", totp.id, use)
    assert changed is not None and changed.data["last_step"] == int(NOW // 30)
    with pytest.raises(FactorRejected):  # the stored record remembers the step
        await store.change("alice", totp.id, use)
    assert await store.change("alice", "no-such-factor", use) is None
    assert await store.remove("alice", recovery.id) and not await store.remove("alice", recovery.id)
    assert await store.remove_all("alice") == 1 and await store.factors("alice") == []
    assert len(await store.factors("bob")) == 1


async def test_concurrent_uses_of_one_code_let_exactly_one_through(store: FactorStore) -> None:
    kind = TotpKind(SecretBox())
    totp, secret = kind.new_factor("alice", NOW)
    await store.put("alice", totp)
    code = pyotp.TOTP(secret).at(NOW)

    async def use() -> bool:
        try:
            await store.change("alice", totp.id, lambda f: kind.verify(
                f, Attempt("alice", code, NOW)))
        except FactorRejected:
            return False
        return True

    outcomes = await asyncio.gather(*(use() for _ in range(5)))
    assert sorted(outcomes) == [False] * 4 + [True]


async def test_file_store_refuses_a_bad_file(tmp_path: Path) -> None:
    path = tmp_path / "factors.json"
    path.write_text(json.dumps({"version": 1, "factors": {"alice": {"f1234567": {"kind": 3}}}}))
    with pytest.raises(FactorStoreError, match="alice"):
        await FileFactorStore(path).factors("alice")


@pytest.mark.e2e
async def test_redis_store_refuses_a_malformed_record_and_fails_closed(
    client: redis.asyncio.Redis,
) -> None:
    await client.hset("t:mfa:alice", "f1234567", "not json")
    with pytest.raises(FactorStoreError, match="t:mfa:alice"):
        await RedisFactorStore(client, "t:").factors("alice")
    dead = redis.asyncio.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2)
    with pytest.raises(StoreUnavailable):
        await RedisFactorStore(dead, "t:").factors("alice")
    await dead.aclose()


# ---------------------------------------------------------------- pending logins


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.e2e)])
async def pending(
    request: pytest.FixtureRequest,
) -> AsyncIterator[tuple[PendingLogins, FakeClock]]:
    clock = FakeClock(NOW)
    if request.param == "memory":
        yield MemoryPendingLogins(clock), clock
        return
    c = redis.asyncio.Redis(host="127.0.0.1", port=request.getfixturevalue("redis_port"))
    await c.flushdb()
    yield RedisPendingLogins(c, "t:", clock), clock
    await c.aclose()


async def test_a_pending_login_is_taken_once(pending: tuple[PendingLogins, FakeClock]) -> None:
    store, clock = pending
    token = tokens.mint_token(tokens.PENDING_LOGIN_PREFIX)
    assert not tokens.has_token_shape(token)  # never a session token
    record = PendingLogin("alice", "login", "/app", clock(), clock() + 300, "nonce")
    await store.put(tokens.token_hash(token), record)
    assert await store.get(tokens.token_hash(token)) == record
    assert await store.replace(tokens.token_hash(token), record)
    results = await asyncio.gather(*(store.take(tokens.token_hash(token)) for _ in range(3)))
    assert results.count(record) == 1 and results.count(None) == 2
    assert not await store.replace(tokens.token_hash(token), record)
    with pytest.raises(ValueError):
        PendingLogin.from_json('{"sub": "a", "purpose": "session"}')


async def test_a_pending_login_expires(pending: tuple[PendingLogins, FakeClock]) -> None:
    store, clock = pending
    if isinstance(store, RedisPendingLogins):
        pytest.skip("Redis expires keys on its own clock; the TTL is checked below")
    await store.put("h", PendingLogin("alice", "login", "/", clock(), clock() + 300, "n"))
    clock.advance(301)
    assert await store.get("h") is None


@pytest.mark.e2e
async def test_redis_pending_login_has_its_ttl(client: redis.asyncio.Redis) -> None:
    clock = FakeClock(NOW)
    store = RedisPendingLogins(client, "t:", clock)
    await store.put("h", PendingLogin("alice", "login", "/", NOW, NOW + 300, "n"))
    assert 295 <= await client.ttl("t:pending:h") <= 300
