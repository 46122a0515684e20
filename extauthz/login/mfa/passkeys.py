"""Passkeys from the account area and at sign-in: registration and removal (a fresh
authentication, like TOTP enrolment; each is a factor change that revokes the user's other
sessions), a sign-in with a passkey alone (a discoverable credential: the user handle names
the user), and the options of the second step after a password (signing the pending login's
challenge; the answer goes to ``/auth/mfa/verify`` like a code). Challenges are random, stored
server-side under their hash and taken once (:mod:`extauthz.login.mfa.challenges`). No
challenge, credential id or key is ever logged.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any

from extauthz import tokens
from extauthz.check.context import RequestContext
from extauthz.errors import Forbidden, Reason, StoreUnavailable, TooManyRequests
from extauthz.login.mfa.account import MfaAccount, Refreshed, StepUpRequired, revoke_others
from extauthz.login.mfa.challenges import (
    CHALLENGE_SECONDS,
    Ceremonies,
    Ceremony,
    challenge_key,
)
from extauthz.login.mfa.factors import Factor, FactorRejected
from extauthz.login.mfa.kinds import Attempt
from extauthz.login.mfa.policy import amr_with
from extauthz.login.mfa.steps import STORE_ERRORS, THROTTLED, PendingGone, SecondSteps
from extauthz.login.mfa.webauthn_kind import KIND, WebAuthnKind, read_answer
from extauthz.login.service import SignedIn
from extauthz.store.manager import Found
from extauthz.store.model import Session

log = logging.getLogger("extauthz.auth")

PASSKEYS_PATH = "/auth/passkeys"


class PasskeyRefused(Exception):
    """An answer that does not verify: wrong origin or rp id, a challenge unknown, used or
    expired, an unknown credential, a counter that did not grow, a bad signature. The client
    learns no more than that."""


class NoSuchPasskey(Exception):
    """The caller has no passkey with that id."""


@dataclass(frozen=True)
class PasskeyForm:
    """``credential``: the ``PublicKeyCredential`` JSON; ``name``: a label (registration);
    ``return_to``: where a sign-in goes."""

    credential: str
    name: str = ""
    return_to: str = ""


@dataclass(frozen=True)
class Changed:
    """A passkey added (``factor``) or removed; ``set_cookies`` carry the session's new
    token; ``revoked``: the user's other sessions ended; ``recovery_codes``: made when the
    passkey was the user's first factor (shown once), else ``()``."""

    set_cookies: tuple[str, ...]
    revoked: int
    factor: Factor | None = None
    recovery_codes: tuple[str, ...] = ()


def passkey_summary(factor: Factor) -> dict[str, Any]:
    """What the user sees of a passkey (JSON-ready): never the credential id or key."""
    return {
        "id": factor.id,
        "name": str(factor.data.get("name", "")),
        "amr": list(WebAuthnKind.amr_of_factor(factor)),
        "created_at": int(factor.created_at),
        "last_used_at": None if factor.last_used_at is None else int(factor.last_used_at),
    }


class Passkeys:
    """Over :class:`~extauthz.login.mfa.steps.SecondSteps` (stores, limits, login) with the
    ``kind`` registered there and ``ceremonies`` for the challenges it hands out."""

    def __init__(
        self,
        steps: SecondSteps,
        kind: WebAuthnKind,
        ceremonies: Ceremonies,
        *,
        clock: Callable[[], float] = time.time,
        challenge_seconds: int = CHALLENGE_SECONDS,
    ) -> None:
        self.steps, self.kind, self.ceremonies = steps, kind, ceremonies
        self.login = steps.login
        self.account = MfaAccount(steps, clock=clock)
        self._clock = clock
        self.challenge_seconds = challenge_seconds

    # -- helpers -----------------------------------------------------------------------------

    async def _found(self, ctx: RequestContext, *, fresh: bool) -> Found:
        found = await self.login.resolver.find(ctx)
        if found.session.kind != "session":
            raise Forbidden(Reason.CREDENTIAL_KIND_REFUSED, "sign in with a browser session")
        age = self._clock() - found.session.authenticated_at
        if fresh and age > self.steps.policy.fresh_auth_seconds:
            raise StepUpRequired()
        return found

    async def _mine(self, sub: str) -> list[Factor]:
        try:
            return [f for f in await self.steps.factors.factors(sub) if f.kind == KIND]
        except STORE_ERRORS:
            raise StoreUnavailable("factor store unavailable") from None

    async def _challenge(self, purpose: str, sub: str = "", sid: str = "") -> str:
        challenge = secrets.token_urlsafe(32)
        ceremony = Ceremony(purpose, sub, self._clock() + self.challenge_seconds, sid)
        await self.ceremonies.put(challenge_key(challenge), ceremony)
        return challenge

    async def _take(self, credential: str, purpose: str) -> tuple[str, Ceremony]:
        """The answer's challenge and its ceremony, taken (a second use finds nothing)."""
        answer = read_answer(credential)
        if answer is None:
            raise PasskeyRefused("malformed")
        ceremony = await self.ceremonies.take(challenge_key(answer.challenge))
        if ceremony is None or ceremony.purpose != purpose:
            raise PasskeyRefused("unknown, used or expired challenge")
        return answer.challenge, ceremony

    async def _changed(self, found: Found, ctx: RequestContext) -> tuple[tuple[str, ...], int]:
        """After a factor change: the user's other sessions revoked, this one's token
        rotated (its new cookie)."""
        store = self.login.sessions.store
        revoked = await revoke_others(store, found.session.sub, found.session.sid)
        rotated = await self.login.sessions.rotate(found.token)
        cookies: tuple[str, ...] = ()
        if rotated.token is not None:
            lifetime = rotated.session.expires_at - self._clock()
            cookies = self.login.cookie.setting(rotated.token, lifetime)
        return cookies, revoked

    # -- the account area --------------------------------------------------------------------

    async def overview(self, ctx: RequestContext) -> tuple[Session, list[Factor]]:
        """The caller's session and passkeys. :raises Unauthenticated: no session."""
        found = await self._found(ctx, fresh=False)
        mine = await self._mine(found.session.sub)
        return found.session, [f for f in mine if f.confirmed]

    async def registration_options(self, ctx: RequestContext) -> dict[str, Any]:
        """Creation options for a new passkey of the caller (same-site, fresh session).

        :raises StepUpRequired: not fresh. :raises Forbidden: cross-site.
        """
        self.login.refuse_cross_site(ctx, "passkey registration")
        session = (await self._found(ctx, fresh=True)).session
        mine = await self._mine(session.sub)
        challenge = await self._challenge("register", session.sub, session.sid)
        try:
            return self.kind.registration_options(session.sub, challenge, mine)
        except ValueError:
            raise Forbidden(Reason.CREDENTIAL_KIND_REFUSED, "this user name cannot hold a "
                            "passkey") from None

    async def register(
        self, ctx: RequestContext, read_form: Callable[[], Awaitable[PasskeyForm]]
    ) -> Changed:
        """Verify a ``navigator.credentials.create()`` answer and store the passkey; the
        user's first factor comes with recovery codes, as a TOTP enrolment does.

        :raises PasskeyRefused: it does not verify, or the challenge was not this session's.
        :raises StepUpRequired: not fresh.
        """
        self.login.refuse_cross_site(ctx, "passkey registration")
        form = await read_form()
        found = await self._found(ctx, fresh=True)
        sub = found.session.sub
        challenge, ceremony = await self._take(form.credential, "register")
        if ceremony.sub != sub or ceremony.sid != found.session.sid:
            raise PasskeyRefused("another session's challenge")
        try:
            factor = self.kind.register(secrets.token_urlsafe(12), form.credential, challenge,
                                        form.name, self._clock())
        except FactorRejected:
            log.info("passkey registration failed user_id=%s", tokens.log_id(sub))
            raise PasskeyRefused("does not verify") from None
        mine = await self._mine(sub)
        if any(f.data.get("credential_id") == factor.data["credential_id"] for f in mine):
            raise PasskeyRefused("registered already")
        try:
            first = not await self.steps.usable(sub)
            await self.steps.factors.put(sub, factor)
            codes = await self.steps.new_recovery_codes(sub) if first else ()
        except STORE_ERRORS:
            raise StoreUnavailable("factor store unavailable") from None
        cookies, revoked = await self._changed(found, ctx)
        log.info("factor enrolled sub=%s sid=%s kind=webauthn factor_id=%s revoked_sessions=%d",
                 sub, found.session.sid, factor.id, revoked)
        return Changed(cookies, revoked, factor, codes)

    async def remove(self, ctx: RequestContext, read_id: Callable[[], Awaitable[str]]) -> Changed:
        """Remove one of the caller's passkeys (same-site, fresh session).

        :raises NoSuchPasskey: none with that id. :raises StepUpRequired: not fresh.
        """
        self.login.refuse_cross_site(ctx, "passkey removal")
        factor_id = await read_id()
        found = await self._found(ctx, fresh=True)
        sub = found.session.sub
        if not any(f.id == factor_id for f in await self._mine(sub)):
            raise NoSuchPasskey(factor_id)
        try:
            removed = await self.steps.factors.remove(sub, factor_id)
        except STORE_ERRORS:
            raise StoreUnavailable("factor store unavailable") from None
        if not removed:
            raise NoSuchPasskey(factor_id)
        cookies, revoked = await self._changed(found, ctx)
        log.info("factor removed sub=%s sid=%s kind=webauthn factor_id=%s revoked_sessions=%d",
                 sub, found.session.sid, factor_id, revoked)
        return Changed(cookies, revoked)

    # -- sign-in -----------------------------------------------------------------------------

    async def sign_in_options(self, ctx: RequestContext) -> dict[str, Any]:
        """Request options for a passkey alone: no ``allowCredentials`` (the authenticator
        offers its discoverable credentials), user verification required."""
        self.login.refuse_cross_site(ctx, "passkey sign-in")
        return self.kind.authentication_options(await self._challenge("sign-in"), [])

    async def sign_in(
        self, ctx: RequestContext, read_form: Callable[[], Awaitable[PasskeyForm]]
    ) -> SignedIn:
        """A session for the user whose passkey signed the challenge: ``amr`` is the
        passkey's value and ``mfa`` (possession plus the user verification the authenticator
        performed; docs/authentication.md, 'Passkeys').

        :raises PasskeyRefused: the answer does not verify (unknown user or credential too).
        :raises TooManyRequests: the user's or the address's budget is spent.
        """
        self.login.refuse_cross_site(ctx, "passkey sign-in")
        form = await read_form()
        challenge, _ = await self._take(form.credential, "sign-in")
        answer = read_answer(form.credential)
        assert answer is not None  # _take read it already
        try:
            user = await self.steps.users.user(answer.user) if answer.user else None
            if user is None:
                log.info("passkey sign-in failed: unknown user addr=%s", ctx.peer_address)
                raise PasskeyRefused("unknown user")
            await self._reserve(user.name, ctx.peer_address)
            used = await self._use(user.name, form.credential, answer.credential_id, challenge)
        except STORE_ERRORS:
            raise StoreUnavailable("factor or user store unavailable") from None
        if used is None:
            log.info("passkey sign-in failed user_id=%s addr=%s", tokens.log_id(user.name),
                     ctx.peer_address)
            raise PasskeyRefused("does not verify")
        if self.steps.limits:
            await self.steps.limits.succeeded(user.name, ctx.peer_address)
        amr = amr_with(self.kind.amr_of_factor(used), earlier=())
        return await self.login.start_session(ctx, user, amr, self.login.return_to(form.return_to))

    async def _reserve(self, sub: str, address: str) -> None:
        wait = await self.steps.limits.reserve(sub, address) if self.steps.limits else 0
        if wait:
            log.warning("passkey sign-in throttled user_id=%s addr=%s", tokens.log_id(sub),
                        address)
            raise TooManyRequests(wait, THROTTLED)

    async def _use(self, sub: str, credential: str, cred_id: str, challenge: str) -> Factor | None:
        attempt = Attempt(sub, credential, self._clock(), challenge)
        for factor in await self.steps.usable(sub):
            if factor.kind != KIND or factor.data.get("credential_id") != cred_id:
                continue
            try:
                return await self.steps.factors.change(
                    sub, factor.id, lambda f: self.kind.verify(f, attempt)
                )
            except FactorRejected:
                return None
        return None  # an unknown credential

    # -- step-up ---------------------------------------------------------------------------

    async def step_up_options(self, ctx: RequestContext) -> dict[str, Any]:
        """Request options for a step-up of the caller's session: a challenge bound to it,
        the user's passkeys in ``allowCredentials``."""
        self.login.refuse_cross_site(ctx, "passkey step-up")
        session = (await self._found(ctx, fresh=False)).session
        mine = [f for f in await self._mine(session.sub) if f.confirmed]
        challenge = await self._challenge("step-up", session.sub, session.sid)
        return self.kind.authentication_options(challenge, mine)

    async def step_up(
        self, ctx: RequestContext, read_form: Callable[[], Awaitable[PasskeyForm]]
    ) -> Refreshed:
        """Authenticate the caller's session again with a passkey: its ``amr`` becomes the
        passkey's value and ``mfa``, ``auth_time`` now, its token rotated (as a step-up with a
        code, :class:`~extauthz.login.mfa.account.MfaAccount`); ``return_to`` validated.

        :raises PasskeyRefused: does not verify, or the challenge was another session's.
        :raises TooManyRequests: the user's or the address's budget is spent.
        """
        self.login.refuse_cross_site(ctx, "passkey step-up")
        form = await read_form()
        found = await self._found(ctx, fresh=False)
        sub = found.session.sub
        challenge, ceremony = await self._take(form.credential, "step-up")
        answer = read_answer(form.credential)
        if answer is None or ceremony.sub != sub or ceremony.sid != found.session.sid:
            raise PasskeyRefused("another session's challenge")
        try:
            await self._reserve(sub, ctx.peer_address)
            used = await self._use(sub, form.credential, answer.credential_id, challenge)
        except STORE_ERRORS:
            raise StoreUnavailable("factor store unavailable") from None
        if used is None:
            log.info("passkey step-up failed user_id=%s addr=%s", tokens.log_id(sub),
                     ctx.peer_address)
            raise PasskeyRefused("does not verify")
        if self.steps.limits:
            await self.steps.limits.succeeded(sub, ctx.peer_address)
        amr = amr_with(self.kind.amr_of_factor(used), earlier=())
        refreshed = await self.account.refresh(found, amr, ctx)
        log.info("step-up sub=%s sid=%s amr=%s", sub, found.session.sid, " ".join(amr))
        return replace(refreshed, return_to=self.login.return_to(form.return_to))

    async def second_step_options(self, ctx: RequestContext) -> dict[str, Any]:
        """Request options for the pending login's second step: its challenge, the user's
        passkeys; ``return_to`` added (where the page goes after ``/auth/mfa/verify``).

        :raises PendingGone: no live pending login, or its user has no passkey.
        """
        pending = await self.steps.pending_login(ctx)
        if pending.purpose != "login":
            raise PendingGone()
        try:
            usable = [f for f in await self.steps.usable(pending.sub) if f.kind == KIND]
        except STORE_ERRORS:
            raise StoreUnavailable("factor store unavailable") from None
        if not usable:
            raise PendingGone()
        options = self.kind.authentication_options(pending.challenge, usable)
        return {**options, "returnTo": pending.return_to}


def credential_text(value: object, limit: int = 16384) -> str:
    """A credential sent as a JSON object or string, as text; ``""`` if neither or too big."""
    if isinstance(value, dict):
        value = json.dumps(value, separators=(",", ":"))
    return value if isinstance(value, str) and len(value) <= limit else ""
