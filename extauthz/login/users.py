"""Local users: records, stores, argon2id password verification and the ``users`` CLI.

The authentication service (login) asks :class:`PasswordVerifier` whether a name and password
match; the verifier reads a :class:`UserRecord` from a :class:`UserStore` and returns the public
:class:`User` (no hash) or ``None``.

Stores:

- :class:`FileUserStore` — one JSON file, written atomically (temp file + ``rename``) with mode
  0600; the file is validated on every (re)load and a bad file raises :class:`UserStoreError`
  naming the file and the entry.
- :class:`RedisUserStore` — one Redis hash per user at ``<key_prefix>user:<name>``.

Password hashing is argon2id (RFC 9106), through argon2-cffi's ``PasswordHasher``. Unknown users,
disabled users and wrong passwords cost exactly one argon2 verification each and all answer
``None``, so neither the answer nor the time tells which accounts exist.

Rules: a user name is 1-64 characters of ``[A-Za-z0-9._@-]``, case preserved, compared exactly;
a password is 1-1024 characters, hashed as its UTF-8 bytes without normalisation. Roles and
scopes are RFC 6749 §3.3 scope tokens. Passwords are never logged.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import getpass as _getpass
import json
import logging
import os
import re
import secrets
import sys
import tempfile
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TextIO

import redis.asyncio
from argon2 import PasswordHasher, Type, extract_parameters
from argon2.exceptions import InvalidHashError, VerificationError

from extauthz.errors import ExtauthzError
from extauthz.scopes import validate_scope_tokens

log = logging.getLogger("extauthz.login.users")

NAME_MAX = 64
PASSWORD_MAX = 1024
_NAME = re.compile(r"[A-Za-z0-9._@-]{1,64}")
FILE_VERSION = 1


class UserStoreError(ExtauthzError):
    """A user store holds data that cannot be read (bad file, bad Redis record).

    The message names the source (file path or Redis key) and the entry.
    """


def validate_name(name: object) -> str:
    """Return ``name`` if it is a valid user name; raise ``ValueError`` saying why not."""
    if not isinstance(name, str):
        raise ValueError(f"user name must be a string, not {type(name).__name__}")
    if not _NAME.fullmatch(name):
        raise ValueError(
            f"invalid user name {name[:80]!r}: use 1-{NAME_MAX} characters of A-Z a-z 0-9 . _ @ -"
        )
    return name


def validate_password(password: object) -> str:
    """Return ``password`` if it is 1-1024 characters; raise ``ValueError`` (without echoing it)."""
    if not isinstance(password, str) or not 1 <= len(password) <= PASSWORD_MAX:
        raise ValueError(f"password must be 1-{PASSWORD_MAX} characters")
    return password


def _validate_hash(password_hash: object) -> str:
    if not isinstance(password_hash, str):
        raise ValueError("password_hash must be a string")
    try:
        extract_parameters(password_hash)
    except InvalidHashError:
        raise ValueError("password_hash is not an argon2 PHC string ($argon2id$v=19$...)") from None
    return password_hash


@dataclass(frozen=True)
class User:
    """What a successful login yields: the name (later the JWT ``sub``), roles and scopes."""

    name: str
    roles: tuple[str, ...]
    scopes: tuple[str, ...]
    disabled: bool = False


@dataclass(frozen=True)
class UserRecord:
    """A stored user: :class:`User` plus its argon2 PHC-format password hash."""

    name: str
    password_hash: str = field(repr=False)
    roles: tuple[str, ...] = ()
    scopes: tuple[str, ...] = ()
    disabled: bool = False

    @property
    def user(self) -> User:
        return User(self.name, self.roles, self.scopes, self.disabled)


class UserStore(Protocol):
    """Where users live. Names are validated by every method (``ValueError`` when bad).

    Store failures propagate (``OSError``/:class:`UserStoreError` for files,
    ``redis.exceptions.RedisError`` for Redis); callers map them to "unavailable".
    """

    async def get(self, name: str) -> UserRecord | None: ...

    async def put(
        self,
        name: str,
        password_hash: str,
        roles: Iterable[str],
        scopes: Iterable[str],
        *,
        disabled: bool = False,
    ) -> None:
        """Create or replace the whole record."""

    async def remove(self, name: str) -> bool:
        """Delete the user; ``True`` if it existed."""

    async def set_password_hash(self, name: str, password_hash: str) -> bool:
        """Replace the hash of an existing user; ``False`` (and no record created) if unknown."""

    async def names(self) -> list[str]:
        """All user names, sorted."""


def _record(name: str, password_hash: str, roles: Iterable[str], scopes: Iterable[str],
            disabled: bool) -> UserRecord:
    if not isinstance(disabled, bool):
        raise ValueError("disabled must be true or false")
    return UserRecord(
        name=validate_name(name),
        password_hash=_validate_hash(password_hash),
        roles=validate_scope_tokens("roles", roles),
        scopes=validate_scope_tokens("scopes", scopes),
        disabled=disabled,
    )


# --------------------------------------------------------------------------- file store


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r}")
        out[key] = value
    return out


_ENTRY_KEYS = {"password_hash", "roles", "scopes", "disabled"}


def _parse_user_file(text: str, path: Path) -> dict[str, UserRecord]:
    try:
        doc = json.loads(text, object_pairs_hook=_no_duplicate_keys)
    except json.JSONDecodeError as exc:
        raise UserStoreError(f"{path}: not valid JSON: {exc}") from None
    except ValueError as exc:
        raise UserStoreError(f"{path}: {exc}") from None
    if not isinstance(doc, dict) or doc.get("version") != FILE_VERSION or not isinstance(
        doc.get("users"), dict
    ):
        raise UserStoreError(
            f'{path}: expected an object {{"version": {FILE_VERSION}, "users": {{...}}}}'
        )
    users: dict[str, UserRecord] = {}
    for name, entry in doc["users"].items():
        where = f"{path}: user {name[:80]!r}"
        if not isinstance(entry, dict):
            raise UserStoreError(f"{where}: entry must be an object")
        unknown = set(entry) - _ENTRY_KEYS
        if unknown or "password_hash" not in entry:
            problem = f"unknown keys {sorted(unknown)}" if unknown else "password_hash is missing"
            raise UserStoreError(f"{where}: {problem}")
        try:
            users[name] = _record(
                name,
                entry["password_hash"],
                _list_field(entry, "roles"),
                _list_field(entry, "scopes"),
                entry.get("disabled", False),
            )
        except ValueError as exc:
            raise UserStoreError(f"{where}: {exc}") from None
    return users


def _list_field(entry: Mapping[str, Any], key: str) -> list[str]:
    value = entry.get(key, [])
    if not isinstance(value, list):
        raise ValueError(f"{key} must be a list of strings")
    return value


class FileUserStore:
    """Users in one JSON file (``{"version": 1, "users": {name: {...}}}``), mode 0600.

    Reads re-parse the file only when it changed (inode, mtime, size), so edits by
    ``extauthz users`` show up in a running server. Writes are read-modify-write under an
    exclusive ``flock`` on ``<path>.lock`` and replace the file atomically (temp file in the
    same directory, ``fsync``, ``os.replace``). File I/O runs in a worker thread.
    Raises :class:`UserStoreError` for a bad file, ``OSError`` for I/O failures.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._lock = asyncio.Lock()
        self._cache: tuple[tuple[int, int, int], dict[str, UserRecord]] | None = None
        self._warned_mode = False

    async def get(self, name: str) -> UserRecord | None:
        validate_name(name)
        return (await asyncio.to_thread(self._load)).get(name)

    async def names(self) -> list[str]:
        return sorted(await asyncio.to_thread(self._load))

    async def put(self, name: str, password_hash: str, roles: Iterable[str],
                  scopes: Iterable[str], *, disabled: bool = False) -> None:
        record = _record(name, password_hash, roles, scopes, disabled)

        def change(users: dict[str, UserRecord]) -> bool:
            users[record.name] = record
            return True

        await self._modify(change)

    async def remove(self, name: str) -> bool:
        validate_name(name)
        return await self._modify(lambda users: users.pop(name, None) is not None)

    async def set_password_hash(self, name: str, password_hash: str) -> bool:
        validate_name(name)
        _validate_hash(password_hash)

        def change(users: dict[str, UserRecord]) -> bool:
            old = users.get(name)
            if old is None:
                return False
            users[name] = UserRecord(name, password_hash, old.roles, old.scopes, old.disabled)
            return True

        return await self._modify(change)

    # -- implementation (runs in worker threads)

    def _load(self) -> dict[str, UserRecord]:
        try:
            with open(self.path, "rb") as f:
                st = os.fstat(f.fileno())
                key = (st.st_ino, st.st_mtime_ns, st.st_size)
                cached = self._cache
                if cached is not None and cached[0] == key:
                    return cached[1]
                data = f.read()
        except FileNotFoundError:
            return {}
        if st.st_mode & 0o077 and not self._warned_mode:
            self._warned_mode = True
            log.warning("user file %s has mode %o; it should be 0600", self.path, st.st_mode & 0o777)
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise UserStoreError(f"{self.path}: not UTF-8: {exc}") from None
        users = _parse_user_file(text, self.path)
        self._cache = (key, users)
        return users

    async def _modify(self, change: Callable[[dict[str, UserRecord]], bool]) -> bool:
        async with self._lock:
            return await asyncio.to_thread(self._modify_locked, change)

    def _modify_locked(self, change: Callable[[dict[str, UserRecord]], bool]) -> bool:
        lock_path = self.path.with_name(self.path.name + ".lock")
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            self._cache = None  # another process may have written since our last read
            users = dict(self._load())
            changed = change(users)
            if changed:
                self._write(users)
            return changed
        finally:
            os.close(fd)  # releases the flock

    def _write(self, users: Mapping[str, UserRecord]) -> None:
        doc = {
            "version": FILE_VERSION,
            "users": {
                r.name: {
                    "password_hash": r.password_hash,
                    "roles": list(r.roles),
                    "scopes": list(r.scopes),
                    "disabled": r.disabled,
                }
                for r in sorted(users.values(), key=lambda r: r.name)
            },
        }
        directory = self.path.parent
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{self.path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:  # mkstemp creates it 0600
                json.dump(doc, f, indent=2)
                f.write("\n")
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


# --------------------------------------------------------------------------- Redis store

# Only touch an existing hash: HSET on a missing key would create a record without roles.
_SET_HASH_IF_EXISTS = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('HSET', KEYS[1], 'password_hash', ARGV[1])
  return 1
end
return 0
"""


def _text(value: bytes | str) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else value


def _json_list(fields: Mapping[str, str], key: str) -> list[str]:
    value = json.loads(fields.get(key, "[]"))
    if not isinstance(value, list):
        raise ValueError(f"{key} must be a JSON list of strings")
    return value


def _glob_escape(text: str) -> str:
    return re.sub(r"([*?\[\]\\])", r"\\\1", text)


class RedisUserStore:
    """Users in Redis, one hash per user at ``<key_prefix>user:<name>``.

    Fields: ``password_hash`` (PHC string), ``roles`` and ``scopes`` (JSON lists of strings),
    ``disabled`` (``"0"``/``"1"``). Every command touches one key, so the store also works on
    Redis Cluster. ``names()`` uses ``SCAN``. Works with ``decode_responses`` on or off.
    Raises ``redis.exceptions.RedisError`` when Redis fails and :class:`UserStoreError`
    naming the key when a stored record is malformed.
    """

    def __init__(self, client: redis.asyncio.Redis, key_prefix: str = "extauthz:") -> None:
        self._redis = client
        self._prefix = key_prefix + "user:"
        self._set_hash = client.register_script(_SET_HASH_IF_EXISTS)

    def key(self, name: str) -> str:
        return self._prefix + validate_name(name)

    async def get(self, name: str) -> UserRecord | None:
        key = self.key(name)
        raw = await self._redis.hgetall(key)
        if not raw:
            return None
        fields = {_text(k): _text(v) for k, v in raw.items()}
        try:
            return _record(
                name,
                fields.get("password_hash", ""),
                _json_list(fields, "roles"),
                _json_list(fields, "scopes"),
                {"0": False, "1": True}[fields.get("disabled", "0")],
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise UserStoreError(f"redis key {key!r}: malformed user record: {exc}") from None

    async def put(self, name: str, password_hash: str, roles: Iterable[str],
                  scopes: Iterable[str], *, disabled: bool = False) -> None:
        record = _record(name, password_hash, roles, scopes, disabled)
        key = self.key(name)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.delete(key)
            pipe.hset(key, mapping={
                "password_hash": record.password_hash,
                "roles": json.dumps(list(record.roles)),
                "scopes": json.dumps(list(record.scopes)),
                "disabled": "1" if record.disabled else "0",
            })
            await pipe.execute()

    async def remove(self, name: str) -> bool:
        return bool(await self._redis.delete(self.key(name)))

    async def set_password_hash(self, name: str, password_hash: str) -> bool:
        key = self.key(name)
        return bool(await self._set_hash(keys=[key], args=[_validate_hash(password_hash)]))

    async def names(self) -> list[str]:
        found = set()
        async for key in self._redis.scan_iter(match=_glob_escape(self._prefix) + "*", count=500):
            name = _text(key)[len(self._prefix):]
            if _NAME.fullmatch(name):
                found.add(name)
        return sorted(found)


# --------------------------------------------------------------------------- passwords


@dataclass(frozen=True)
class Argon2Parameters:
    """argon2id cost parameters.

    The defaults are RFC 9106 §4's second recommended option (for memory-constrained
    deployments): t=3 passes, m=64 MiB, p=4 lanes, 128-bit salt, 256-bit tag. One verify
    takes roughly 50-150 ms of CPU and 64 MiB of memory.
    """

    time_cost: int = 3
    memory_cost_kib: int = 64 * 1024
    parallelism: int = 4
    hash_len: int = 32
    salt_len: int = 16

    def hasher(self) -> PasswordHasher:
        return PasswordHasher(
            time_cost=self.time_cost,
            memory_cost=self.memory_cost_kib,
            parallelism=self.parallelism,
            hash_len=self.hash_len,
            salt_len=self.salt_len,
            type=Type.ID,
        )


PRODUCTION_PARAMETERS = Argon2Parameters()


class PasswordVerifier:
    """Checks passwords against a :class:`UserStore`; hashes new ones with argon2id.

    ``hasher`` (optional) replaces the one built from ``parameters``; it must be argon2id
    (``ValueError`` otherwise). At most ``max_concurrent`` argon2 operations run at once (each
    needs ``memory_cost`` of memory), always in worker threads, never on the event loop.
    """

    def __init__(
        self,
        store: UserStore,
        parameters: Argon2Parameters = PRODUCTION_PARAMETERS,
        *,
        hasher: PasswordHasher | None = None,
        max_concurrent: int = 4,
    ) -> None:
        self._store = store
        self._hasher = hasher if hasher is not None else parameters.hasher()
        if self._hasher.type is not Type.ID:
            raise ValueError(f"password hasher must use argon2id (RFC 9106), not {self._hasher.type}")
        if max_concurrent < 1:
            raise ValueError("max_concurrent must be at least 1")
        self._slots = asyncio.Semaphore(max_concurrent)
        self._dummy: str | None = None
        self._dummy_lock = threading.Lock()

    def hash_password(self, password: str) -> str:
        """Return the argon2id PHC string for ``password`` (``ValueError`` if not 1-1024 chars).

        CPU-bound and blocking: inside the event loop use :meth:`hash_password_async`.
        """
        return self._hasher.hash(validate_password(password))

    async def hash_password_async(self, password: str) -> str:
        """:meth:`hash_password` in a worker thread."""
        validate_password(password)
        async with self._slots:
            return await asyncio.to_thread(self._hasher.hash, password)

    async def warm_up(self) -> None:
        """Compute the dummy hash now (at start-up) rather than on the first unknown user."""
        await asyncio.to_thread(self._dummy_hash)

    async def verify(self, name: str, password: str) -> User | None:
        """Return the :class:`User` if ``password`` is right and the user is enabled, else ``None``.

        Unknown, disabled and wrong-password cases each run exactly one argon2 verify (against
        a dummy hash for unknown users), so they cost the same and answer the same. Inputs that
        break the public shape rules (name, password length) return ``None`` with no store
        lookup and no argon2 work. A hash with outdated parameters is replaced after a
        successful login (``check_needs_rehash``); failing to store it is logged, not raised.
        Store failures propagate.
        """
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            return None
        if not isinstance(password, str) or not 1 <= len(password) <= PASSWORD_MAX:
            return None
        record = await self._store.get(name)
        async with self._slots:
            ok, new_hash = await asyncio.to_thread(self._verify_sync, record, password)
        if not ok or record is None:
            return None
        if new_hash is not None:
            try:
                if await self._store.set_password_hash(name, new_hash):
                    log.info("rehashed the password of user %s with current argon2 parameters", name)
            except Exception:
                log.warning("could not store the rehashed password of user %s", name, exc_info=True)
        return record.user

    def _dummy_hash(self) -> str:
        with self._dummy_lock:
            if self._dummy is None:
                self._dummy = self._hasher.hash(secrets.token_urlsafe(32))
            return self._dummy

    def _verify_sync(self, record: UserRecord | None, password: str) -> tuple[bool, str | None]:
        stored = record.password_hash if record is not None else self._dummy_hash()
        try:
            self._hasher.verify(stored, password)
        except VerificationError:  # includes VerifyMismatchError
            return False, None
        except InvalidHashError:
            log.error("user %s has an unreadable password hash", record.name if record else "-")
            return False, None
        if record is None or record.disabled:
            return False, None
        if self._hasher.check_needs_rehash(stored):
            return True, self._hasher.hash(password)
        return True, None


# --------------------------------------------------------------------------- CLI


def add_users_parser(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
) -> argparse.ArgumentParser:
    """Add ``users add|remove|passwd|list --file PATH`` to a CLI; returns the ``users`` parser.

    The parsed namespace has ``users_command`` set and ``func`` = :func:`run_users_command`
    (the convention of ``extauthz.cli``).
    """
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--file", required=True, metavar="PATH",
                        help="JSON user file (created with mode 0600 if missing)")
    stdin_flag = argparse.ArgumentParser(add_help=False)
    stdin_flag.add_argument("--password-stdin", action="store_true",
                            help="read the password from the first line of standard input")

    users = subparsers.add_parser("users", help="manage users in a JSON user file")
    actions = users.add_subparsers(dest="users_command", required=True, metavar="ACTION")
    add = actions.add_parser("add", parents=[common, stdin_flag], help="add a user")
    add.add_argument("name")
    add.add_argument("--role", action="append", default=[], metavar="ROLE")
    add.add_argument("--scope", action="append", default=[], metavar="SCOPE")
    remove = actions.add_parser("remove", parents=[common], help="remove a user")
    remove.add_argument("name")
    passwd = actions.add_parser("passwd", parents=[common, stdin_flag], help="set a password")
    passwd.add_argument("name")
    actions.add_parser("list", parents=[common], help="list users")
    users.set_defaults(func=run_users_command)
    return users


class _CommandError(Exception):
    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.status = status


def run_users_command(
    args: argparse.Namespace,
    *,
    stdin: TextIO | None = None,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
    getpass: Callable[[str], str] = _getpass.getpass,
    parameters: Argon2Parameters = PRODUCTION_PARAMETERS,
) -> int:
    """Run a parsed ``users`` command and return the exit status.

    Synchronous: it runs its own event loop (``asyncio.run``), so call it from the CLI, not
    from inside a running loop.

    0: done; 1: the command failed (user exists or is unknown, passwords differ, bad user
    file, I/O error); 2: invalid input (name, role, scope, password). Messages go to ``stderr``.
    """
    out = stdout or sys.stdout
    err = stderr or sys.stderr
    try:
        return asyncio.run(_run(args, stdin or sys.stdin, out, getpass, parameters))
    except _CommandError as exc:
        print(f"extauthz users: error: {exc}", file=err)
        return exc.status
    except ValueError as exc:
        print(f"extauthz users: error: {exc}", file=err)
        return 2
    except (UserStoreError, OSError) as exc:
        print(f"extauthz users: error: {exc}", file=err)
        return 1


def _read_password(args: argparse.Namespace, stdin: TextIO,
                   getpass: Callable[[str], str]) -> str:
    if args.password_stdin:
        line = stdin.readline()
        password = line[:-1] if line.endswith("\n") else line
        password = password[:-1] if password.endswith("\r") else password
    else:
        password = getpass(f"Password for {args.name}: ")
        if getpass("Repeat password: ") != password:
            raise _CommandError("passwords do not match")
    try:
        return validate_password(password)
    except ValueError as exc:
        raise _CommandError(str(exc), 2) from None


async def _run(args: argparse.Namespace, stdin: TextIO, out: TextIO,
               getpass: Callable[[str], str], parameters: Argon2Parameters) -> int:
    store = FileUserStore(args.file)
    command = args.users_command
    if command == "list":
        for name in await store.names():
            record = await store.get(name)
            if record is not None:
                state = "\tdisabled" if record.disabled else ""
                print(f"{name}\troles={','.join(record.roles)}\tscopes={','.join(record.scopes)}"
                      f"{state}", file=out)
        return 0
    name = validate_name(args.name)
    if command == "remove":
        if not await store.remove(name):
            raise _CommandError(f"no user {name!r} in {store.path}")
        print(f"removed {name}", file=out)
        return 0
    verifier = PasswordVerifier(store, parameters)
    if command == "add":
        roles = validate_scope_tokens("roles", args.role)
        scopes = validate_scope_tokens("scopes", args.scope)
        if await store.get(name) is not None:
            raise _CommandError(f"user {name!r} already exists in {store.path}; use 'users passwd'")
        password_hash = await verifier.hash_password_async(_read_password(args, stdin, getpass))
        await store.put(name, password_hash, roles, scopes)
        print(f"added {name}", file=out)
        return 0
    if command == "passwd":
        if await store.get(name) is None:
            raise _CommandError(f"no user {name!r} in {store.path}")
        password_hash = await verifier.hash_password_async(_read_password(args, stdin, getpass))
        if not await store.set_password_hash(name, password_hash):
            raise _CommandError(f"user {name!r} was removed meanwhile")
        print(f"password of {name} changed", file=out)
        return 0
    raise _CommandError(f"unknown users command {command!r}", 2)
