"""Tests for extauthz.oauth.clients: the client model's validation, secrets, and every
ClientStore (memory, file, Redis) through one protocol test."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import secrets
import stat
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio
from argon2 import PasswordHasher, Type, extract_parameters

from extauthz.errors import StoreUnavailable
from extauthz.oauth.clients import (
    ClientStore,
    ClientStoreError,
    FileClientStore,
    MemoryClientStore,
    OAuthClient,
    new_client,
)
from extauthz.oauth.redirect_uris import REDIRECT_URIS_MAX, validate_redirect_uri
from extauthz.store.redis.oauth_clients import RedisClientStore
from tests.support import RedisServer

# cheap argon2id for tests only (argon2's minimum memory is 8 KiB per lane)
FAST = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1, type=Type.ID)
APP = "https://app.example/callback"


def confidential(name: str = "Reporting", now: float = 1000.0) -> tuple[OAuthClient, str]:
    client, secret = new_client(name, [APP], ["read", "write"], confidential=True, now=now,
                                hasher=FAST)
    assert secret is not None
    return client, secret


def public(name: str = "Mobile", now: float = 2000.0) -> OAuthClient:
    client, secret = new_client(name, ["http://127.0.0.1:8400/cb"], ["read"],
                                confidential=False, now=now, hasher=FAST)
    assert secret is None
    return client


# ---------------------------------------------------------------- the model


@pytest.mark.parametrize(
    "uri",
    [
        APP,
        "https://app.example:8443/cb?tenant=a&x=%2F",
        "https://192.0.2.10/cb",
        "https://[2001:db8::1]/cb",
        "http://127.0.0.1/cb",
        "http://127.9.9.9:8080/cb",
        "http://[::1]:8080/",
        "http://localhost:3000/callback",
    ],
)
def test_good_redirect_uris_are_kept_as_written(uri: str) -> None:
    assert validate_redirect_uri(uri) == uri


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("/callback", "absolute https"),  # relative
        ("app.example/callback", "absolute https"),  # no scheme
        ("//app.example/callback", "absolute https"),  # scheme-relative
        ("https:app.example/cb", "absolute https"),  # no authority
        ("https://app.example/cb#frag", "fragment"),
        ("https://app.example/cb#", "fragment"),  # an empty fragment is one too
        ("https://user@app.example/cb", "userinfo"),
        ("https://user:pw@app.example/cb", "userinfo"),
        ("https://app.example@evil.example/cb", "userinfo"),
        ("http://app.example/cb", "loopback"),  # plain http off loopback
        ("http://10.0.0.1/cb", "loopback"),
        ("http://127.0.0.1.evil.example/cb", "loopback"),
        ("http://localhost.evil.example/cb", "loopback"),
        ("https://app.example\\@evil.example/", "not allowed"),  # backslash
        ("https://app.example\\cb", "not allowed"),
        ("https://*.app.example/cb", "wildcard"),
        ("https://app.example/*", "wildcard"),
        ("https://app.example/c b", "not allowed"),  # space
        ("https://app.example/cb\n", "not allowed"),  # control character
        ("https://app.ex\u00e4mple/cb", "not allowed"),  # non-ASCII (IDN must be punycode)
        ("https://app.example/%zz", "not allowed"),  # bad %-escape
        ("javascript://app.example/%0aalert(1)", "absolute https"),
        ("custom.scheme:/callback", "absolute https"),
        ("HTTPS://app.example/cb", "absolute https"),  # scheme compared exactly
        ("https:///cb", "host"),
        ("https://app.example:/cb", "host"),
        ("https://app.example:0/cb", "host"),
        ("https://app.example:99999/cb", "does not parse"),
        ("https://[::1/cb", "does not parse"),
        ("https://127.1/cb", "invalid host"),  # numeric shorthand
        ("https://[fe80::1%25eth0]/cb", "invalid host"),  # zone id
        ("https://app..example/cb", "invalid host"),
        ("https://-app.example/cb", "invalid host"),
        ("https://app_x.example/cb", "invalid host"),
        ("", "1-2000"),
        ("https://app.example/" + "a" * 2000, "1-2000"),
    ],
)
def test_bad_redirect_uris_are_refused(uri: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        validate_redirect_uri(uri)
    with pytest.raises(ValueError, match=message):  # and new_client refuses them before hashing
        new_client("App", [APP, uri], ["read"], confidential=True, now=0, hasher=FAST)


def test_redirect_uris_are_deduplicated_and_bounded() -> None:
    client, _ = new_client("App", [APP, APP], ["read"], confidential=True, now=0, hasher=FAST)
    assert client.redirect_uris == (APP,)
    many = [f"https://app.example/{i}" for i in range(REDIRECT_URIS_MAX + 1)]
    with pytest.raises(ValueError, match="at most 10"):
        new_client("App", many, ["read"], confidential=True, now=0, hasher=FAST)
    with pytest.raises(ValueError, match="not one string"):
        new_client("App", APP, ["read"], confidential=True, now=0, hasher=FAST)


@pytest.mark.parametrize(
    ("name", "scopes", "message"),
    [
        ("", ["read"], "client name"),
        ("x" * 101, ["read"], "client name"),
        (" padded", ["read"], "client name"),
        ("tab\tname", ["read"], "client name"),
        ("bidi \u202e name", ["read"], "client name"),  # a format character
        ("App", [], "1-100 scopes"),
        ("App", ["read write"], "scope token"),
        ("App", ['say"hi'], "scope token"),
        ("App", "read", "not one string"),
    ],
)
def test_bad_names_and_scopes_are_refused(name: str, scopes: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        new_client(name, [APP], scopes, confidential=True, now=0, hasher=FAST)


def test_client_types_and_their_secrets() -> None:
    client, secret = confidential()
    assert client.confidential and client.client_type == "confidential"
    assert len(secret) == 43  # 256 random bits, base64url
    assert len(client.client_id) == 22
    assert client.secret_hash is not None and secret not in client.secret_hash
    assert extract_parameters(client.secret_hash).type is Type.ID
    assert client.verify_secret(secret)
    assert not client.verify_secret(secret[:-1] + ("A" if secret[-1] != "A" else "B"))
    assert not client.verify_secret("")
    assert not client.verify_secret("x" * 10_000)  # refused without hashing
    assert not client.verify_secret(None)  # type: ignore[arg-type]

    pub = public()
    assert not pub.confidential and pub.secret_hash is None and pub.client_type == "public"
    assert not pub.verify_secret("")
    assert not pub.verify_secret(secret)
    two, secret_two = confidential()
    assert two.client_id != client.client_id and secret_two != secret
    assert not two.verify_secret(secret)


def test_production_hashing_is_the_password_parameters() -> None:
    client, secret = new_client("App", [APP], ["read"], confidential=True, now=0)
    assert client.secret_hash is not None and secret is not None
    params = extract_parameters(client.secret_hash)
    assert (params.type, params.time_cost, params.memory_cost, params.parallelism) == (
        Type.ID, 3, 64 * 1024, 4,
    )
    assert client.verify_secret(secret)


def test_non_argon2id_hasher_is_refused() -> None:
    with pytest.raises(ValueError, match="argon2id"):
        new_client("App", [APP], ["read"], confidential=True, now=0,
                   hasher=PasswordHasher(type=Type.I))


def test_the_record_is_checked_on_construction() -> None:
    client, _ = confidential()
    with pytest.raises(ValueError, match="public client has no secret"):
        dataclasses.replace(client, confidential=False)
    with pytest.raises(ValueError, match="argon2id"):
        dataclasses.replace(client, secret_hash="plain")
    with pytest.raises(ValueError, match="argon2id"):
        dataclasses.replace(client, secret_hash=PasswordHasher(type=Type.I).hash("x"))
    with pytest.raises(ValueError, match="client_id"):
        dataclasses.replace(client, client_id="a/b")
    with pytest.raises(ValueError, match="created_at"):
        dataclasses.replace(client, created_at=float("nan"))
    with pytest.raises(ValueError, match="confidential must be"):
        dataclasses.replace(client, confidential=1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="public client needs at least one redirect URI"):
        new_client("App", [], ["read"], confidential=False, now=0)
    # a confidential client without redirect URIs: client credentials only
    service, _ = new_client("Batch", [], ["read"], confidential=True, now=0, hasher=FAST)
    assert service.redirect_uris == ()


def test_secret_never_shows_in_repr_or_logs(caplog: pytest.LogCaptureFixture) -> None:
    client, secret = confidential()
    assert client.secret_hash is not None
    assert secret not in repr(client) and client.secret_hash not in repr(client)
    assert "secret_hash" not in repr(client)
    broken = dataclasses.replace(client, secret_hash=client.secret_hash[:-8] + "AAAAAAAA")
    with caplog.at_level(logging.DEBUG):
        assert not client.verify_secret("wrong-" + secret)
        assert not broken.verify_secret(secret)
    assert secret not in caplog.text and client.secret_hash[:-8] not in caplog.text


# ---------------------------------------------------------------- every store


@pytest.fixture(params=["memory", "file", pytest.param("redis", marks=pytest.mark.e2e)])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ClientStore]:
    if request.param == "memory":
        yield MemoryClientStore()
    elif request.param == "file":
        yield FileClientStore(tmp_path / "clients.json")
    else:
        server: RedisServer = request.getfixturevalue("redis_process")
        client = redis.asyncio.Redis.from_url(server.url)
        await client.flushdb()
        yield RedisClientStore(client, "ex*[1]:")
        await client.aclose()


async def test_store_protocol(store: ClientStore) -> None:
    assert await store.list() == []
    a, secret = confidential("A", now=20.0)
    b = public("B", now=10.0)
    await store.put(a)
    await store.put(b)
    got = await store.get(a.client_id)
    assert got == a and got is not None and got.verify_secret(secret)
    assert await store.get(b.client_id) == b
    assert await store.list() == [b, a]  # oldest first
    assert await store.get("unknown") is None

    renamed = dataclasses.replace(a, name="A2", scopes=("read",))
    await store.put(renamed)  # put replaces
    assert await store.get(a.client_id) == renamed
    assert len(await store.list()) == 2

    assert await store.remove(a.client_id) is True
    assert await store.remove(a.client_id) is False
    assert await store.get(a.client_id) is None
    assert await store.list() == [b]


@pytest.mark.parametrize("bad", ["", "a/b", "a*", "x" * 65, "../clients", "a b", "é"])
async def test_store_answers_malformed_ids_without_asking(store: ClientStore, bad: str) -> None:
    await store.put(public())
    assert await store.get(bad) is None
    assert await store.remove(bad) is False
    assert len(await store.list()) == 1
    with pytest.raises(ValueError):
        await store.put("not a client")  # type: ignore[arg-type]


async def test_stores_keep_no_plaintext_secret(store: ClientStore) -> None:
    client, secret = confidential()
    await store.put(client)
    for listed in await store.list():
        assert secret not in repr(listed)


# ---------------------------------------------------------------- the file store


async def test_file_store_writes_mode_0600_and_sees_other_writers(tmp_path: Path) -> None:
    path = tmp_path / "clients.json"
    cli_side, server_side = FileClientStore(path), FileClientStore(path)
    a, secret = confidential()
    await cli_side.put(a)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clients.json", "clients.json.lock"]
    assert await server_side.get(a.client_id) == a  # read from the file
    b = public()
    await cli_side.put(b)
    assert [c.client_id for c in await server_side.list()] == [a.client_id, b.client_id]
    assert await server_side.remove(a.client_id)
    assert await cli_side.list() == [b]
    text = path.read_text()
    assert secret not in text
    doc = json.loads(text)
    assert doc["version"] == 1 and list(doc["clients"]) == [b.client_id]
    assert doc["clients"][b.client_id] == {
        "name": "Mobile", "redirect_uris": ["http://127.0.0.1:8400/cb"], "scopes": ["read"],
        "confidential": False, "secret_hash": None, "created_at": 2000.0,
    }


async def test_file_store_concurrent_puts_all_land(tmp_path: Path) -> None:
    path = tmp_path / "clients.json"
    stores = [FileClientStore(path) for _ in range(4)]
    clients = [public(f"C{i}", now=float(i)) for i in range(8)]
    await asyncio.gather(*(stores[i % 4].put(c) for i, c in enumerate(clients)))
    assert await FileClientStore(path).list() == clients


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("[]", "entry must be an object"),
        ('{"confidential": false}', "missing keys ['name']"),
        ('{"name": "A", "confidential": false, "redirect_uris": ["https://a.example/"], '
         '"scopes": ["read"], "owner": "x"}', "unknown keys ['owner']"),
        ('{"name": "A", "confidential": false, "redirect_uris": "https://a.example/", '
         '"scopes": ["read"]}', "redirect_uris must be a list"),
        ('{"name": "A", "confidential": false, "redirect_uris": ["https://a.example/#x"], '
         '"scopes": ["read"]}', "fragment"),
        ('{"name": "A", "confidential": true, "redirect_uris": ["https://a.example/"], '
         '"scopes": ["read"], "secret_hash": "plaintext"}', "argon2id"),
    ],
)
async def test_corrupt_file_names_file_and_entry(tmp_path: Path, entry: str,
                                                 message: str) -> None:
    path = tmp_path / "clients.json"
    path.write_text(f'{{"version": 1, "clients": {{"abc": {entry}}}}}')
    with pytest.raises(ClientStoreError) as info:
        await FileClientStore(path).list()
    assert str(info.value).startswith(f"{path}: client 'abc': ")
    assert message in str(info.value)


async def test_loose_file_mode_is_warned_about(tmp_path: Path,
                                               caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "clients.json"
    await FileClientStore(path).put(public())
    path.chmod(0o644)
    with caplog.at_level(logging.WARNING, logger="extauthz.oauth.clients"):
        assert len(await FileClientStore(path).list()) == 1
    assert f"client file {path} has mode 644" in caplog.text


# ---------------------------------------------------------------- the Redis store


@pytest.mark.e2e
@pytest.mark.parametrize("decode", [False, True], ids=["bytes", "decoded"])
async def test_redis_store_layout_and_malformed_record(
    redis_process: RedisServer, decode: bool
) -> None:
    client = redis.asyncio.Redis.from_url(redis_process.url, decode_responses=decode)
    try:
        await client.flushdb()
        store = RedisClientStore(client, "t:")
        a, secret = confidential()
        await store.put(a)
        assert await client.keys("*") in ([b"t:oauth_clients"], ["t:oauth_clients"])
        raw = await client.hget("t:oauth_clients", a.client_id)
        assert raw is not None and secret not in (raw.decode() if isinstance(raw, bytes) else raw)
        assert await store.list() == [a]
        await client.hset("t:oauth_clients", "bad", '{"name": "X", "confidential": "no"}')
        with pytest.raises(ClientStoreError, match=r"redis key 't:oauth_clients' field 'bad'"):
            await store.get("bad")
        with pytest.raises(ClientStoreError, match="malformed client"):
            await store.list()
        await client.hset("t:oauth_clients", "bad", "not json")
        with pytest.raises(ClientStoreError, match="field 'bad'"):
            await store.get("bad")
    finally:
        await client.aclose()


@pytest.mark.e2e
async def test_redis_store_down_is_unavailable(fresh_redis: RedisServer) -> None:
    client = redis.asyncio.Redis.from_url(fresh_redis.url, socket_timeout=2)
    try:
        store = RedisClientStore(client, "t:")
        await store.put(public())
        fresh_redis.stop()
        with pytest.raises(StoreUnavailable, match="oauth client get"):
            await store.get("abc")
        with pytest.raises(StoreUnavailable, match="oauth client list"):
            await store.list()
    finally:
        await client.aclose()


def test_a_client_id_never_starts_with_a_dash(monkeypatch: pytest.MonkeyPatch) -> None:
    """A command line would read ``-abc`` as an option: such a draw is drawn again."""
    draws = iter(["-dashfirst0123456789ab", "okay0123456789abcdefgh"])
    real = secrets.token_urlsafe
    monkeypatch.setattr(secrets, "token_urlsafe", lambda n: next(draws) if n == 16 else real(n))
    client = public()
    assert client.client_id == "okay0123456789abcdefgh"
