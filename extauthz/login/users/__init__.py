"""Local users: records, stores, argon2id password verification and the ``users`` CLI.

The authentication service (login) asks :class:`PasswordVerifier` whether a name and password
match; the verifier reads a :class:`UserRecord` from a :class:`UserStore` and returns the public
:class:`User` (no hash) or ``None``. Stores: :class:`FileUserStore` (one JSON file) and
``extauthz.store.redis.users.RedisUserStore`` (one Redis hash per user).
"""

from __future__ import annotations

from extauthz.login.users.file_store import FileUserStore
from extauthz.login.users.passwords import (
    PRODUCTION_PARAMETERS,
    Argon2Parameters,
    PasswordVerifier,
)
from extauthz.login.users.records import (
    User,
    UserRecord,
    UserStore,
    UserStoreError,
    validate_name,
    validate_password,
)

__all__ = [
    "PRODUCTION_PARAMETERS",
    "Argon2Parameters",
    "FileUserStore",
    "PasswordVerifier",
    "User",
    "UserRecord",
    "UserStore",
    "UserStoreError",
    "validate_name",
    "validate_password",
]
