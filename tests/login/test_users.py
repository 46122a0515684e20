"""Tests for extauthz.login.users: name rules, argon2id verification, file and Redis stores, CLI."""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import logging
import os
import stat
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Literal

import pytest
import redis.asyncio
from argon2 import PasswordHasher, Type, extract_parameters

from extauthz.errors import StoreUnavailable
from extauthz.login.users import (
    PRODUCTION_PARAMETERS,
    Argon2Parameters,
    FileUserStore,
    PasswordVerifier,
    User,
    UserRecord,
    UserStoreError,
    validate_name,
    validate_password,
)
from extauthz.login.users.cli import add_users_parser, run_users_command
from extauthz.store.redis.users import RedisUserStore
from tests.support import RedisServer

# Cheap parameters for tests only (argon2's minimum memory is 8 KiB per lane).
FAST = Argon2Parameters(time_cost=1, memory_cost_kib=8, parallelism=1)


class CountingHasher(PasswordHasher):
    """A real argon2id hasher that counts its work and records which threads did it."""

    def __init__(self, params: Argon2Parameters = FAST) -> None:
        super().__init__(time_cost=params.time_cost, memory_cost=params.memory_cost_kib,
                         parallelism=params.parallelism, type=Type.ID)
        self.verifies = 0
        self.hashes = 0
        self.threads: set[int] = set()

    def verify(self, hash: str | bytes, password: str | bytes) -> Literal[True]:
        self.verifies += 1
        self.threads.add(threading.get_ident())
        return super().verify(hash, password)

    def hash(self, password: str | bytes, *, salt: bytes | None = None) -> str:
        self.hashes += 1
        self.threads.add(threading.get_ident())
        return super().hash(password, salt=salt)


class MemoryUserStore:
    """Dict-backed UserStore for verifier tests; counts lookups."""

    def __init__(self) -> None:
        self.records: dict[str, UserRecord] = {}
        self.gets = 0

    async def get(self, name: str) -> UserRecord | None:
        self.gets += 1
        return self.records.get(name)

    async def put(self, name: str, password_hash: str, roles: Any, scopes: Any, *,
                  disabled: bool = False) -> None:
        self.records[name] = UserRecord(name, password_hash, tuple(roles), tuple(scopes), disabled)

    async def remove(self, name: str) -> bool:
        return self.records.pop(name, None) is not None

    async def set_password_hash(self, name: str, password_hash: str) -> bool:
        old = self.records.get(name)
        if old is None:
            return False
        self.records[name] = UserRecord(name, password_hash, old.roles, old.scopes, old.disabled)
        return True

    async def names(self) -> list[str]:
        return sorted(self.records)


def fast_hash(password: str) -> str:
    return str(FAST.hasher().hash(password))


# ---------------------------------------------------------------- names and passwords


@pytest.mark.parametrize("name", ["a", "Alice", "alice.b_c-d@example.org", "x" * 64, "0"])
def test_valid_names(name: str) -> None:
    assert validate_name(name) == name


@pytest.mark.parametrize("name", ["", "x" * 65, "a b", "ä", "a/b", "a:b", "a\n", "*", None, 5])
def test_invalid_names_raise_clear_value_error(name: object) -> None:
    with pytest.raises(ValueError, match="user name"):
        validate_name(name)


def test_password_length_rules() -> None:
    assert validate_password("x") == "x"
    assert validate_password("x" * 1024) == "x" * 1024
    for bad in ("", "x" * 1025):
        with pytest.raises(ValueError, match="1-1024") as info:
            validate_password(bad)
        assert bad not in str(info.value) or bad == ""


# ---------------------------------------------------------------- hashing


def test_hash_is_argon2id_with_the_configured_parameters() -> None:
    verifier = PasswordVerifier(MemoryUserStore(), FAST)
    h = verifier.hash_password("correct horse")
    assert h.startswith("$argon2id$v=19$")
    params = extract_parameters(h)
    assert params.type is Type.ID
    assert (params.time_cost, params.memory_cost, params.parallelism) == (1, 8, 1)
    assert verifier.hash_password("correct horse") != h  # salted


def test_production_parameters_are_rfc9106_low_memory_argon2id() -> None:
    hasher = PRODUCTION_PARAMETERS.hasher()
    assert hasher.type is Type.ID
    assert (hasher.time_cost, hasher.memory_cost, hasher.parallelism) == (3, 65536, 4)
    assert (hasher.hash_len, hasher.salt_len) == (32, 16)


def test_non_argon2id_hasher_is_refused() -> None:
    with pytest.raises(ValueError, match="argon2id"):
        PasswordVerifier(MemoryUserStore(), hasher=PasswordHasher(type=Type.I))


def test_hash_password_refuses_bad_lengths() -> None:
    verifier = PasswordVerifier(MemoryUserStore(), FAST)
    with pytest.raises(ValueError):
        verifier.hash_password("")
    with pytest.raises(ValueError):
        verifier.hash_password("x" * 1025)


# ---------------------------------------------------------------- verification


@pytest.fixture
async def store_with_alice() -> MemoryUserStore:
    store = MemoryUserStore()
    await store.put("alice", fast_hash("s3cret"), ["admin"], ["read", "write"])
    await store.put("mallory", fast_hash("s3cret"), [], [], disabled=True)
    return store


async def test_verify_right_wrong_unknown_disabled(store_with_alice: MemoryUserStore) -> None:
    verifier = PasswordVerifier(store_with_alice, FAST)
    assert await verifier.verify("alice", "s3cret") == User("alice", ("admin",), ("read", "write"))
    wrong = await verifier.verify("alice", "S3cret")
    unknown = await verifier.verify("bob", "s3cret")
    disabled = await verifier.verify("mallory", "s3cret")
    case_differs = await verifier.verify("Alice", "s3cret")
    assert wrong is None and unknown is None and disabled is None and case_differs is None


async def test_unknown_user_and_wrong_password_each_run_one_argon2_verify(
    store_with_alice: MemoryUserStore,
) -> None:
    hasher = CountingHasher()
    verifier = PasswordVerifier(store_with_alice, hasher=hasher)

    assert await verifier.verify("alice", "wrong") is None
    assert (hasher.verifies, hasher.hashes) == (1, 0)

    assert await verifier.verify("nobody", "wrong") is None
    assert (hasher.verifies, hasher.hashes) == (2, 1)  # one dummy hash, computed lazily ...

    assert await verifier.verify("nobody2", "wrong") is None
    assert (hasher.verifies, hasher.hashes) == (3, 1)  # ... and only once

    assert await verifier.verify("mallory", "s3cret") is None  # disabled: same cost too
    assert hasher.verifies == 4


async def test_dummy_hash_uses_the_current_parameters(store_with_alice: MemoryUserStore) -> None:
    verifier = PasswordVerifier(store_with_alice, Argon2Parameters(time_cost=2, memory_cost_kib=16,
                                                                   parallelism=1))
    await verifier.warm_up()
    assert verifier._dummy is not None
    p = extract_parameters(verifier._dummy)
    assert (p.type, p.time_cost, p.memory_cost) == (Type.ID, 2, 16)


async def test_argon2_runs_off_the_event_loop_thread(store_with_alice: MemoryUserStore) -> None:
    hasher = CountingHasher()
    verifier = PasswordVerifier(store_with_alice, hasher=hasher)
    await verifier.verify("alice", "s3cret")
    await verifier.verify("nobody", "x")
    await verifier.hash_password_async("new password")
    assert hasher.verifies == 2 and hasher.hashes == 2
    assert threading.get_ident() not in hasher.threads


@pytest.mark.parametrize(("name", "password"),
                         [("a b", "pw"), ("", "pw"), ("x" * 65, "pw"), ("alice", ""),
                          ("alice", "x" * 1025)])
async def test_malformed_input_does_no_lookup_and_no_argon2(
    store_with_alice: MemoryUserStore, name: str, password: str,
) -> None:
    hasher = CountingHasher()
    verifier = PasswordVerifier(store_with_alice, hasher=hasher)
    assert await verifier.verify(name, password) is None
    assert (store_with_alice.gets, hasher.verifies, hasher.hashes) == (0, 0, 0)


async def test_outdated_hash_is_rehashed_after_successful_login(
    store_with_alice: MemoryUserStore,
) -> None:
    stronger = Argon2Parameters(time_cost=2, memory_cost_kib=16, parallelism=1)
    verifier = PasswordVerifier(store_with_alice, stronger)
    old = store_with_alice.records["alice"].password_hash

    assert await verifier.verify("alice", "wrong") is None
    assert store_with_alice.records["alice"].password_hash == old  # no rehash on failure

    assert await verifier.verify("alice", "s3cret") is not None
    new = store_with_alice.records["alice"].password_hash
    assert new != old
    p = extract_parameters(new)
    assert (p.type, p.time_cost, p.memory_cost) == (Type.ID, 2, 16)
    assert await verifier.verify("alice", "s3cret") is not None
    assert store_with_alice.records["alice"].password_hash == new  # current: left alone


async def test_argon2i_hash_is_upgraded_to_argon2id(store_with_alice: MemoryUserStore) -> None:
    legacy = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1, type=Type.I).hash("old")
    await store_with_alice.put("carol", legacy, [], [])
    verifier = PasswordVerifier(store_with_alice, FAST)
    assert await verifier.verify("carol", "old") is not None
    assert extract_parameters(store_with_alice.records["carol"].password_hash).type is Type.ID


def rehash_fails(store: MemoryUserStore, error: Exception) -> PasswordVerifier:
    """A verifier with stronger parameters than alice's hash, over ``store`` whose
    ``set_password_hash`` raises ``error``."""

    async def broken(name: str, password_hash: str) -> bool:
        raise error

    store.set_password_hash = broken  # type: ignore[method-assign]
    return PasswordVerifier(store, Argon2Parameters(time_cost=2, memory_cost_kib=8, parallelism=1))


@pytest.mark.parametrize(
    "error",
    [
        StoreUnavailable("redis user set password hash: ConnectionError: refused"),  # Redis
        ConnectionError("store down"),  # an OSError: the file store's I/O
        UserStoreError("users.json: not valid JSON"),  # the file store's bad file
    ],
)
async def test_failed_rehash_store_is_logged_not_raised(
    store_with_alice: MemoryUserStore, caplog: pytest.LogCaptureFixture, error: Exception
) -> None:
    verifier = rehash_fails(store_with_alice, error)
    with caplog.at_level(logging.DEBUG, logger="extauthz.login.users"):
        assert await verifier.verify("alice", "s3cret") is not None
    assert "could not store the rehashed password of user alice" in caplog.text


async def test_a_bug_while_storing_the_rehash_is_not_taken_for_an_outage(
    store_with_alice: MemoryUserStore,
) -> None:
    verifier = rehash_fails(store_with_alice, RuntimeError("a bug, not an outage"))
    with pytest.raises(RuntimeError, match="a bug"):
        await verifier.verify("alice", "s3cret")


async def test_unreadable_stored_hash_denies(store_with_alice: MemoryUserStore) -> None:
    store_with_alice.records["dave"] = UserRecord("dave", "$argon2id$garbage", (), ())
    verifier = PasswordVerifier(store_with_alice, FAST)
    assert await verifier.verify("dave", "anything") is None


async def test_store_failure_propagates() -> None:
    class DownStore(MemoryUserStore):
        async def get(self, name: str) -> UserRecord | None:
            raise ConnectionError("down")

    with pytest.raises(ConnectionError):
        await PasswordVerifier(DownStore(), FAST).verify("alice", "pw")


async def test_passwords_never_logged(
    store_with_alice: MemoryUserStore, caplog: pytest.LogCaptureFixture,
) -> None:
    store_with_alice.records["dave"] = UserRecord("dave", "$argon2id$garbage", (), ())
    verifier = PasswordVerifier(store_with_alice, Argon2Parameters(time_cost=2, memory_cost_kib=8,
                                                                   parallelism=1))
    with caplog.at_level(logging.DEBUG):
        await verifier.verify("alice", "pw-one-Xq7")      # wrong
        await verifier.verify("alice", "s3cret")          # right, rehashed (logged)
        await verifier.verify("dave", "pw-two-Zr9")       # unreadable hash (logged)
    assert caplog.records  # the rehash and the bad hash were logged ...
    assert "s3cret" not in caplog.text and "pw-one" not in caplog.text  # ... without passwords
    assert "pw-two" not in caplog.text
    assert "alice" not in repr(UserRecord("x", "alice-hash"))  # hash kept out of repr


# ---------------------------------------------------------------- file store


async def test_file_store_persists_reloads_with_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "users.json"
    store = FileUserStore(path)
    assert await store.get("alice") is None and await store.names() == []
    h = fast_hash("pw")
    await store.put("alice", h, ["admin"], ["read", "read", "write"])
    await store.put("Bob", fast_hash("pw2"), [], ["read"], disabled=True)

    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["users.json", "users.json.lock"]
    doc = json.loads(path.read_text())
    assert doc["version"] == 1 and set(doc["users"]) == {"alice", "Bob"}

    reloaded = FileUserStore(path)
    assert await reloaded.names() == ["Bob", "alice"]
    alice = await reloaded.get("alice")
    assert alice == UserRecord("alice", h, ("admin",), ("read", "write"), False)
    bob = await reloaded.get("Bob")
    assert bob is not None and bob.disabled is True
    assert await reloaded.get("bob") is None  # exact lookups


async def test_file_store_mutations(tmp_path: Path) -> None:
    path = tmp_path / "users.json"
    store = FileUserStore(path)
    await store.put("alice", fast_hash("pw"), ["admin"], [])
    new = fast_hash("new")
    assert await store.set_password_hash("alice", new) is True
    alice = await FileUserStore(path).get("alice")
    assert alice is not None and alice.password_hash == new
    assert await store.set_password_hash("ghost", new) is False
    assert await store.names() == ["alice"]
    assert await store.remove("ghost") is False
    assert await store.remove("alice") is True
    assert await FileUserStore(path).names() == []


async def test_file_store_sees_changes_made_by_another_writer(tmp_path: Path) -> None:
    path = tmp_path / "users.json"
    server_side, cli_side = FileUserStore(path), FileUserStore(path)
    await cli_side.put("alice", fast_hash("pw"), [], [])
    assert await server_side.names() == ["alice"]
    await cli_side.put("bob", fast_hash("pw"), [], [])
    assert await server_side.names() == ["alice", "bob"]
    await server_side.remove("alice")  # writers re-read under the lock: bob survives
    assert await cli_side.names() == ["bob"]


async def test_writes_reread_the_file_even_when_stat_looks_unchanged(tmp_path: Path) -> None:
    # e.g. a coarse-mtime filesystem: an in-place edit of the same size within one tick
    path = tmp_path / "users.json"
    store = FileUserStore(path)
    await store.put("alice", fast_hash("pw"), [], [])
    assert await store.names() == ["alice"]  # cached now
    st = os.stat(path)
    edited = path.read_text().replace('"alice"', '"carol"')
    with open(path, "r+") as f:  # same inode, same size
        f.write(edited)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    await store.put("bob", fast_hash("pw"), [], [])
    assert await FileUserStore(path).names() == ["bob", "carol"]


async def test_file_store_rejects_bad_input(tmp_path: Path) -> None:
    store = FileUserStore(tmp_path / "users.json")
    with pytest.raises(ValueError, match="user name"):
        await store.put("a b", fast_hash("pw"), [], [])
    with pytest.raises(ValueError, match="argon2"):
        await store.put("alice", "plaintext", [], [])
    with pytest.raises(ValueError, match="scope"):
        await store.put("alice", fast_hash("pw"), [], ["has space"])
    with pytest.raises(ValueError, match="user name"):
        await store.get("../etc")
    assert not (tmp_path / "users.json").exists()


async def test_failed_write_leaves_old_file_and_no_temp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    path = tmp_path / "users.json"
    store = FileUserStore(path)
    await store.put("alice", fast_hash("pw"), [], [])
    before = path.read_bytes()

    def boom(*args: Any, **kwargs: Any) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(json, "dump", boom)  # the json module extauthz.login.users writes with
    with pytest.raises(OSError, match="disk full"):
        await store.put("bob", fast_hash("pw"), [], [])
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["users.json", "users.json.lock"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "not valid JSON"),
        ("[]", 'expected an object {"version": 1'),
        ('{"version": 2, "users": {}}', 'expected an object {"version": 1'),
        ('{"version": 1, "users": {"alice": "x"}}', "user 'alice': entry must be an object"),
        ('{"version": 1, "users": {"alice": {}}}', "user 'alice': password_hash is missing"),
        ('{"version": 1, "users": {"alice": {"password_hash": "pw"}}}',
         "user 'alice': password_hash is not an argon2"),
        ('{"version": 1, "users": {"a b": {"password_hash": "HASH"}}}',
         "user 'a b': invalid user name"),
        ('{"version": 1, "users": {"alice": {"password_hash": "HASH", "roles": "admin"}}}',
         "user 'alice': roles must be a list"),
        ('{"version": 1, "users": {"alice": {"password_hash": "HASH", "disabled": "no"}}}',
         "user 'alice': disabled must be true or false"),
        ('{"version": 1, "users": {"alice": {"password_hash": "HASH", "admin": true}}}',
         "user 'alice': unknown keys ['admin']"),
        ('{"version": 1, "users": {"alice": {"password_hash": "HASH"}, '
         '"alice": {"password_hash": "HASH"}}}', "duplicate key 'alice'"),
    ],
)
async def test_corrupt_file_names_file_and_entry(tmp_path: Path, content: str,
                                                 message: str) -> None:
    path = tmp_path / "users.json"
    path.write_text(content.replace("HASH", fast_hash("pw")))
    with pytest.raises(UserStoreError) as info:
        await FileUserStore(path).names()
    assert str(info.value).startswith(f"{path}: ")
    assert message in str(info.value)


async def test_loose_file_mode_is_warned_about(tmp_path: Path,
                                               caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "users.json"
    await FileUserStore(path).put("alice", fast_hash("pw"), [], [])
    path.chmod(0o644)
    with caplog.at_level(logging.WARNING, logger="extauthz.login.users"):
        assert await FileUserStore(path).names() == ["alice"]
    assert f"user file {path} has mode 644" in caplog.text


# ---------------------------------------------------------------- Redis store


@pytest.fixture(scope="module")
def redis_port(redis_process: RedisServer) -> int:
    """The port of this module's own redis-server (tests/conftest.py)."""
    return redis_process.port


@pytest.fixture(params=[False, True], ids=["bytes", "decoded"])
async def client(redis_port: int, request: pytest.FixtureRequest,
                 ) -> AsyncIterator[redis.asyncio.Redis]:
    c = redis.asyncio.Redis(host="127.0.0.1", port=redis_port, decode_responses=request.param)
    await c.flushdb()
    try:
        yield c
    finally:
        await c.aclose()


PREFIX = "ex*[1]:"  # glob characters in the prefix must not widen SCAN


@pytest.mark.e2e
async def test_redis_store_round_trip(client: redis.asyncio.Redis) -> None:
    store = RedisUserStore(client, PREFIX)
    assert await store.get("alice") is None
    h = fast_hash("pw")
    await store.put("alice", h, ["admin"], ["read", "write"])
    await store.put("Bob", fast_hash("pw"), [], [], disabled=True)
    await client.set("exX[1]:user:eve", "decoy")  # would match an unescaped pattern
    await client.set("ex*[1]:session:x", "other")

    assert await store.get("alice") == UserRecord("alice", h, ("admin",), ("read", "write"))
    bob = await store.get("Bob")
    assert bob is not None and bob.disabled is True
    assert await store.names() == ["Bob", "alice"]

    raw = await client.hgetall("ex*[1]:user:alice")
    raw = {(k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes)
                                                         else v) for k, v in raw.items()}
    assert raw == {"password_hash": h, "roles": '["admin"]', "scopes": '["read", "write"]',
                   "disabled": "0"}

    # put replaces the whole record
    await store.put("alice", h, [], ["read"])
    assert await store.get("alice") == UserRecord("alice", h, (), ("read",))


@pytest.mark.e2e
async def test_redis_store_mutations(client: redis.asyncio.Redis) -> None:
    store = RedisUserStore(client, "t:")
    await store.put("alice", fast_hash("pw"), ["admin"], [])
    new = fast_hash("new")
    assert await store.set_password_hash("alice", new) is True
    record = await store.get("alice")
    assert record is not None and record.password_hash == new and record.roles == ("admin",)
    assert await store.set_password_hash("ghost", new) is False
    assert await client.exists("t:user:ghost") == 0
    assert await store.remove("alice") is True
    assert await store.remove("alice") is False
    assert await store.names() == []


@pytest.mark.e2e
async def test_redis_store_malformed_record_names_the_key(client: redis.asyncio.Redis) -> None:
    store = RedisUserStore(client, "t:")
    await client.hset("t:user:alice", mapping={"password_hash": fast_hash("pw"), "roles": "{}"})
    with pytest.raises(UserStoreError, match=r"redis key 't:user:alice'.*roles"):
        await store.get("alice")
    with pytest.raises(ValueError, match="user name"):
        await store.get("a*")


@pytest.mark.e2e
async def test_verifier_over_redis_store(client: redis.asyncio.Redis) -> None:
    store = RedisUserStore(client, "t:")
    verifier = PasswordVerifier(store, FAST)
    await store.put("alice", verifier.hash_password("pw"), ["r"], ["s"])
    assert await verifier.verify("alice", "pw") == User("alice", ("r",), ("s",))
    assert await verifier.verify("alice", "px") is None


# ---------------------------------------------------------------- CLI


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="extauthz")
    sub = parser.add_subparsers(dest="command", required=True)
    add_users_parser(sub)
    return parser.parse_args(argv)


def _run(argv: list[str], stdin: str = "", prompts: list[str] | None = None,
         ) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    answers = iter(prompts or [])
    code = run_users_command(_parse(argv), stdin=io.StringIO(stdin), stdout=out, stderr=err,
                             getpass=lambda prompt: next(answers), parameters=FAST)
    return code, out.getvalue(), err.getvalue()


def test_cli_add_list_passwd_remove(tmp_path: Path) -> None:
    # synchronous: run_users_command runs its own event loop, as the CLI does
    f = str(tmp_path / "users.json")
    assert _run(["users", "add", "alice", "--role", "admin", "--scope", "read", "--scope",
                 "write", "--file", f, "--password-stdin"], stdin="pw one \n")[0] == 0
    assert _run(["users", "add", "bob", "--file", f], prompts=["pw2", "pw2"])[0] == 0
    assert stat.S_IMODE(os.stat(f).st_mode) == 0o600

    code, out, _ = _run(["users", "list", "--file", f])
    assert code == 0
    assert out == "alice\troles=admin\tscopes=read,write\nbob\troles=\tscopes=\n"

    verifier = PasswordVerifier(FileUserStore(f), FAST)

    def verify(name: str, password: str) -> User | None:
        return asyncio.run(verifier.verify(name, password))

    assert verify("alice", "pw one ") is not None  # only the newline is stripped
    assert verify("bob", "pw2") is not None

    assert _run(["users", "passwd", "alice", "--file", f, "--password-stdin"], "new\r\n")[0] == 0
    assert verify("alice", "new") is not None
    assert verify("alice", "pw one ") is None

    assert _run(["users", "remove", "bob", "--file", f]) == (0, "removed bob\n", "")
    assert asyncio.run(FileUserStore(f).names()) == ["alice"]


def test_cli_errors(tmp_path: Path) -> None:
    f = str(tmp_path / "users.json")
    assert _run(["users", "add", "alice", "--file", f, "--password-stdin"], "pw\n")[0] == 0

    code, _, err = _run(["users", "add", "alice", "--file", f, "--password-stdin"], "pw\n")
    assert code == 1 and "already exists" in err
    code, _, err = _run(["users", "add", "a b", "--file", f, "--password-stdin"], "pw\n")
    assert code == 2 and "invalid user name" in err
    code, _, err = _run(["users", "add", "bob", "--file", f, "--password-stdin"], "\n")
    assert code == 2 and "password must be" in err
    code, _, err = _run(["users", "add", "bob", "--scope", "a b", "--file", f,
                         "--password-stdin"], "pw\n")
    assert code == 2 and "scope" in err
    code, _, err = _run(["users", "add", "bob", "--file", f], prompts=["one", "two"])
    assert code == 1 and "do not match" in err
    code, _, err = _run(["users", "passwd", "ghost", "--file", f, "--password-stdin"], "pw\n")
    assert code == 1 and "no user 'ghost'" in err
    code, _, err = _run(["users", "remove", "ghost", "--file", f])
    assert code == 1 and "no user 'ghost'" in err

    Path(f).write_text("{broken")
    code, _, err = _run(["users", "list", "--file", f])
    assert code == 1 and f in err and "not valid JSON" in err


def test_cli_is_wired_into_extauthz_main(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                         ) -> None:
    from extauthz.cli import main

    f = str(tmp_path / "users.json")
    asyncio.run(FileUserStore(f).put("alice", fast_hash("pw"), ["admin"], []))
    assert main(["users", "list", "--file", f]) == 0
    assert capsys.readouterr().out == "alice\troles=admin\tscopes=\n"
    assert main(["users", "remove", "ghost", "--file", f]) == 1


def test_cli_requires_file_and_action() -> None:
    with pytest.raises(SystemExit):
        _parse(["users", "list"])
    with pytest.raises(SystemExit):
        _parse(["users"])


def test_cli_add_without_a_terminal_says_how_to_pass_the_password(tmp_path: Path) -> None:
    """getpass raises EOFError when there is no terminal and stdin is empty (a script that
    forgot --password-stdin): one line naming the flag, exit 2, no user, no traceback."""
    f = str(tmp_path / "users.json")

    def no_terminal(prompt: str) -> str:
        raise EOFError

    out, err = io.StringIO(), io.StringIO()
    code = run_users_command(_parse(["users", "add", "carol", "--file", f]),
                             stdin=io.StringIO(""), stdout=out, stderr=err,
                             getpass=no_terminal, parameters=FAST)
    assert code == 2 and "--password-stdin" in err.getvalue()
    assert "Traceback" not in err.getvalue()
    assert not Path(f).exists() or asyncio.run(FileUserStore(f).names()) == []
