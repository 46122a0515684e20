"""argon2id password verification (RFC 9106), through argon2-cffi's ``PasswordHasher``.

Unknown users, disabled users and wrong passwords cost exactly one argon2 verification each and
all answer ``None``, so neither the answer nor the time tells which accounts exist.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import threading
from dataclasses import dataclass

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError

from extauthz.login.users.records import (
    _NAME,
    PASSWORD_MAX,
    USER_STORE_ERRORS,
    User,
    UserRecord,
    UserStore,
    validate_password,
)

log = logging.getLogger("extauthz.login.users")


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
            raise ValueError(
                f"password hasher must use argon2id (RFC 9106), not {self._hasher.type}"
            )
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
        successful login (``check_needs_rehash``); when the store cannot take it (one of
        :data:`~extauthz.login.users.records.USER_STORE_ERRORS`) that is logged, not raised.
        The lookup's store failures propagate.
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
                    log.info(
                        "rehashed the password of user %s with current argon2 parameters", name
                    )
            except USER_STORE_ERRORS:
                log.warning("could not store the rehashed password of user %s", name, exc_info=True)
        return record.user

    async def user(self, name: str) -> User | None:
        """The enabled user ``name`` (no password check: for a login whose password was
        verified a moment ago, read again for its second step), else ``None``. Store
        failures propagate."""
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            return None
        record = await self._store.get(name)
        return None if record is None or record.disabled else record.user

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


