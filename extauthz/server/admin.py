"""The project's own gRPC API (``protos/extauthz/v1/admin.proto``): ``SessionAdmin`` and
``Status``.

Every ``SessionAdmin`` call must carry the admin token as ``authorization: Bearer <token>``
metadata, whatever peer it comes from: loopback is no boundary, since in a sidecar deployment
the application shares it. ``Status`` (read-only, no secrets) stays open, like Health. Why, and
how subjects are validated and logged: docs/authentication.md, 'The admin API'.
"""

from __future__ import annotations

import hmac
import logging
import stat
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any, Protocol, TypeVar

import grpc
from google.protobuf import json_format
from google.protobuf.struct_pb2 import Struct
from google.protobuf.timestamp_pb2 import Timestamp

from extauthz import __version__
from extauthz._proto.extauthz.v1 import admin_pb2, admin_pb2_grpc
from extauthz.clock import MAX_CLOCK_OFFSET_SECONDS
from extauthz.errors import SettingsError, StoreUnavailable
from extauthz.keys.keyring import KeyRing
from extauthz.server.node_state import NodeState
from extauthz.store.manager import SessionManager, printable
from extauthz.store.model import Session

log = logging.getLogger("extauthz.admin")

T = TypeVar("T")


class CallContext(Protocol):
    """What the admin servicers use of ``grpc.aio.ServicerContext`` (a test double needs no
    more)."""

    async def abort(self, code: grpc.StatusCode, details: str = "") -> None:
        """Ends the call with ``code``; never returns (raises)."""

    def invocation_metadata(self) -> Iterable[tuple[str, str | bytes]] | None:
        """The call's metadata as ``(key, value)`` pairs."""


def _timestamp(seconds: float) -> Timestamp:
    stamp = Timestamp()
    stamp.FromNanoseconds(int(seconds * 1_000_000_000))
    return stamp


def session_message(session: Session) -> admin_pb2.Session:
    data = Struct()
    data.update(dict(session.data))
    return admin_pb2.Session(
        sid=session.sid,
        sub=session.sub,
        created_at=_timestamp(session.created_at),
        last_seen=_timestamp(session.last_seen),
        expires_at=_timestamp(session.expires_at),
        idle_timeout_seconds=session.idle_timeout,
        scopes=list(session.scopes),
        roles=list(session.roles),
        data=data,
    )


# an admin token: visible ASCII (gRPC metadata carries nothing else), no spaces
_TOKEN_CHARS = frozenset(chr(c) for c in range(0x21, 0x7F))
MIN_TOKEN_LENGTH = 16


def load_admin_token(path: str) -> str:
    """The admin token held by the file at ``path`` (surrounding whitespace stripped).

    A file that other users may read is accepted with a warning (a Kubernetes secret volume
    mounts 0644 unless told otherwise).

    :raises SettingsError: the file cannot be read, or the token is shorter than
        :data:`MIN_TOKEN_LENGTH` or has characters other than visible ASCII.
    """
    try:
        raw = Path(path).read_bytes()
        mode = Path(path).stat().st_mode
    except OSError as exc:
        raise SettingsError(f"admin.token_file: {path}: {exc.strerror}") from None
    token = raw.decode("ascii", "replace").strip()
    if len(token) < MIN_TOKEN_LENGTH or not set(token) <= _TOKEN_CHARS:
        raise SettingsError(
            f"admin.token_file: {path}: the token must be at least {MIN_TOKEN_LENGTH} visible "
            "ASCII characters without spaces (e.g. `openssl rand -hex 32`)"
        )
    if mode & stat.S_IROTH:
        log.warning(
            "admin.token_file %s is readable by every user of this host; chmod 600 it", path
        )
    return token


class AdminGuard:
    """Lets a ``SessionAdmin`` call run only when it carries the admin token.

    ``token`` is ``None`` when the admin API is disabled (``admin.enabled = false``): every
    call is refused with ``PERMISSION_DENIED``. Otherwise a call needs exactly one
    ``authorization`` metadata entry ``Bearer <token>`` (scheme case-insensitive, RFC 6750
    §2.1), compared in constant time; without it, or with another token, the call is refused
    with ``UNAUTHENTICATED``. The peer's address plays no part.
    """

    def __init__(self, token: str | None) -> None:
        self._expected = None if token is None else token.encode()

    def _refusal(
        self, metadata: Iterable[tuple[str, str | bytes]] | None
    ) -> tuple[grpc.StatusCode, str] | None:
        if self._expected is None:
            return grpc.StatusCode.PERMISSION_DENIED, "admin API disabled (admin.enabled = false)"
        values = [v for k, v in metadata or () if k.lower() == "authorization"]
        if len(values) == 1 and isinstance(values[0], str):
            scheme, _, credential = values[0].strip().partition(" ")
            presented = credential.strip().encode("utf-8", "replace")
            if scheme.lower() == "bearer" and hmac.compare_digest(presented, self._expected):
                return None
        return grpc.StatusCode.UNAUTHENTICATED, "admin token required (authorization: Bearer)"

    async def check(self, context: CallContext) -> None:
        """Returns when the call may run; otherwise aborts it (raises)."""
        refusal = self._refusal(context.invocation_metadata())
        if refusal is not None:
            await context.abort(*refusal)
            raise AssertionError("unreachable")  # abort() always raises


async def _call(
    context: CallContext,
    guard: AdminGuard,
    fn: Callable[[], Awaitable[T]],
    *,
    unavailable: tuple[type[Exception], ...] = (StoreUnavailable,),
    what: str = "session store",
) -> T:
    """``fn()`` behind ``guard``: ``unavailable`` errors become ``UNAVAILABLE`` ("``what``
    unavailable"), ``ValueError`` ``INVALID_ARGUMENT``."""
    await guard.check(context)
    try:
        return await fn()
    except unavailable as exc:
        log.warning("admin call failed: %s", exc)
        await context.abort(grpc.StatusCode.UNAVAILABLE, f"{what} unavailable")
    except ValueError as exc:
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
    raise AssertionError("unreachable")  # abort() always raises


# integers a double represents exactly (IEEE 754 binary64: 53 bits of significand)
_EXACT_INTEGERS = 2**53


def whole_numbers(value: Any) -> Any:
    """``value`` (decoded JSON) with every whole-number float that a double holds exactly
    turned into an ``int``. ``google.protobuf.Struct`` carries every number as a double, so
    session ``data`` sent as ``{"n": 1}`` would otherwise reach the JWT as ``1.0``."""
    if isinstance(value, float) and value.is_integer() and abs(value) <= _EXACT_INTEGERS:
        return int(value)
    if isinstance(value, dict):
        return {k: whole_numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [whole_numbers(v) for v in value]
    return value


class SessionAdminServicer(admin_pb2_grpc.SessionAdminServicer):
    def __init__(self, sessions: SessionManager, guard: AdminGuard) -> None:
        self._sessions = sessions
        self._guard = guard

    async def CreateSession(
        self, request: admin_pb2.CreateSessionRequest, context: CallContext
    ) -> admin_pb2.CreateSessionResponse:
        async def run() -> admin_pb2.CreateSessionResponse:
            data = (
                whole_numbers(json_format.MessageToDict(request.data))
                if request.HasField("data")
                else {}
            )
            token, session = await self._sessions.create(
                request.sub, scopes=request.scopes, roles=request.roles, data=data
            )
            log.info("session created sid=%s sub=%s", session.sid, session.sub)
            return admin_pb2.CreateSessionResponse(
                access_token=token, session=session_message(session)
            )

        return await _call(context, self._guard, run)

    async def GetSession(
        self, request: admin_pb2.GetSessionRequest, context: CallContext
    ) -> admin_pb2.Session:
        async def run() -> Session | None:
            return await self._sessions.store.get_by_sid(request.sid)

        session = await _call(context, self._guard, run)
        if session is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, "no such session")
        assert session is not None
        return session_message(session)

    async def RevokeSession(
        self, request: admin_pb2.RevokeSessionRequest, context: CallContext
    ) -> admin_pb2.RevokeSessionResponse:
        async def run() -> admin_pb2.RevokeSessionResponse:
            revoked = await self._sessions.store.revoke_sid(request.sid)
            log.info(
                "session revoked sid=%s found=%s", printable(request.sid), revoked is not None
            )
            return admin_pb2.RevokeSessionResponse(revoked=revoked is not None)

        return await _call(context, self._guard, run)

    async def RevokeSubjectSessions(
        self, request: admin_pb2.RevokeSubjectSessionsRequest, context: CallContext
    ) -> admin_pb2.RevokeSubjectSessionsResponse:
        async def run() -> admin_pb2.RevokeSubjectSessionsResponse:
            count = await self._sessions.store.revoke_subject(request.sub)
            log.info("sessions revoked sub=%s count=%d", printable(request.sub), count)
            return admin_pb2.RevokeSubjectSessionsResponse(revoked=count)

        return await _call(context, self._guard, run)

    async def ListSessions(
        self, request: admin_pb2.ListSessionsRequest, context: CallContext
    ) -> admin_pb2.ListSessionsResponse:
        async def run() -> admin_pb2.ListSessionsResponse:
            sessions = await self._sessions.store.list_subject(request.sub)
            return admin_pb2.ListSessionsResponse(sessions=[session_message(s) for s in sessions])

        return await _call(context, self._guard, run)


class StatusServicer(admin_pb2_grpc.StatusServicer):
    """``GetStatus``; ``state`` (a :class:`~extauthz.server.node_state.NodeProbe`) gives the push
    channel and the clock offset."""

    def __init__(
        self,
        sessions: SessionManager,
        keyring: KeyRing,
        *,
        strategy: str,
        node_id: str,
        state: Callable[[], NodeState] = NodeState,
    ) -> None:
        self._sessions = sessions
        self._keyring = keyring
        self._strategy = strategy
        self._node_id = node_id
        self._state = state

    async def GetStatus(
        self, request: admin_pb2.GetStatusRequest, context: CallContext
    ) -> admin_pb2.GetStatusResponse:
        try:
            await self._sessions.store.ping()
            reachable = True
        except StoreUnavailable:
            reachable = False
        state = self._state()
        return admin_pb2.GetStatusResponse(
            version=__version__,
            store_strategy=self._strategy,
            store_backend=self._sessions.store.backend,
            store_reachable=reachable,
            signing_key_ids=self._keyring.kids,
            active_signing_key_id=self._keyring.signing_key.kid,
            node_id=self._node_id,
            cache_channel=state.cache_channel,
            cache_channel_down_seconds=state.channel_down_seconds,
            cache_bypasses=state.cache_bypasses,
            clock_offset_seconds=state.clock_offset_seconds,
            clock_offset_max_seconds=MAX_CLOCK_OFFSET_SECONDS,
        )


def admin_guard(enabled: bool, token_file: str) -> AdminGuard:
    """The guard of the admin services (:class:`AdminGuard`): the token from ``token_file``
    (``admin.token_file``), or a guard that refuses every call when ``enabled``
    (``admin.enabled``) is false.

    :raises SettingsError: the admin API is enabled without a token file, or the file is
        unreadable or holds no usable token (:func:`load_admin_token`).
    """
    if not enabled:
        log.info("admin API disabled (admin.enabled = false): SessionAdmin refuses every call")
        return AdminGuard(None)
    if not token_file:
        raise SettingsError(
            "admin.token_file: the admin API needs a token file (a random token, mode 0600, "
            "e.g. `openssl rand -hex 32`), or set admin.enabled = false; "
            "see docs/authentication.md"
        )
    return AdminGuard(load_admin_token(token_file))
