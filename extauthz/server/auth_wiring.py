"""The composition root's part for second factors: ``[mfa]`` settings in, the second step of
the login, the ``/auth/mfa/*`` pages and the administrators' :class:`FactorAdmin` out (on the
stores of :mod:`extauthz.server.store_wiring`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from extauthz.errors import SettingsError
from extauthz.login.cookies import SessionCookie
from extauthz.login.http import AuthHandlers
from extauthz.login.limits import LoginLimits
from extauthz.login.mfa.account import FactorAdmin, MfaAccount
from extauthz.login.mfa.http import MfaHandlers
from extauthz.login.mfa.kinds import FactorKind, FactorKinds
from extauthz.login.mfa.policy import MfaPolicy
from extauthz.login.mfa.recovery import RecoveryKind
from extauthz.login.mfa.sealing import SecretBox, load_key
from extauthz.login.mfa.steps import SecondSteps
from extauthz.login.mfa.totp import TotpKind
from extauthz.login.users import PasswordVerifier
from extauthz.server.store_wiring import (
    build_ceremonies,
    build_factor_store,
    build_pending_logins,
)
from extauthz.settings import Settings
from extauthz.store.redis.clients import Redis

if TYPE_CHECKING:
    from extauthz.login.mfa.webauthn_kind import WebAuthnKind


def pending_cookie_name(session_cookie: str) -> str:
    """The pending login's cookie: the session cookie's name with ``-mfa`` (a ``__Host-``
    prefix carries over, so its rules hold for both)."""
    return f"{session_cookie}-mfa"


def _passkey_kind(settings: Settings) -> WebAuthnKind:
    """Passkeys' factor kind. Imported here, when ``mfa.rp_id`` turns passkeys on: py_webauthn
    and its dependencies are some 5 MiB resident in every process otherwise."""
    from extauthz.login.mfa.webauthn_kind import RelyingParty, WebAuthnKind

    m = settings.mfa
    return WebAuthnKind(RelyingParty(m.rp_id, m.rp_name, m.origins))


def build_second_factors(
    settings: Settings,
    auth: AuthHandlers,
    verifier: PasswordVerifier,
    client: Redis | None,
    limits: LoginLimits | None,
) -> FactorAdmin:
    """Give ``auth``'s login its second step and mount the ``/auth/mfa/*`` routes on it;
    return the administrators' side.

    :raises SettingsError: ``mfa.secret_key_file`` is unreadable or holds no key.
    """
    m = settings.mfa
    try:
        box = SecretBox(load_key(m.secret_key_file) if m.secret_key_file else None)
    except (OSError, ValueError) as exc:
        raise SettingsError(f"mfa.secret_key_file: {exc}") from None
    totp = TotpKind(box, issuer=m.issuer)
    recovery = RecoveryKind()
    kinds: list[FactorKind] = [totp, recovery]
    passkey = _passkey_kind(settings) if m.rp_id else None
    if passkey is not None:
        kinds.append(passkey)
    factors = build_factor_store(settings, client)
    service = auth.service
    c = settings.session
    steps = SecondSteps(
        service,
        verifier,
        factors,
        build_pending_logins(settings, client),
        kinds=FactorKinds(kinds),
        totp=totp,
        recovery=recovery,
        policy=MfaPolicy(str(m.mode), frozenset(m.required_roles), m.fresh_auth_seconds),
        pending_cookie=SessionCookie(pending_cookie_name(c.cookie_name), secure=c.cookie_secure),
        limits=limits.for_second_factors() if limits is not None else None,
        pending_seconds=m.pending_seconds,
    )
    service.gate = steps
    auth.mount(MfaHandlers(auth, steps, MfaAccount(steps)).routes())
    if passkey is not None:  # mfa.rp_id set: passkeys (docs/authentication.md, 'Passkeys')
        from extauthz.login.mfa.passkey_http import PasskeyHandlers
        from extauthz.login.mfa.passkeys import Passkeys

        passkeys = Passkeys(steps, passkey, build_ceremonies(settings, client))
        auth.mount(PasskeyHandlers(auth, passkeys).routes())
    return FactorAdmin(factors, service.sessions.store)
