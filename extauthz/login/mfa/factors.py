"""Factor records, the store protocol every factor store satisfies, and the in-memory store.

A user has zero or more :class:`Factor` records, each of one *kind* (``"totp"``,
``"recovery"``, ``"webauthn"``) whose rules live in a
:class:`~extauthz.login.mfa.kinds.FactorKind`. A record's ``data`` is the kind's own JSON
object (a sealed TOTP secret and the last time-step used; recovery-code hashes; a passkey's
credential id, public key and sign count): stores keep it opaque.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from extauthz.errors import ExtauthzError, StoreUnavailable
from extauthz.login.users.records import validate_name

FILE_VERSION = 1
_FACTOR_ID = re.compile(r"[A-Za-z0-9_-]{8,64}")
_KIND = re.compile(r"[a-z][a-z0-9_]{0,31}")


class FactorStoreError(ExtauthzError):
    """A factor store holds data that cannot be read; the message names the source."""


# what a FactorStore raises when it cannot answer
FACTOR_STORE_ERRORS: tuple[type[Exception], ...] = (StoreUnavailable, FactorStoreError, OSError)


class FactorRejected(Exception):
    """A factor change that must not be written (a wrong or replayed code); no detail that
    would help a guesser, never the code."""


@dataclass(frozen=True)
class Factor:
    """One second factor of a user. Times are Unix seconds.

    ``id``: random, names the factor in the admin API and the CLI; ``kind``: which
    :class:`~extauthz.login.mfa.kinds.FactorKind` reads ``data``; ``confirmed``: ``False``
    while an enrolment waits for its first code (an unconfirmed factor never signs in);
    ``last_used_at``: the latest accepted use, ``None`` before.
    """

    id: str
    kind: str
    created_at: float
    confirmed: bool = False
    data: Mapping[str, Any] = field(default_factory=dict, repr=False)
    last_used_at: float | None = None

    def to_fields(self) -> dict[str, Any]:
        """A JSON-ready object (the store's entry; ``id`` is its key)."""
        out: dict[str, Any] = {
            "kind": self.kind,
            "created_at": self.created_at,
            "confirmed": self.confirmed,
            "data": dict(self.data),
        }
        if self.last_used_at is not None:
            out["last_used_at"] = self.last_used_at
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_fields(), separators=(",", ":"), sort_keys=True)

    @classmethod
    def from_fields(cls, factor_id: str, fields: Mapping[str, Any]) -> Factor:
        """:raises ValueError: not a factor entry (saying what is wrong)."""
        if not isinstance(fields, Mapping):
            raise ValueError("a factor entry must be an object")
        unknown = set(fields) - {"kind", "created_at", "confirmed", "data", "last_used_at"}
        if unknown:
            raise ValueError(f"unknown keys {sorted(unknown)}")
        kind, data, confirmed = fields.get("kind"), fields.get("data", {}), fields.get("confirmed")
        created, used = fields.get("created_at"), fields.get("last_used_at")
        if not isinstance(kind, str) or not _KIND.fullmatch(kind):
            raise ValueError("kind must be a lower-case name")
        if not isinstance(data, dict) or not isinstance(confirmed, bool):
            raise ValueError("data must be an object and confirmed a boolean")
        if not isinstance(created, (int, float)) or not (
            used is None or isinstance(used, (int, float))
        ):
            raise ValueError("created_at and last_used_at must be numbers")
        return cls(validate_factor_id(factor_id), kind, float(created), confirmed, data,
                   None if used is None else float(used))

    @classmethod
    def from_json(cls, factor_id: str, text: str | bytes) -> Factor:
        """:raises ValueError: not a factor record."""
        try:
            return cls.from_fields(factor_id, json.loads(text))
        except json.JSONDecodeError as exc:
            raise ValueError(f"not JSON: {exc}") from None


def validate_factor_id(factor_id: object) -> str:
    """``factor_id`` if it is 8-64 characters of ``[A-Za-z0-9_-]``; ``ValueError`` otherwise."""
    if not isinstance(factor_id, str) or not _FACTOR_ID.fullmatch(factor_id):
        raise ValueError("a factor id is 8-64 characters of A-Z a-z 0-9 _ -")
    return factor_id


FactorChange = Callable[[Factor], Factor]
"""What :meth:`FactorStore.change` applies to the stored record; it raises
:class:`FactorRejected` to write nothing."""

CHANGE_ATTEMPTS = 3


class FactorStore(Protocol):
    """Where users' factors live, beside the user store (same backend). User names are
    validated (``ValueError``). Failures propagate as one of :data:`FACTOR_STORE_ERRORS`."""

    async def factors(self, user: str) -> list[Factor]:
        """Every factor of ``user``, oldest first."""

    async def put(self, user: str, factor: Factor) -> None:
        """Create or replace ``factor`` (by id)."""

    async def change(
        self, user: str, factor_id: str, change: FactorChange, *, attempts: int = CHANGE_ATTEMPTS
    ) -> Factor | None:
        """Replace the factor by ``change(stored)`` unless it was written in between
        (compare-and-set; read, change, write again up to ``attempts`` times): two uses of one
        code race, one wins, the other sees the winner's record. ``None``: no such factor.

        :raises FactorRejected: from ``change`` (nothing written).
        :raises StoreUnavailable: every attempt lost to another write.
        """

    async def remove(self, user: str, factor_id: str) -> bool:
        """Delete one factor; ``True`` if it existed."""

    async def remove_all(self, user: str) -> int:
        """Delete every factor of ``user``; how many."""


def _sorted(found: Mapping[str, Factor]) -> list[Factor]:
    return sorted(found.values(), key=lambda f: (f.created_at, f.id))


class MemoryFactorStore:
    """Factors in this process (tests, the in-memory deployment)."""

    def __init__(self) -> None:
        self._users: dict[str, dict[str, Factor]] = {}
        self._lock = asyncio.Lock()

    async def factors(self, user: str) -> list[Factor]:
        return _sorted(self._users.get(validate_name(user), {}))

    async def put(self, user: str, factor: Factor) -> None:
        validate_factor_id(factor.id)
        self._users.setdefault(validate_name(user), {})[factor.id] = factor

    async def change(
        self, user: str, factor_id: str, change: FactorChange, *, attempts: int = CHANGE_ATTEMPTS
    ) -> Factor | None:
        async with self._lock:
            stored = self._users.get(validate_name(user), {}).get(factor_id)
            if stored is None:
                return None
            new = replace(change(stored), id=stored.id)
            self._users[user][factor_id] = new
            return new

    async def remove(self, user: str, factor_id: str) -> bool:
        return self._users.get(validate_name(user), {}).pop(factor_id, None) is not None

    async def remove_all(self, user: str) -> int:
        return len(self._users.pop(validate_name(user), {}))
