"""The second step of a sign-in: after a right password, a user with a second factor enters
a code; a user whom policy requires to have one and who has none enrols one (no session exists
before that: nothing half-signed-in can reach a service). Both happen on a pending login
(:mod:`extauthz.login.mfa.pending`) bound to its own cookie, never on a session. Attempts count
in their own budgets (``mfa:user``, ``mfa:addr``). Codes and secrets are never logged.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace

from extauthz import tokens
from extauthz.check.context import RequestContext
from extauthz.check.credentials import iter_cookies
from extauthz.errors import StoreUnavailable, TooManyRequests
from extauthz.login.cookies import SessionCookie
from extauthz.login.limits import LoginLimits
from extauthz.login.mfa.factors import FACTOR_STORE_ERRORS, Factor, FactorRejected, FactorStore
from extauthz.login.mfa.kinds import Attempt, FactorKinds, amr_of
from extauthz.login.mfa.pending import PENDING_SECONDS, PendingLogin, PendingLogins
from extauthz.login.mfa.policy import MfaPolicy, amr_with
from extauthz.login.mfa.recovery import RecoveryKind
from extauthz.login.mfa.totp import TotpKind
from extauthz.login.service import LoginService, SecondStepNeeded, SignedIn
from extauthz.login.users import PasswordVerifier, User
from extauthz.login.users.records import USER_STORE_ERRORS

log = logging.getLogger("extauthz.auth")

MFA_PATH = "/auth/mfa"
VERIFY_PATH = "/auth/mfa/verify"
SETUP_PATH = "/auth/mfa/setup"
WRONG_CODE = "That code is not right, or was used already."
NO_PENDING = "This sign-in has expired; please sign in again."
THROTTLED = "Too many wrong codes; please wait and try again."
STORE_ERRORS = (*FACTOR_STORE_ERRORS, *USER_STORE_ERRORS)


class PendingGone(Exception):
    """No live pending login behind the request's cookie (expired, used, never made)."""


@dataclass(frozen=True)
class StepForm:
    """A second-step response: ``kind`` names a factor kind (``totp``, ``recovery``)."""

    kind: str
    response: str


@dataclass(frozen=True)
class EnrolmentView:
    """A TOTP enrolment to show: the factor's id, the secret (to type), the ``otpauth://``
    URI and its QR code as inline SVG."""

    factor_id: str
    secret: str
    uri: str
    qr_svg: str


@dataclass(frozen=True)
class StepView:
    """The page of a pending login: ``purpose`` (``login``/``enrol``), the kinds the user can
    answer with, the enrolment to show (``enrol``)."""

    purpose: str
    kinds: tuple[str, ...]
    enrolment: EnrolmentView | None = None


@dataclass(frozen=True)
class StepFailed:
    """A wrong, malformed or replayed response; the page may be shown again."""

    view: StepView
    message: str = WRONG_CODE


@dataclass(frozen=True)
class Completed:
    """The sign-in is complete: ``signed_in`` (its cookies also clear the pending one);
    ``recovery_codes``: shown once when this step enrolled the user, else ``()``."""

    signed_in: SignedIn
    recovery_codes: tuple[str, ...] = ()


class SecondSteps:
    """The :class:`~extauthz.login.service.SecondStepGate` of the login and the second-step
    pages' rules. ``pending_cookie`` names the pending login's cookie (host-only)."""

    def __init__(
        self,
        login: LoginService,
        users: PasswordVerifier,
        factors: FactorStore,
        pending: PendingLogins,
        *,
        kinds: FactorKinds,
        totp: TotpKind,
        recovery: RecoveryKind,
        policy: MfaPolicy,
        pending_cookie: SessionCookie,
        limits: LoginLimits | None = None,
        pending_seconds: int = PENDING_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.login, self.users, self.factors, self.pending = login, users, factors, pending
        self.kinds, self.totp, self.recovery, self.policy = kinds, totp, recovery, policy
        self.pending_cookie = pending_cookie
        self.limits = limits
        self.pending_seconds = pending_seconds
        self._clock = clock

    async def usable(self, user: str) -> list[Factor]:
        """``user``'s confirmed factors of registered kinds."""
        names = self.kinds.names()
        return [f for f in await self.factors.factors(user) if f.confirmed and f.kind in names]

    # -- the gate ----------------------------------------------------------------------------

    async def after_password(self, user: User, return_to: str) -> SecondStepNeeded | None:
        try:
            usable = await self.usable(user.name)
            if usable:
                purpose, factor_id, location = "login", "", VERIFY_PATH
            elif self.policy.requires(user):
                purpose, location = "enrol", SETUP_PATH
                factor_id = await self.new_totp(user.name)
            else:
                return None
            now = self._clock()
            token = tokens.mint_token(tokens.PENDING_LOGIN_PREFIX)
            record = PendingLogin(user.name, purpose, return_to, now, now + self.pending_seconds,
                                  secrets.token_urlsafe(32), factor_id)
            await self.pending.put(tokens.token_hash(token), record)
        except FACTOR_STORE_ERRORS:
            log.error("login: factor store unavailable", exc_info=True)
            raise StoreUnavailable("factor store unavailable") from None
        cookie = self.pending_cookie.set(token, self.pending_seconds)
        return SecondStepNeeded(location, (cookie,), purpose)

    async def new_totp(self, user: str) -> str:
        """A fresh unconfirmed TOTP factor in place of earlier unconfirmed ones; its id."""
        for old in await self.factors.factors(user):
            if old.kind == self.totp.name and not old.confirmed:
                await self.factors.remove(user, old.id)
        factor, _ = self.totp.new_factor(user, self._clock())
        await self.factors.put(user, factor)
        return factor.id

    async def enrolment_view(self, user: str, factor_id: str) -> EnrolmentView | None:
        """The unconfirmed TOTP factor ``factor_id`` of ``user`` to show, ``None`` if gone."""
        for factor in await self.factors.factors(user):
            if factor.id == factor_id and factor.kind == self.totp.name and not factor.confirmed:
                try:
                    secret = self.totp.secret_of(user, factor)
                except ValueError:
                    return None
                uri = self.totp.provisioning_uri(user, secret)
                return EnrolmentView(factor.id, secret, uri, self.totp.qr_svg(uri))
        return None

    # -- the pending login -------------------------------------------------------------------

    def _pending_hash(self, ctx: RequestContext) -> str:
        for name, value in iter_cookies(ctx.header("cookie") or ""):
            if name == self.pending_cookie.name and tokens.has_token_shape(
                value, tokens.PENDING_LOGIN_PREFIX
            ):
                return tokens.token_hash(value)
        raise PendingGone()

    async def _pending(self, ctx: RequestContext) -> tuple[str, PendingLogin]:
        key = self._pending_hash(ctx)
        record = await self.pending.get(key)
        if record is None or record.expires_at <= self._clock():
            raise PendingGone()
        return key, record

    async def pending_login(self, ctx: RequestContext) -> PendingLogin:
        """The request's live pending login (a passkey signs its ``challenge``).

        :raises PendingGone: none."""
        return (await self._pending(ctx))[1]

    async def _view(self, record: PendingLogin) -> StepView:
        if record.purpose == "enrol":
            view = await self.enrolment_view(record.sub, record.factor_id)
            if view is None:
                raise PendingGone()
            return StepView("enrol", (self.totp.name,), view)
        kinds = tuple(dict.fromkeys(f.kind for f in await self.usable(record.sub)))
        return StepView("login", kinds)

    async def view(self, ctx: RequestContext) -> StepView:
        """The page of the request's pending login.

        :raises PendingGone: none. :raises StoreUnavailable: a store did not answer."""
        try:
            return await self._view((await self._pending(ctx))[1])
        except FACTOR_STORE_ERRORS:
            raise StoreUnavailable("factor store unavailable") from None

    async def complete(
        self, ctx: RequestContext, read_form: Callable[[], Awaitable[StepForm]]
    ) -> Completed | StepFailed:
        """Answer the pending login's step with the form ``read_form`` returns (read after
        the same-site check).

        :raises Forbidden: a cross-site request (or ``session_too_large``).
        :raises PendingGone: no live pending login (also: another request completed it).
        :raises TooManyRequests: the user's or the address's budget of codes is spent.
        :raises StoreUnavailable: a store did not answer.
        """
        self.login.refuse_cross_site(ctx, "second step")
        form = await read_form()
        try:
            key, record = await self._pending(ctx)
            return await self._complete(ctx, key, record, form)
        except STORE_ERRORS as exc:
            if isinstance(exc, StoreUnavailable):
                raise
            log.error("second step: a store is unavailable", exc_info=True)
            raise StoreUnavailable("factor or user store unavailable") from None

    async def _complete(
        self, ctx: RequestContext, key: str, record: PendingLogin, form: StepForm
    ) -> Completed | StepFailed:
        user_id, address = tokens.log_id(record.sub), ctx.peer_address
        wait = await self.limits.reserve(record.sub, address) if self.limits else 0
        if wait:
            log.warning("second step throttled user_id=%s addr=%s", user_id, address)
            raise TooManyRequests(wait, THROTTLED)
        now = self._clock()
        attempt = Attempt(record.sub, form.response, now, record.challenge)
        if record.purpose == "enrol":
            used = await self.confirm_totp(record.sub, record.factor_id, attempt)
        else:
            used = await self.use_factor(record.sub, form.kind, attempt)
        if used is None:
            log.info("second step failed user_id=%s kind=%s addr=%s", user_id,
                     form.kind if form.kind in self.kinds.names() else "?", address)
            return StepFailed(await self._view(record))
        if await self.pending.take(key) is None:
            raise PendingGone()  # another request completed this sign-in first
        user = await self.users.user(record.sub)
        if user is None:
            raise PendingGone()  # removed or disabled meanwhile
        codes: tuple[str, ...] = ()
        if record.purpose == "enrol":
            codes = await self.new_recovery_codes(user.name)
            revoked = await self.login.sessions.store.revoke_subject(user.name)
            log.info("factor enrolled sub=%s kind=totp revoked_sessions=%d", user.name, revoked)
        kind = self.kinds.get(used.kind)
        amr = amr_with(amr_of(kind, used) if kind is not None else ())
        signed_in = await self.login.start_session(ctx, user, amr, record.return_to)
        if self.limits:
            await self.limits.succeeded(record.sub, address)
        cookies = (*self.pending_cookie.clearing(), *signed_in.set_cookies)
        return Completed(replace(signed_in, set_cookies=cookies), codes)

    async def use_factor(self, user: str, kind_name: str, attempt: Attempt) -> Factor | None:
        """Try ``attempt`` against ``user``'s confirmed factors of kind ``kind_name``; the
        updated factor that accepted it, ``None`` when none did."""
        kind = self.kinds.get(kind_name)
        if kind is None:
            return None
        for factor in await self.usable(user):
            if factor.kind != kind.name:
                continue
            try:
                used = await self.factors.change(user, factor.id, lambda f: kind.verify(f, attempt))
            except FactorRejected:
                continue
            if used is not None:
                return used
        return None

    async def confirm_totp(self, user: str, factor_id: str, attempt: Attempt) -> Factor | None:
        """Confirm the unconfirmed TOTP ``factor_id`` with its first code."""

        def confirm(factor: Factor) -> Factor:
            if factor.kind != self.totp.name or factor.confirmed:
                raise FactorRejected("not an enrolment")
            return replace(self.totp.verify(factor, attempt), confirmed=True)

        try:
            return await self.factors.change(user, factor_id, confirm)
        except FactorRejected:
            return None

    async def new_recovery_codes(self, user: str) -> tuple[str, ...]:
        """Fresh recovery codes in place of any earlier ones; the codes, to show once."""
        for old in await self.factors.factors(user):
            if old.kind == self.recovery.name:
                await self.factors.remove(user, old.id)
        factor, codes = self.recovery.new_factor(user, self._clock())
        await self.factors.put(user, factor)
        return tuple(codes)
