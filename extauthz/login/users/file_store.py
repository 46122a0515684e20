"""The file-backed user store: one JSON file, written atomically (temp file + ``rename``)
with mode 0600, validated on every (re)load; a bad file raises
:class:`~extauthz.login.users.records.UserStoreError` naming the file and the entry.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import tempfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from extauthz.login.users.records import (
    FILE_VERSION,
    UserRecord,
    UserStoreError,
    _record,
    _validate_hash,
    validate_name,
)

log = logging.getLogger("extauthz.login.users")


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
            log.warning(
                "user file %s has mode %o; it should be 0600", self.path, st.st_mode & 0o777
            )
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


