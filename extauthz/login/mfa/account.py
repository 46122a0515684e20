"""Second factors from the user's own session: the overview, enrolment (only with a fresh
authentication, ``mfa.fresh_auth_seconds``), and step-up (re-authentication that refreshes the
session's ``amr`` and ``auth_time`` and rotates its token); and the administrators' list and
reset. Every change of a user's factors revokes the user's other sessions (the session the
change comes from is kept, with a new token). Codes and secrets are never logged.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any

from extauthz import tokens
from extauthz.check.context import RequestContext
from extauthz.errors import Forbidden, Reason, StoreUnavailable, TooManyRequests
from extauthz.login.mfa.factors import Factor, FactorStore
from extauthz.login.mfa.kinds import Attempt
from extauthz.login.mfa.policy import amr_with
from extauthz.login.mfa.steps import STORE_ERRORS, THROTTLED, EnrolmentView, SecondSteps
from extauthz.store.manager import Found
from extauthz.store.model import Session, SessionStore

log = logging.getLogger("extauthz.auth")

ENROL_PATH = "/auth/mfa/enrol"
STEP_UP_PATH = "/auth/mfa/step-up"
PASSWORD = "password"  # the step-up answer of a user without a second factor


class StepUpRequired(Exception):
    """The change needs a fresher authentication: step up first (:data:`STEP_UP_PATH`)."""


class AlreadyEnrolled(Exception):
    """The user has a confirmed one-time-code factor already."""


@dataclass(frozen=True)
class AnswerForm:
    """A code (or, in a step-up without factors, the password) for ``kind``; ``factor_id``
    names the enrolment being confirmed; ``return_to`` where to go after a step-up."""

    kind: str
    response: str
    factor_id: str = ""
    return_to: str = ""


@dataclass(frozen=True)
class Refreshed:
    """A step-up or an enrolment succeeded: ``session`` is the refreshed record,
    ``set_cookies`` carry its new token; ``recovery_codes`` (an enrolment) are shown once."""

    session: Session
    set_cookies: tuple[str, ...]
    return_to: str = ""
    recovery_codes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Failed:
    """A wrong or replayed answer; ``kinds`` to offer again, ``return_to`` as asked."""

    kinds: tuple[str, ...]
    return_to: str = ""


def factor_summary(factor: Factor) -> dict[str, Any]:
    """What the user and administrators may see of a factor (JSON-ready): never a secret
    or a digest."""
    out: dict[str, Any] = {
        "id": factor.id,
        "kind": factor.kind,
        "confirmed": factor.confirmed,
        "created_at": int(factor.created_at),
        "last_used_at": None if factor.last_used_at is None else int(factor.last_used_at),
    }
    digests = factor.data.get("digests")
    if isinstance(digests, list):
        out["remaining"] = len(digests)
    return out


async def revoke_others(store: SessionStore, sub: str, keep_sid: str | None) -> int:
    """Revoke every session of ``sub`` except ``keep_sid``; how many."""
    if keep_sid is None:
        return await store.revoke_subject(sub)
    revoked = 0
    for other in await store.list_subject(sub):
        if other.sid != keep_sid and await store.revoke_sid(other.sid) is not None:
            revoked += 1
    return revoked


class MfaAccount:
    """Over :class:`~extauthz.login.mfa.steps.SecondSteps` (its stores, kinds, policy,
    limits and the login service)."""

    def __init__(self, steps: SecondSteps, *, clock: Callable[[], float] = time.time) -> None:
        self.steps = steps
        self.login = steps.login
        self._clock = clock

    async def _found(self, ctx: RequestContext) -> Found:
        """The caller's login session. :raises Unauthenticated: none.
        :raises Forbidden: not a login (an application's token, an API key)."""
        found = await self.login.resolver.find(ctx)
        if found.session.kind != "session":
            raise Forbidden(Reason.CREDENTIAL_KIND_REFUSED, "sign in with a browser session")
        return found

    def _fresh(self, session: Session) -> bool:
        return self._clock() - session.authenticated_at <= self.steps.policy.fresh_auth_seconds

    async def overview(self, ctx: RequestContext) -> tuple[Session, list[Factor], bool]:
        """The caller's session, factors, and whether policy requires one of them."""
        session = (await self._found(ctx)).session
        try:
            factors = await self.steps.factors.factors(session.sub)
            user = await self.steps.users.user(session.sub)
        except STORE_ERRORS:
            raise StoreUnavailable("factor or user store unavailable") from None
        required = user is not None and self.steps.policy.requires(user)
        return session, factors, required

    # -- enrolment ---------------------------------------------------------------------------

    async def enrolment(self, ctx: RequestContext) -> EnrolmentView:
        """An enrolment to show (a pending unconfirmed factor, or a new one).

        :raises StepUpRequired: the session's authentication is not fresh.
        :raises AlreadyEnrolled: the user has a confirmed TOTP factor.
        """
        session = (await self._found(ctx)).session
        if not self._fresh(session):
            raise StepUpRequired()
        try:
            factors = await self.steps.factors.factors(session.sub)
            if any(f.kind == self.steps.totp.name and f.confirmed for f in factors):
                raise AlreadyEnrolled()
            waiting = [f for f in factors if f.kind == self.steps.totp.name and not f.confirmed]
            factor_id = waiting[-1].id if waiting else await self.steps.new_totp(session.sub)
            view = await self.steps.enrolment_view(session.sub, factor_id)
        except STORE_ERRORS:
            raise StoreUnavailable("factor store unavailable") from None
        if view is None:
            raise StoreUnavailable("the enrolment could not be read back")
        return view

    async def confirm(
        self, ctx: RequestContext, read_form: Callable[[], Awaitable[AnswerForm]]
    ) -> Refreshed | Failed:
        """Confirm an enrolment with its first code: recovery codes, the user's other
        sessions revoked, this session refreshed (``amr`` with ``otp`` and ``mfa``) and its
        token rotated.

        :raises StepUpRequired: not fresh. :raises TooManyRequests: budget spent.
        """
        self.login.refuse_cross_site(ctx, "enrolment")
        form = await read_form()
        found = await self._found(ctx)
        session = found.session
        if not self._fresh(session):
            raise StepUpRequired()
        try:
            await self._reserve(session.sub, ctx.peer_address)
            attempt = Attempt(session.sub, form.response, self._clock())
            used = await self.steps.confirm_totp(session.sub, form.factor_id, attempt)
            if used is None:
                log.info("enrolment failed user_id=%s", tokens.log_id(session.sub))
                return Failed((self.steps.totp.name,))
            codes = await self.steps.new_recovery_codes(session.sub)
            if self.steps.limits:
                await self.steps.limits.succeeded(session.sub, ctx.peer_address)
        except STORE_ERRORS as exc:
            raise StoreUnavailable("factor store unavailable") from exc
        revoked = await revoke_others(self.login.sessions.store, session.sub, session.sid)
        log.info("factor enrolled sub=%s sid=%s kind=totp revoked_sessions=%d", session.sub,
                 session.sid, revoked)
        refreshed = await self._refresh(found, amr_with(self.steps.totp.amr), ctx)
        return replace(refreshed, recovery_codes=codes)

    # -- step-up -----------------------------------------------------------------------------

    async def step_up_kinds(self, ctx: RequestContext) -> tuple[str, ...]:
        """What the caller can step up with: their factors' kinds, else the password."""
        session = (await self._found(ctx)).session
        return await self._kinds(session.sub)

    async def _kinds(self, sub: str) -> tuple[str, ...]:
        try:
            usable = await self.steps.usable(sub)
        except STORE_ERRORS:
            raise StoreUnavailable("factor store unavailable") from None
        return tuple(dict.fromkeys(f.kind for f in usable)) or (PASSWORD,)

    async def step_up(
        self, ctx: RequestContext, read_form: Callable[[], Awaitable[AnswerForm]]
    ) -> Refreshed | Failed:
        """Authenticate again within the session: with a factor when the user has one (a
        password alone never steps up such a user), else with the password.

        :raises TooManyRequests: the user's or the address's budget is spent.
        """
        self.login.refuse_cross_site(ctx, "step-up")
        form = await read_form()
        found = await self._found(ctx)
        sub = found.session.sub
        kinds = await self._kinds(sub)
        try:
            await self._reserve(sub, ctx.peer_address)
            amr: tuple[str, ...] | None = None
            if kinds == (PASSWORD,) and form.kind == PASSWORD:
                if await self.steps.users.verify(sub, form.response) is not None:
                    amr = ("pwd",)
            elif form.kind in kinds:
                attempt = Attempt(sub, form.response, self._clock())
                used = await self.steps.use_factor(sub, form.kind, attempt)
                kind = self.steps.kinds.get(form.kind)
                if used is not None and kind is not None:
                    amr = amr_with(kind.amr)
        except STORE_ERRORS as exc:
            raise StoreUnavailable("factor or user store unavailable") from exc
        if amr is None:
            log.info("step-up failed user_id=%s addr=%s", tokens.log_id(sub), ctx.peer_address)
            return Failed(kinds, self.login.return_to(form.return_to))
        if self.steps.limits:
            await self.steps.limits.succeeded(sub, ctx.peer_address)
        refreshed = await self._refresh(found, amr, ctx)
        log.info("step-up sub=%s sid=%s amr=%s", sub, found.session.sid, " ".join(amr))
        return replace(refreshed, return_to=self.login.return_to(form.return_to))

    async def _reserve(self, sub: str, address: str) -> None:
        wait = await self.steps.limits.reserve(sub, address) if self.steps.limits else 0
        if wait:
            log.warning("second factor throttled user_id=%s addr=%s", tokens.log_id(sub), address)
            raise TooManyRequests(wait, THROTTLED)

    async def refresh(self, found: Found, amr: tuple[str, ...], ctx: RequestContext) -> Refreshed:
        """A step-up made elsewhere (a passkey's, :mod:`extauthz.login.mfa.passkeys`):
        :meth:`_refresh`."""
        return await self._refresh(found, amr, ctx)

    async def _refresh(self, found: Found, amr: tuple[str, ...], ctx: RequestContext) -> Refreshed:
        """Record ``amr`` and ``auth_time`` = now on the session, then rotate its token (the
        old one lives for the rotation grace).

        :raises StoreUnavailable: the session store did not take it.
        """
        now = self._clock()
        updated = await self.login.sessions.store.update(
            found.session.sid, lambda s: replace(s, amr=amr, auth_time=now)
        )
        if updated is None:
            raise StoreUnavailable("the session ended during the step-up")
        rotated = await self.login.sessions.rotate(found.token)
        cookies: tuple[str, ...] = ()
        if rotated.token is not None:
            cookies = self.login.cookie.setting(rotated.token, rotated.session.expires_at - now)
        return Refreshed(rotated.session, cookies)


class FactorAdmin:
    """Administrators' view of users' factors (the CLI and the admin API)."""

    def __init__(self, factors: FactorStore, sessions: SessionStore) -> None:
        self.factors = factors
        self.sessions = sessions

    async def list(self, user: str) -> list[Factor]:
        """:raises ValueError: a bad user name."""
        return await self.factors.factors(user)

    async def reset(self, user: str) -> tuple[int, int]:
        """Remove every factor of ``user`` and revoke every session of theirs: (factors
        removed, sessions revoked)."""
        removed = await self.factors.remove_all(user)
        revoked = await self.sessions.revoke_subject(user)
        log.warning("factors reset sub=%s removed=%d revoked_sessions=%d", user, removed, revoked)
        return removed, revoked
