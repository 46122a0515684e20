"""The session record and the protocol every session store satisfies."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Protocol


@dataclass(frozen=True)
class Session:
    """One server-side session. Times are Unix seconds (float); durations are seconds.

    ``sid`` identifies the session in logs, JWTs and the admin API; it is random and is not
    the token. ``version`` grows with every change so caches can tell records apart.
    """

    sid: str
    sub: str
    created_at: float
    last_seen: float
    idle_timeout: int
    expires_at: float
    scopes: tuple[str, ...] = ()
    roles: tuple[str, ...] = ()
    data: Mapping[str, Any] = field(default_factory=dict)
    version: int = 1

    @property
    def idle_deadline(self) -> float:
        return self.last_seen + self.idle_timeout

    @property
    def deadline(self) -> float:
        """The earlier of the idle deadline and the absolute expiry."""
        return min(self.idle_deadline, self.expires_at)

    def is_alive(self, now: float) -> bool:
        return now < self.deadline

    def touched(self, now: float) -> Session:
        return replace(self, last_seen=now, version=self.version + 1)

    def to_json(self) -> str:
        record = asdict(self)
        record["scopes"] = list(self.scopes)
        record["roles"] = list(self.roles)
        record["data"] = dict(self.data)
        return json.dumps(record, separators=(",", ":"), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> Session:
        """:raises ValueError: the record is not a session (corrupt or foreign data)."""
        try:
            record = json.loads(text)
            return cls(
                sid=str(record["sid"]),
                sub=str(record["sub"]),
                created_at=float(record["created_at"]),
                last_seen=float(record["last_seen"]),
                idle_timeout=int(record["idle_timeout"]),
                expires_at=float(record["expires_at"]),
                scopes=tuple(str(s) for s in record.get("scopes", ())),
                roles=tuple(str(r) for r in record.get("roles", ())),
                data=dict(record.get("data") or {}),
                version=int(record.get("version", 1)),
            )
        except (KeyError, TypeError, AttributeError, json.JSONDecodeError) as exc:
            raise ValueError(f"not a session record: {exc.__class__.__name__}") from None


class VersionConflict(Exception):
    """Every attempt of :meth:`SessionStore.update` lost to another write of the record."""


SessionChange = Callable[[Session], Session]
"""What :meth:`SessionStore.update` applies to the stored record; it may raise to refuse."""

UPDATE_ATTEMPTS = 3


class SessionStore(Protocol):
    """Storage of sessions keyed by a token hash (:func:`extauthz.tokens.token_hash`).

    Stores keep records; :class:`~extauthz.store.manager.SessionManager` decides
    liveness. Every method raises :class:`~extauthz.errors.StoreUnavailable` when the store
    cannot answer; none of them ever returns a guess in that case.
    """

    @property
    def backend(self) -> str:
        """``"redis"`` or ``"memory"`` (metrics, logs, the decision metadata)."""

    async def create(self, token_hash: str, session: Session) -> None:
        """Store a new session; it expires from the store at ``session.deadline``."""

    async def get(self, token_hash: str) -> Session | None:
        """The session stored under ``token_hash``, or ``None``."""

    async def touch(self, token_hash: str, session: Session) -> bool:
        """Replace an existing record (sliding the idle deadline) whose stored ``version`` is
        ``session.version - 1``. Never re-creates a record that was revoked meanwhile, never
        overwrites one changed meanwhile (:meth:`update`); returns ``False`` then."""

    async def get_by_sid(self, sid: str) -> Session | None:
        """The session with id ``sid``, or ``None``."""

    async def update(
        self, sid: str, change: SessionChange, *, attempts: int = UPDATE_ATTEMPTS
    ) -> Session | None:
        """Replace the session ``sid`` by ``change(stored)`` (``version`` one higher, expiry
        unchanged) unless the record was written in between (compare-and-set on ``version``);
        read, change and write again up to ``attempts`` times. The change is published like a
        revocation (push invalidation of every caching node), so the next lookup anywhere
        reads the new record. Returns the new record, ``None`` when there is no such session.
        Exceptions raised by ``change`` propagate (nothing written).

        :raises VersionConflict: every attempt lost to another write.
        """

    async def revoke(self, token_hash: str) -> Session | None:
        """Delete the session; return what was deleted, ``None`` if nothing was there.
        A deleted session's ``token_hash`` is remembered (:meth:`was_revoked`) until the
        session's absolute expiry, as long as its cookie may live."""

    async def was_revoked(self, token_hash: str) -> bool:
        """Whether ``token_hash`` named a session that was revoked and whose absolute expiry
        has not passed yet (a stale cookie, not a guess)."""

    async def revoke_sid(self, sid: str) -> Session | None:
        """Delete the session with id ``sid``; return what was deleted."""

    async def revoke_subject(self, sub: str) -> int:
        """Delete every session of ``sub``; return how many were deleted."""

    async def list_subject(self, sub: str) -> list[Session]:
        """Every stored session of ``sub``, oldest first."""

    async def ping(self) -> None:
        """Return when the store answers; raise ``StoreUnavailable`` otherwise."""

    async def start(self) -> None:
        """Begin the store's background work, if it has any (idempotent)."""

    async def stop(self) -> None:
        """End it (idempotent). Connections belong to whoever built the clients."""
