"""The file-backed factor store: one JSON file beside the user file
(:class:`~extauthz.recordfile.RecordFile`: mode 0600, written atomically, validated on every
(re)load), ``{"version": 1, "factors": {user: {factor_id: {...}}}}``."""

from __future__ import annotations

import logging
import os
from dataclasses import replace
from typing import Any

from extauthz.login.mfa.factors import (
    CHANGE_ATTEMPTS,
    FILE_VERSION,
    Factor,
    FactorChange,
    FactorStoreError,
    _sorted,
    validate_factor_id,
)
from extauthz.login.users.records import validate_name
from extauthz.recordfile import RecordFile

log = logging.getLogger("extauthz.login.mfa")

_UserFactors = dict[str, Factor]


def _parse(user: str, entry: dict[str, Any]) -> _UserFactors:
    validate_name(user)
    return {fid: Factor.from_fields(fid, fields) for fid, fields in entry.items()}


def _dump(factors: _UserFactors) -> dict[str, Any]:
    return {fid: factors[fid].to_fields() for fid in sorted(factors)}


class FileFactorStore:
    """Factors in one JSON file (:class:`~extauthz.login.mfa.factors.FactorStore`). Changes
    are read-modify-write under the file's lock, so :meth:`change` is atomic across
    processes. Raises :class:`FactorStoreError` for a bad file, ``OSError`` for I/O."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._file: RecordFile[_UserFactors] = RecordFile(
            path, version=FILE_VERSION, section="factors", noun="user", parse=_parse,
            dump=_dump, error=FactorStoreError, log=log,
        )

    async def factors(self, user: str) -> list[Factor]:
        return _sorted((await self._file.read()).get(validate_name(user), {}))

    async def put(self, user: str, factor: Factor) -> None:
        validate_name(user)
        validate_factor_id(factor.id)

        def change(users: dict[str, _UserFactors]) -> bool:
            users[user] = {**users.get(user, {}), factor.id: factor}
            return True

        await self._file.modify(change)

    async def change(
        self, user: str, factor_id: str, change: FactorChange, *, attempts: int = CHANGE_ATTEMPTS
    ) -> Factor | None:
        validate_name(user)
        result: list[Factor] = []

        def apply(users: dict[str, _UserFactors]) -> bool:
            stored = users.get(user, {}).get(factor_id)
            if stored is None:
                return False
            new = replace(change(stored), id=factor_id)  # FactorRejected: nothing written
            users[user] = {**users[user], factor_id: new}
            result.append(new)
            return True

        await self._file.modify(apply)
        return result[0] if result else None

    async def remove(self, user: str, factor_id: str) -> bool:
        validate_name(user)

        def change(users: dict[str, _UserFactors]) -> bool:
            if factor_id not in users.get(user, {}):
                return False
            rest = {k: v for k, v in users[user].items() if k != factor_id}
            if rest:
                users[user] = rest
            else:
                del users[user]
            return True

        return await self._file.modify(change)

    async def remove_all(self, user: str) -> int:
        validate_name(user)
        removed: list[int] = []

        def change(users: dict[str, _UserFactors]) -> bool:
            gone = users.pop(user, None)
            removed.append(len(gone or {}))
            return gone is not None

        await self._file.modify(change)
        return removed[0]
