"""The composition root's part for the authentication service (:func:`build_auth`: the login,
its users and budgets, the session resolver Check shares) and for second factors: ``[mfa]``
settings in, the second step of the login, the ``/auth/mfa/*`` pages and the administrators'
:class:`FactorAdmin` out (on the stores of :mod:`extauthz.server.store_wiring`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from extauthz.check.resolver import SessionResolver
from extauthz.check.throttle import LookupThrottle
from extauthz.errors import SettingsError
from extauthz.login.cookies import SessionCookie
from extauthz.login.csrf import SameSiteCheck
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
from extauthz.login.service import LoginService
from extauthz.login.users import PasswordVerifier
from extauthz.server.metrics import Metrics
from extauthz.server.store_wiring import (
    build_ceremonies,
    build_factor_store,
    build_limiter,
    build_pending_logins,
    build_user_store,
)
from extauthz.settings import Settings
from extauthz.store.manager import SessionManager
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


def build_auth(
    settings: Settings, sessions: SessionManager, client: Redis | None, metrics: Metrics
) -> tuple[AuthHandlers, PasswordVerifier, SessionResolver, FactorAdmin]:
    """The authentication service, the session resolver it shares with Check, its users store
    and rate limiters (in ``client``'s Redis when given, else memory), its second factors;
    logins and refusals by a spent budget are counted in ``metrics``."""
    refused = metrics.count_rate_limited
    verifier = PasswordVerifier(
        build_user_store(settings, client), max_concurrent=settings.users.max_concurrent_hashes
    )
    r = settings.ratelimit
    limits: LoginLimits | None = None
    throttle: LookupThrottle | None = None
    if r.enabled:
        limits = LoginLimits(
            per_user=build_limiter(
                settings, client, r.login_user_limit, r.login_user_window_seconds, refused
            ),
            per_address=build_limiter(
                settings, client, r.login_addr_limit, r.login_addr_window_seconds, refused
            ),
        )
        throttle = LookupThrottle(
            build_limiter(
                settings, client, r.check_addr_limit, r.check_addr_window_seconds, refused
            ),
            refused=refused,
        )
    c = settings.session
    resolver = SessionResolver(
        sessions,
        SessionCookie(c.cookie_name, secure=c.cookie_secure, domain=c.cookie_domain),
        max_cookie_candidates=c.max_cookie_candidates,
        throttle=throttle,
        api_key_header=settings.api_keys.header,
    )
    service = LoginService(
        resolver,  # the same one as Check's: one budget of failed lookups
        verifier,
        limits=limits,
        same_site=SameSiteCheck.with_origins(settings.auth.allowed_origins),
        default_return_to=settings.auth.default_return_to,
        count=metrics.count_login,
    )
    auth = AuthHandlers(
        service, realm=settings.deny.realm, trusted_proxies=settings.auth.trusted_proxies
    )
    return auth, verifier, resolver, build_second_factors(settings, auth, verifier, client, limits)
