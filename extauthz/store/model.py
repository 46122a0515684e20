"""The session record and the protocol every session store satisfies."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Protocol

import msgpack


@dataclass(frozen=True)
class Session:
    """One server-side session. Times are Unix seconds (float); durations are seconds.

    ``sid`` identifies the session in logs, JWTs and the admin API; it is random and is not
    the token. ``version`` grows with every change so caches can tell records apart.
    ``rotated_at``: when the session's current token replaced an earlier one (token rotation);
    ``None`` while it still has the token its login issued.
    ``kind``: how the token was obtained (:data:`SESSION_KINDS`): ``"session"`` from a login
    (cookie or Bearer), ``"oauth"`` an access token issued to an application (RFC 6749,
    Bearer only), ``"api_key"`` a key for a machine client (Bearer or the API-key header).
    ``client_id``: the OAuth client the token was issued to (RFC 9068 §2.2), else ``None``.
    ``amr``: how the user authenticated (RFC 8176 values: ``pwd``, ``otp``, ``mfa``, later
    ``hwk``/``swk``), ``()`` when not recorded (sessions from before second factors, API keys).
    ``auth_time``: when the latest of those authentications happened (Unix seconds; a step-up
    moves it), ``None`` when not recorded: the session's creation counts then.
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
    rotated_at: float | None = None
    kind: str = "session"
    client_id: str | None = None
    amr: tuple[str, ...] = ()
    auth_time: float | None = None

    @property
    def authenticated_at(self) -> float:
        """When the user last authenticated (Unix seconds): ``auth_time``, else the
        session's creation (OpenID Connect Core §2 ``auth_time``)."""
        return self.created_at if self.auth_time is None else self.auth_time

    @property
    def token_issued_at(self) -> float:
        """When the current token was issued (Unix seconds): the last rotation, else the
        session's creation."""
        return self.created_at if self.rotated_at is None else self.rotated_at

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
        if self.rotated_at is None:
            del record["rotated_at"]  # records of never-rotated sessions keep their old shape
        if self.kind == "session":
            del record["kind"]  # login sessions keep the shape they had before other kinds
        if self.client_id is None:
            del record["client_id"]
        record["amr"] = list(self.amr)
        if not self.amr:
            del record["amr"]  # records without second factors keep their old shape
        if self.auth_time is None:
            del record["auth_time"]
        return json.dumps(record, separators=(",", ":"), sort_keys=True)

    def to_record(self) -> bytes:
        """The compact record a store keeps: a MessagePack map with one-letter field names
        (:data:`RECORD_FIELDS`), fields at their defaults left out, ``data`` as compact JSON
        text (any JSON number fits). About a third of :meth:`to_json`'s size."""
        record: dict[str, Any] = {
            "i": self.sid, "u": self.sub, "c": self.created_at, "t": self.idle_timeout,
            "v": self.version,
        }  # fmt: skip
        # last_seen and expires_at as offsets from created_at ("L", "E") where they give the
        # same float back: 1-3 bytes for whole seconds instead of 9
        for name, code, value in (("l", "L", self.last_seen), ("e", "E", self.expires_at)):
            offset = _offset(self.created_at, value)
            record.update({name: value} if offset is None else {code: offset})
        optional: dict[str, Any] = {
            "s": list(self.scopes), "r": list(self.roles), "m": list(self.amr),
            "d": json.dumps(dict(self.data), separators=(",", ":")) if self.data else None,
            "o": self.rotated_at, "k": None if self.kind == "session" else self.kind,
            "a": self.client_id, "h": self.auth_time,
        }  # fmt: skip
        record.update((k, v) for k, v in optional.items() if v not in (None, []))
        return bytes(msgpack.packb(record, use_bin_type=True))

    @classmethod
    def from_record(cls, raw: str | bytes) -> Session:
        """A record as a store keeps it: :meth:`to_record`'s, or the JSON of :meth:`to_json`
        (records written before the compact encoding; JSON starts with ``{``, a MessagePack
        map never does). :raises ValueError: not a session record."""
        data = raw.encode("utf-8", "surrogateescape") if isinstance(raw, str) else raw
        if data[:1] == b"{":
            return cls.from_json(data)
        try:
            record = msgpack.unpackb(data, raw=False, strict_map_key=True)
            if not isinstance(record, dict):
                raise TypeError("not a map")
            for name, code in (("l", "L"), ("e", "E")):
                if code in record:
                    record[name] = float(record["c"]) + float(record[code])
            return cls.from_json(json.dumps({
                name: (json.loads(record[code]) if code == "d" else record[code])
                for code, name in RECORD_FIELDS.items() if code in record
            }))  # fmt: skip
        except (ValueError, TypeError, KeyError, OverflowError, RecursionError,
                msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as exc:  # fmt: skip
            raise ValueError(f"not a session record: {exc.__class__.__name__}") from None

    @classmethod
    def from_json(cls, text: str | bytes) -> Session:
        """:raises ValueError: the record is not a session (corrupt or foreign data)."""
        try:
            record = json.loads(text)
            return cls(
                sid=str(record["sid"]),
                sub=str(record["sub"]),
                created_at=_finite(record["created_at"]),
                last_seen=_finite(record["last_seen"]),
                idle_timeout=int(record["idle_timeout"]),
                expires_at=_finite(record["expires_at"]),
                scopes=tuple(str(s) for s in _list(record.get("scopes", ()))),
                roles=tuple(str(r) for r in _list(record.get("roles", ()))),
                data=dict(record.get("data") or {}),
                version=int(record.get("version", 1)),
                rotated_at=(
                    None if record.get("rotated_at") is None else _finite(record["rotated_at"])
                ),
                kind=_kind(record.get("kind", "session")),
                client_id=(None if record.get("client_id") is None else str(record["client_id"])),
                amr=_amr(record.get("amr", ())),
                auth_time=(
                    None if record.get("auth_time") is None else _finite(record["auth_time"])
                ),
            )
        except (KeyError, TypeError, AttributeError, OverflowError, RecursionError,
                json.JSONDecodeError) as exc:  # fmt: skip
            raise ValueError(f"not a session record: {exc.__class__.__name__}") from None


def _offset(base: float, value: float) -> int | float | None:
    """``value - base`` (an int when whole) when ``base`` plus it gives ``value`` back exactly,
    else ``None``."""
    offset = value - base
    if base + offset != value or not math.isfinite(offset):
        return None
    return int(offset) if offset.is_integer() and abs(offset) < 2**53 else offset


RECORD_FIELDS = {
    "i": "sid", "u": "sub", "c": "created_at", "l": "last_seen", "t": "idle_timeout",
    "e": "expires_at", "v": "version", "s": "scopes", "r": "roles", "d": "data",
    "o": "rotated_at", "k": "kind", "a": "client_id", "m": "amr", "h": "auth_time",
}  # fmt: skip
"""The one-letter field names of :meth:`Session.to_record` (the Lua scripts read ``v``); ``L``
and ``E`` stand for ``l`` and ``e`` as offsets from ``c``."""

SESSION_KINDS = ("session", "oauth", "api_key")
"""The kinds of credential a session record stands for (:attr:`Session.kind`)."""


def _finite(value: object) -> float:
    """A stored time (epoch seconds): NaN or infinity would keep a record alive forever."""
    number = float(value)  # type: ignore[arg-type]
    if not math.isfinite(number):
        raise TypeError("a time must be a finite number")
    return number


def _list(value: object) -> list[Any] | tuple[Any, ...]:
    """A stored list (scopes, roles): a string would read as one scope per character."""
    if not isinstance(value, (list, tuple)):
        raise TypeError("expected a list")
    return value


def _kind(value: object) -> str:
    if value not in SESSION_KINDS:
        raise TypeError(f"unknown session kind {value!r}")
    return str(value)


def _amr(value: object) -> tuple[str, ...]:
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise TypeError("amr must be a list of strings")
    return tuple(value)


class VersionConflict(Exception):
    """Every attempt of :meth:`SessionStore.update` lost to another write of the record."""


SessionChange = Callable[[Session], Session]
"""What :meth:`SessionStore.update` applies to the stored record; it may raise to refuse."""

UPDATE_ATTEMPTS = 3


@dataclass(frozen=True)
class Successor:
    """Where a rotated token leads during its grace (token rotation).

    ``token_hash``: the new token's hash; ``sealed``: the new token sealed for the holder of
    the old one (:func:`extauthz.tokens.seal_successor`; ``""`` when the rotation was made
    without the old token, e.g. by session id); ``until``: end of the grace, Unix seconds.
    """

    token_hash: str
    sealed: str
    until: float

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> Successor:
        """:raises ValueError: not a successor record."""
        try:
            record = json.loads(text)
            return cls(str(record["token_hash"]), str(record["sealed"]), float(record["until"]))
        except (KeyError, TypeError, AttributeError, OverflowError, RecursionError,
                json.JSONDecodeError) as exc:  # fmt: skip
            raise ValueError(f"not a successor record: {exc.__class__.__name__}") from None


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
        """Store a new session; it expires from the store at ``session.deadline``, while
        ``token_hash`` is remembered as issued (:meth:`was_issued`) until the absolute expiry."""

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

    async def token_hash_of(self, sid: str) -> str | None:
        """The hash of the session ``sid``'s current token, or ``None``."""

    async def revoke(self, token_hash: str) -> Session | None:
        """Delete the session; return what was deleted, ``None`` if nothing was there.
        A deleted session's ``token_hash`` is remembered (:meth:`was_revoked`) until the
        session's absolute expiry, as long as its cookie may live."""

    async def was_revoked(self, token_hash: str) -> bool:
        """Whether ``token_hash`` named a session that was revoked and whose absolute expiry
        has not passed yet (a stale cookie, not a guess)."""

    async def was_issued(self, token_hash: str) -> bool:
        """Whether ``token_hash`` was issued to a session (by :meth:`create` or as the new
        token of :meth:`rotate`) whose absolute expiry has not passed yet, whether or not the
        session still lives: a miss on such a token is a stale cookie of a session that
        ended (idle timeout), not a guess."""

    async def revoke_sid(self, sid: str) -> Session | None:
        """Delete the session with id ``sid``; return what was deleted."""

    async def revoke_subject(self, sub: str) -> int:
        """Delete every session of ``sub``; return how many were deleted."""

    async def list_subject(self, sub: str) -> list[Session]:
        """Every stored session of ``sub``, oldest first."""

    async def rotate(
        self, token_hash: str, version: int, session: Session, successor: Successor
    ) -> Successor | None:
        """Token rotation, atomically: when ``token_hash`` holds a live record of version
        ``version`` and was not rotated yet, store ``session`` (same ``sid``) under
        ``successor.token_hash``, point the ``sid`` at it, delete the old record, keep
        ``successor`` for ``token_hash`` until ``successor.until`` (:meth:`successor`),
        remember ``token_hash`` as revoked (:meth:`was_revoked`) and ``successor.token_hash``
        as issued (:meth:`was_issued`) until the session's absolute expiry, drop
        ``token_hash`` from every node's cache, and return ``successor``.
        When ``token_hash`` was rotated already (its grace not over): store nothing and
        return that earlier successor. Otherwise (no record, or another version): store
        nothing and return ``None``."""

    async def successor(self, token_hash: str) -> Successor | None:
        """The successor of a rotated ``token_hash`` while its grace lasts, else ``None``."""

    async def ping(self) -> None:
        """Return when the store answers; raise ``StoreUnavailable`` otherwise."""

    async def start(self) -> None:
        """Begin the store's background work, if it has any (idempotent)."""

    async def stop(self) -> None:
        """End it (idempotent). Connections belong to whoever built the clients."""
