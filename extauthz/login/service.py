"""The login rules: sign in, sign out, the caller's own session. No HTTP framework here: the
aiohttp adapter (:mod:`extauthz.login.http`) turns a request into a
:class:`~extauthz.check.context.RequestContext` (``peer_address`` is the client's address,
``scheme`` the one the client used) and renders what this service returns (:class:`SignedIn`,
:class:`LoginFailed`, :class:`SignedOut`, a session) or raises: a
:class:`~extauthz.errors.Denied`, or :class:`~extauthz.errors.StoreUnavailable` (a 503, never a
401). The rules (session fixation, revoke before clearing the cookie, login budgets, what is
logged): docs/authentication.md, 'Login and logout rules', 'Brute force' and 'Logs'.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from extauthz import tokens
from extauthz.check.context import RequestContext
from extauthz.check.denials import safe_return_to
from extauthz.check.resolver import SessionResolver, is_miss
from extauthz.errors import (
    Denied,
    Forbidden,
    Reason,
    StoreUnavailable,
    TooManyRequests,
    Unauthenticated,
)
from extauthz.login.csrf import SameSiteCheck
from extauthz.login.limits import LoginLimits
from extauthz.login.users import PasswordVerifier, User
from extauthz.login.users.records import USER_STORE_ERRORS
from extauthz.store.model import Session

log = logging.getLogger("extauthz.auth")

LOGIN_PATH = "/auth/login"
LOGOUT_PATH = "/auth/logout"
SESSION_PATH = "/auth/session"
INVALID_LOGIN = "Invalid user name or password."
LOGINS_THROTTLED = "Too many failed sign-in attempts; please wait and try again."
LOOKUPS_THROTTLED = "Too many failed token lookups from this address; please wait and try again."
# what the stores behind a login other than the session store raise when they cannot answer:
# the user store's errors, and StoreUnavailable (among them) from the rate-limit counters
_BACKEND_ERRORS = USER_STORE_ERRORS


@dataclass(frozen=True)
class LoginForm:
    """What a login sends: ``return_to`` is the client's wish, validated by the service."""

    username: str
    password: str
    return_to: str = ""


@dataclass(frozen=True)
class SignedIn:
    """A new session; ``set_cookies`` are the ``Set-Cookie`` values, in order (the other
    variants of the session cookie cleared, then the one carrying its token); ``return_to`` is
    a validated same-host path."""

    session: Session
    set_cookies: tuple[str, ...]
    return_to: str


@dataclass(frozen=True)
class SecondStepNeeded:
    """The password was right and a second step comes before any session: ``location`` is
    the page of that step (entering a code, or enrolling a factor policy requires);
    ``set_cookies`` carry the pending login's own cookie, never a session."""

    location: str
    set_cookies: tuple[str, ...]
    purpose: str


class SecondStepGate(Protocol):
    """What the login asks after a right password (:mod:`extauthz.login.mfa`)."""

    async def after_password(self, user: User, return_to: str) -> SecondStepNeeded | None:
        """``None``: sign in now with the password alone; else the step to take first.

        :raises StoreUnavailable: (or a user/factor store error) the answer is unknown.
        """


@dataclass(frozen=True)
class LoginFailed:
    """A wrong name or password (:data:`INVALID_LOGIN`); the form may be shown again."""

    username: str
    return_to: str


@dataclass(frozen=True)
class SignedOut:
    """``revoked`` sessions ended; ``set_cookies`` clear every variant of the session
    cookie."""

    revoked: int
    set_cookies: tuple[str, ...]


def session_summary(session: Session) -> dict[str, Any]:
    """What a user may see of their own session (JSON-ready): never the token."""
    return {
        "sub": session.sub,
        "sid": session.sid,
        "roles": list(session.roles),
        "scopes": list(session.scopes),
        "created_at": int(session.created_at),
        "expires_at": int(session.expires_at),
        "idle_timeout_seconds": session.idle_timeout,
        "amr": list(session.amr),
        "auth_time": int(session.authenticated_at),
    }


class LoginService:
    """Every dependency is given; nothing here reads settings. ``resolver`` is the one
    ``Check`` uses (its throttle is the one budget of failed lookups); ``limits`` ``None``
    counts no login attempts; ``count(outcome)`` is told how each :meth:`login` ended
    (:data:`~extauthz.server.metrics.LOGIN_OUTCOMES`)."""

    def __init__(
        self,
        resolver: SessionResolver,
        verifier: PasswordVerifier,
        *,
        limits: LoginLimits | None = None,
        same_site: SameSiteCheck | None = None,
        default_return_to: str = "/",
        gate: SecondStepGate | None = None,
        count: Callable[[str], None] | None = None,
    ) -> None:
        self.resolver = resolver
        self.count = count
        self.sessions = resolver.sessions
        self.cookie = resolver.cookie
        self.verifier = verifier
        self.limits = limits
        self.same_site = same_site or SameSiteCheck()
        self.default_return_to = default_return_to
        self.gate = gate

    def return_to(self, candidate: object) -> str:
        """A same-host path to go to after signing in (never the login or logout page)."""
        target = safe_return_to(candidate if isinstance(candidate, str) else "")
        if target == "/" or target.startswith((LOGIN_PATH, LOGOUT_PATH)):
            return self.default_return_to
        return target

    def refuse_cross_site(self, ctx: RequestContext, what: str) -> None:
        """:raises Forbidden: ``ctx`` is not same-site (``cross_site_request``; ``what`` names
        the action in the log and the message)."""
        violation = self.same_site.violation(ctx.scheme, ctx.host, ctx.headers)
        if violation is not None:
            log.warning("%s refused: cross-site request (%s)", what, violation)
            raise Forbidden(Reason.CROSS_SITE_REQUEST, f"Cross-site {what} refused.")

    def _refuse_blocked(self, ctx: RequestContext, presented: tuple[str, ...]) -> None:
        """A request that presents tokens from an address over its budget of failed lookups
        is refused before any of them is looked up."""
        if not presented:
            return
        try:
            self.resolver.refuse_blocked(ctx.peer_address)
        except TooManyRequests as blocked:
            raise _lookups_throttled(blocked.retry_after_seconds) from None

    # -- sign in ---------------------------------------------------------------------------

    async def login(
        self, ctx: RequestContext, read_form: Callable[[], Awaitable[LoginForm]]
    ) -> SignedIn | LoginFailed | SecondStepNeeded:
        """Sign in with the form ``read_form`` returns (read only after the same-site check;
        its own errors propagate).

        :raises Forbidden: a cross-site request.
        :raises TooManyRequests: a login budget is spent (no password was checked).
        :raises StoreUnavailable: sessions, users or counters did not answer.
        """
        if self.count is None:
            return await self._login(ctx, read_form)
        try:
            result = await self._login(ctx, read_form)
        except TooManyRequests:
            self.count("throttled")
            raise
        except Denied:  # cross-site, a bad body, a session too large
            self.count("refused")
            raise
        except StoreUnavailable:
            self.count("unavailable")
            raise
        self.count(_OUTCOMES[type(result)])
        return result

    async def _login(
        self, ctx: RequestContext, read_form: Callable[[], Awaitable[LoginForm]]
    ) -> SignedIn | LoginFailed | SecondStepNeeded:
        self.refuse_cross_site(ctx, "login")
        form = await read_form()
        return_to = self.return_to(form.return_to)
        username, address = form.username, ctx.peer_address
        user_id = tokens.log_id(username)
        try:
            # reserved before the verify: concurrent attempts cannot all pass a check
            wait = await self.limits.reserve(username, address) if self.limits else 0
        except _BACKEND_ERRORS:
            log.error("login: rate-limit counters unavailable", exc_info=True)
            raise StoreUnavailable("rate-limit counters unavailable") from None
        if wait:
            log.warning("login throttled user_id=%s addr=%s retry_after=%d", user_id, address, wait)
            raise TooManyRequests(wait, LOGINS_THROTTLED)
        try:
            user = await self.verifier.verify(username, form.password)
        except _BACKEND_ERRORS:
            log.error("login: user store unavailable", exc_info=True)
            await self._release(username, address)  # no password was checked
            raise StoreUnavailable("user store unavailable") from None
        if user is None:
            # the reservation stays: this was a failed attempt
            log.info("login failed user_id=%s addr=%s", user_id, address)
            return LoginFailed(username, return_to)
        try:
            step = await self.gate.after_password(user, return_to) if self.gate else None
            if step is not None:
                log.info("login needs a second step user_id=%s purpose=%s addr=%s", user_id,
                         step.purpose, address)
            signed_in = step or await self.start_session(ctx, user, ("pwd",), return_to)
        except _BACKEND_ERRORS:  # the password was right: not a failure
            log.error("login: a store is unavailable", exc_info=True)
            await self._release(username, address)
            raise StoreUnavailable("a store behind the login is unavailable") from None
        except Forbidden:
            await self._release(username, address)
            raise
        if self.limits:
            try:
                await self.limits.succeeded(username, address)
            except _BACKEND_ERRORS:
                log.warning("login: cannot reset the user's failure count", exc_info=True)
        return signed_in

    async def start_session(
        self, ctx: RequestContext, user: User, amr: tuple[str, ...], return_to: str
    ) -> SignedIn:
        """A new session for ``user`` authenticated by ``amr`` (RFC 8176), after revoking
        whatever the request presented (session fixation).

        :raises StoreUnavailable: the session store did not answer.
        :raises Forbidden: ``session_too_large``: the user's JWT would exceed ``jwt.max_bytes``.
        """
        try:
            # session fixation: nothing presented before the login survives it. The answer
            # does not depend on these revocations, but a miss is still a failed lookup.
            misses = 0
            for token in self.resolver.presented(ctx):
                if await self.sessions.revoke_token(token) is None and not (
                    await self.sessions.was_issued(token)
                ):
                    misses += 1
            token, session = await self.sessions.create(
                user.name, scopes=user.scopes, roles=user.roles, amr=amr
            )
        except StoreUnavailable:
            log.error("login: session store unavailable", exc_info=True)
            raise
        except ValueError as exc:  # the user's roles and scopes make a JWT over jwt.max_bytes
            log.error("login refused user_id=%s: %s", tokens.log_id(user.name), exc)
            raise Forbidden(Reason.SESSION_TOO_LARGE, str(exc)) from None
        await self.resolver.count_misses(ctx.peer_address, misses)
        log.info("login sub=%s sid=%s addr=%s amr=%s", session.sub, session.sid,
                 ctx.peer_address, " ".join(amr))
        set_cookies = self.cookie.setting(token, session.expires_at - time.time())
        return SignedIn(session, set_cookies, return_to)

    async def _release(self, username: str, address: str) -> None:
        if self.limits is None:
            return
        try:
            await self.limits.release(username, address)
        except _BACKEND_ERRORS:
            log.warning("login: cannot take back a rate-limit count", exc_info=True)

    # -- sign out --------------------------------------------------------------------------

    async def logout(
        self, ctx: RequestContext, read_everywhere: Callable[[], Awaitable[bool]]
    ) -> SignedOut:
        """Revoke the presented sessions, or with ``read_everywhere()`` (read only after the
        same-site check) every session of their users; then clear the cookie.

        :raises Forbidden: a cross-site request.
        :raises TooManyRequests: the address is over its budget of failed lookups, or this
            request put it there and ended nothing.
        :raises StoreUnavailable: a revocation was not stored (the session still works).
        """
        self.refuse_cross_site(ctx, "logout")
        everywhere = await read_everywhere()
        presented = self.resolver.presented(ctx)
        self._refuse_blocked(ctx, presented)
        missed: set[str] = set()
        try:
            revoked = await self._revoke(presented, everywhere, missed)
        except StoreUnavailable:
            log.error("logout failed: the revocation was not stored", exc_info=True)
            raise
        finally:
            wait = await self.resolver.count_misses(ctx.peer_address, len(missed))
        if wait and not revoked:
            # this request used up the budget and ended nothing: it learns nothing (as at
            # Check). A request that did end a session is told so, truthfully.
            raise _lookups_throttled(wait)
        return SignedOut(revoked, self.cookie.clearing())

    async def _revoke(self, presented: tuple[str, ...], everywhere: bool, missed: set[str]) -> int:
        """Revoke the presented sessions (or every session of their users); how many.
        Tokens that matched no session are added to ``missed``.

        :raises StoreUnavailable: a revocation was not stored.
        """
        revoked = 0
        if everywhere:
            subjects: dict[str, None] = {}
            for token in presented:
                try:
                    subjects[(await self.sessions.lookup(token)).sub] = None
                except Unauthenticated as failure:
                    if is_miss(failure):
                        missed.add(token)
            for sub in subjects:
                count = await self.sessions.store.revoke_subject(sub)
                log.info("logout everywhere sub=%s revoked=%d", sub, count)
                revoked += count
        for token in presented:
            gone = await self.sessions.revoke_token(token)
            if gone is not None:
                log.info("logout sub=%s sid=%s", gone.sub, gone.sid)
                revoked += 1
            elif not everywhere and not await self.sessions.was_issued(token):
                # (with ``everywhere`` the lookup above already counted; a token revoked
                # before, or of a session that idled out, is a stale cookie, not a guess)
                missed.add(token)
        return revoked

    # -- the caller's session --------------------------------------------------------------

    async def session(self, ctx: RequestContext) -> Session:
        """The caller's session, as ``Check`` would find it.

        :raises Unauthenticated: no credential (``no_credential``) or no valid session.
        :raises TooManyRequests: the address is, or is now, over its budget of failed lookups.
        :raises StoreUnavailable: the store did not answer.
        """
        try:
            return await self.resolver.resolve(ctx)
        except TooManyRequests as throttled:
            raise _lookups_throttled(throttled.retry_after_seconds) from None


_OUTCOMES = {SignedIn: "signed_in", LoginFailed: "failed", SecondStepNeeded: "second_step"}


def _lookups_throttled(wait: int) -> TooManyRequests:
    log.warning("token lookup refused: too many failed lookups from this address")
    return TooManyRequests(wait, LOOKUPS_THROTTLED)
