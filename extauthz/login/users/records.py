"""User records and their validation: names, passwords, argon2 hash strings, roles and scopes.

Rules: a user name is 1-64 characters of ``[A-Za-z0-9._@-]``, case preserved, compared exactly;
a password is 1-1024 characters, hashed as its UTF-8 bytes without normalisation. Roles and
scopes are RFC 6749 §3.3 scope tokens. Passwords are never logged.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

from argon2 import extract_parameters
from argon2.exceptions import InvalidHashError

from extauthz.errors import ExtauthzError, StoreUnavailable
from extauthz.scopes import validate_scope_tokens

NAME_MAX = 64
PASSWORD_MAX = 1024
_NAME = re.compile(r"[A-Za-z0-9._@-]{1,64}")
FILE_VERSION = 1


class UserStoreError(ExtauthzError):
    """A user store holds data that cannot be read (a bad file, a malformed record).

    The message names the source (file path or key) and the entry.
    """


# what a UserStore raises when it cannot answer (see UserStore)
USER_STORE_ERRORS: tuple[type[Exception], ...] = (StoreUnavailable, UserStoreError, OSError)


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

    Store failures propagate, as one of :data:`USER_STORE_ERRORS`: ``OSError`` or
    :class:`UserStoreError` from a file, :class:`~extauthz.errors.StoreUnavailable` from a
    store that does not answer; callers map them to "unavailable".
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


