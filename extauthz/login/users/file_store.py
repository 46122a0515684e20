"""The file-backed user store: one JSON file (:class:`~extauthz.recordfile.RecordFile`:
written atomically with mode 0600, validated on every (re)load); a bad file raises
:class:`~extauthz.login.users.records.UserStoreError` naming the file and the entry.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
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
from extauthz.recordfile import RecordFile, list_field

log = logging.getLogger("extauthz.login.users")

_ENTRY_KEYS = {"password_hash", "roles", "scopes", "disabled"}


def _parse_entry(name: str, entry: dict[str, Any]) -> UserRecord:
    unknown = set(entry) - _ENTRY_KEYS
    if unknown or "password_hash" not in entry:
        raise ValueError(f"unknown keys {sorted(unknown)}" if unknown else
                         "password_hash is missing")
    return _record(
        name,
        entry["password_hash"],
        list_field(entry, "roles"),
        list_field(entry, "scopes"),
        entry.get("disabled", False),
    )


def _dump_entry(r: UserRecord) -> dict[str, Any]:
    return {
        "password_hash": r.password_hash,
        "roles": list(r.roles),
        "scopes": list(r.scopes),
        "disabled": r.disabled,
    }


class FileUserStore:
    """Users in one JSON file (``{"version": 1, "users": {name: {...}}}``), mode 0600.

    Reads re-parse the file only when it changed (inode, mtime, size), so edits by
    ``extauthz users`` show up in a running server. Writes are read-modify-write under an
    exclusive ``flock`` on ``<path>.lock`` and replace the file atomically (temp file in the
    same directory, ``fsync``, ``os.replace``). File I/O runs in a worker thread.
    Raises :class:`UserStoreError` for a bad file, ``OSError`` for I/O failures.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._file = RecordFile(
            path, version=FILE_VERSION, section="users", noun="user", parse=_parse_entry,
            dump=_dump_entry, error=UserStoreError, log=log,
        )

    @property
    def path(self) -> Path:
        return self._file.path

    async def get(self, name: str) -> UserRecord | None:
        validate_name(name)
        return (await self._file.read()).get(name)

    async def names(self) -> list[str]:
        return sorted(await self._file.read())

    async def put(self, name: str, password_hash: str, roles: Iterable[str],
                  scopes: Iterable[str], *, disabled: bool = False) -> None:
        record = _record(name, password_hash, roles, scopes, disabled)

        def change(users: dict[str, UserRecord]) -> bool:
            users[record.name] = record
            return True

        await self._file.modify(change)

    async def remove(self, name: str) -> bool:
        validate_name(name)
        return await self._file.modify(lambda users: users.pop(name, None) is not None)

    async def set_password_hash(self, name: str, password_hash: str) -> bool:
        validate_name(name)
        _validate_hash(password_hash)

        def change(users: dict[str, UserRecord]) -> bool:
            old = users.get(name)
            if old is None:
                return False
            users[name] = UserRecord(name, password_hash, old.roles, old.scopes, old.disabled)
            return True

        return await self._file.modify(change)
