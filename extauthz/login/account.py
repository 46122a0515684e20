"""The user's sign-ins: every live session of the caller's ``sub`` (this browser, other
browsers, applications holding an OAuth access token, API keys), and ending one of them by
``sid``. No HTTP framework here: the aiohttp adapter (:mod:`extauthz.login.http`) renders what
this returns or raises. Only a login session (kind ``"session"``) may see or end the others: an
application's access token or an API key presented here sees only itself and ends nothing.
The page and its rules: docs/authentication.md, 'Your sessions'.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from extauthz.check.context import RequestContext
from extauthz.errors import ExtauthzError, StoreUnavailable
from extauthz.login.service import LoginService, session_summary
from extauthz.store.model import Session

log = logging.getLogger("extauthz.auth")

SESSION_END_PATH = "/auth/session/end"


class NoSuchSession(ExtauthzError):
    """No live session with that ``sid`` belongs to the caller's ``sub`` (404): another
    user's session is not told apart from one that does not exist."""


class NotALogin(ExtauthzError):
    """The caller presented an application's access token or an API key, not a login
    session (403 ``credential_kind_refused``): those may not end the user's sessions."""


class GrantRevoker(Protocol):
    """Ends what an application holds for a user beyond one access token: its other access
    tokens, its refresh tokens (RFC 6749 §1.5), the remembered consent (the OAuth token
    issuer)."""

    async def revoke_grant(self, sub: str, client_id: str) -> int:
        """Revoke every token ``client_id`` holds for ``sub``; how many.

        :raises StoreUnavailable: not every revocation was stored."""
        ...


@dataclass(frozen=True)
class Overview:
    """The caller's ``current`` session and the other live sessions of its ``sub``, oldest
    first: ``logins`` (kind ``"session"``, other browsers), ``applications`` (``"oauth"``)
    and ``api_keys`` (``"api_key"``)."""

    current: Session
    logins: tuple[Session, ...] = ()
    applications: tuple[Session, ...] = ()
    api_keys: tuple[Session, ...] = ()


@dataclass(frozen=True)
class Ended:
    """The session ``sid`` (of ``kind``) was revoked. ``current``: it was the caller's own
    (a logout); then ``set_cookies`` clear every variant of the session cookie."""

    sid: str
    kind: str
    current: bool
    set_cookies: tuple[str, ...] = ()


def _login_summary(session: Session) -> dict[str, Any]:
    return {
        "sid": session.sid,
        "created_at": int(session.created_at),
        "last_seen": int(session.last_seen),
        "expires_at": int(session.expires_at),
    }


def _application_summary(session: Session) -> dict[str, Any]:
    return {
        "sid": session.sid,
        "client_id": session.client_id or "",
        "scopes": list(session.scopes),
        "created_at": int(session.created_at),
        "expires_at": int(session.expires_at),
    }


def _api_key_summary(session: Session) -> dict[str, Any]:
    name = session.data.get("name")
    return {
        "sid": session.sid,
        "name": name if isinstance(name, str) else "",
        "scopes": list(session.scopes),
        "created_at": int(session.created_at),
        "expires_at": int(session.expires_at),
        "last_used": int(session.last_seen),
    }


def overview_summary(overview: Overview) -> dict[str, Any]:
    """What the user may see of their sessions (JSON-ready): the current session's summary
    (:func:`~extauthz.login.service.session_summary`, as before) with its ``kind``, then
    ``sessions`` (other logins: ``sid``, ``created_at``, ``last_seen``, ``expires_at``),
    ``applications`` (``sid``, ``client_id``, ``scopes``, ``created_at``, ``expires_at``)
    and ``api_keys`` (``sid`` = the key id, ``name``, ``scopes``, ``created_at``,
    ``expires_at``, ``last_used``). Times are Unix seconds. Never a token, a token hash or a
    JWT."""
    return {
        **session_summary(overview.current),
        "kind": overview.current.kind,
        "sessions": [_login_summary(s) for s in overview.logins],
        "applications": [_application_summary(s) for s in overview.applications],
        "api_keys": [_api_key_summary(s) for s in overview.api_keys],
    }


class AccountService:
    """Lists and ends the caller's sessions through ``login`` (its resolver, throttle,
    same-site check and cookie). ``clock``: Unix seconds, to leave out records that are no
    longer alive but not yet dropped by the store. ``grants``: when given, ending an
    application's access token ends the application's whole grant for the user (its refresh
    tokens too); without it only that access token ends."""

    def __init__(
        self,
        login: LoginService,
        *,
        clock: Callable[[], float] = time.time,
        grants: GrantRevoker | None = None,
    ) -> None:
        self.login = login
        self.store = login.sessions.store
        self.grants = grants
        self._clock = clock

    async def overview(self, ctx: RequestContext) -> Overview:
        """The caller's session and, for a login session, every other live one of its
        ``sub``.

        :raises Unauthenticated: no credential or no valid session.
        :raises TooManyRequests: the address is over its budget of failed lookups.
        :raises StoreUnavailable: the store did not answer.
        """
        current = await self.login.session(ctx)
        if current.kind != "session":
            return Overview(current)
        now = self._clock()
        others = [
            s
            for s in await self.store.list_subject(current.sub)
            if s.sid != current.sid and s.is_alive(now)
        ]

        def of(kind: str) -> tuple[Session, ...]:
            return tuple(s for s in others if s.kind == kind)

        return Overview(current, of("session"), of("oauth"), of("api_key"))

    async def end(self, ctx: RequestContext, read_sid: Callable[[], Awaitable[str]]) -> Ended:
        """End the session ``read_sid()`` names (read only after the same-site check) when it
        belongs to the caller's ``sub``; ending the caller's own session is a logout.

        :raises Forbidden: a cross-site request (``cross_site_request``).
        :raises Unauthenticated: no credential or no valid session.
        :raises TooManyRequests: the address is over its budget of failed lookups.
        :raises NotALogin: the caller is an application or an API key.
        :raises NoSuchSession: no live session ``sid`` of the caller's ``sub``.
        :raises StoreUnavailable: the store did not answer or did not store the revocation
            (the session may still work).
        """
        self.login.refuse_cross_site(ctx, "session end")
        sid = await read_sid()
        current = await self.login.session(ctx)
        if current.kind != "session":
            log.warning("session end refused: caller is kind=%s sid=%s", current.kind, current.sid)
            raise NotALogin("only a login session may end sessions")
        target = await self.store.get_by_sid(sid) if sid else None
        if target is None or target.sub != current.sub or not target.is_alive(self._clock()):
            # another user's sid is not told apart from an unknown one
            log.warning("session end refused: no such session of sub=%s", current.sub)
            raise NoSuchSession("no such session")
        try:
            revoked = await self.store.revoke_sid(target.sid)
            if revoked is not None and target.kind == "oauth" and target.client_id and self.grants:
                await self.grants.revoke_grant(target.sub, target.client_id)
        except StoreUnavailable:
            log.error("session end failed: the revocation was not stored", exc_info=True)
            raise
        if revoked is None:  # ended meanwhile (logout elsewhere, expiry)
            raise NoSuchSession("no such session")
        is_current = target.sid == current.sid
        log.info(
            "session end sub=%s sid=%s kind=%s by_sid=%s", target.sub, target.sid, target.kind,
            current.sid,
        )  # fmt: skip
        cookies = self.login.cookie.clearing() if is_current else ()
        return Ended(target.sid, target.kind, is_current, cookies)
