"""Checks of the settings of third-party access and second factors (``[api_keys]``,
``[oauth_clients]``, ``[oauth]``, ``[mfa]``), called by
:func:`~extauthz.settings.validation.validate`; each failure is a one-line
:class:`~extauthz.errors.SettingsError` naming the dotted key."""

from __future__ import annotations

from urllib.parse import urlsplit

from extauthz.addresses import is_loopback_host
from extauthz.errors import SettingsError
from extauthz.scopes import validate_scope_tokens
from extauthz.settings import mfa, model
from extauthz.settings.headers import HEADER_NAME, RESERVED_HEADERS, RESERVED_PREFIXES
from extauthz.settings.model import Settings, UserBackend
from extauthz.settings.passkeys import validate_passkeys
from extauthz.strategies import StoreBackend


def validate_access(s: Settings) -> None:
    """:raises SettingsError: the first key out of range or not fitting the others."""
    _validate_oauth_clients(s)
    _validate_api_keys(s.api_keys, s.jwt.header, s.session_updates.header)
    _validate_oauth(s)
    _validate_mfa(s)


def _validate_oauth_clients(s: Settings) -> None:
    backend = s.oauth_clients_backend
    if backend == UserBackend.FILE and not s.oauth_clients.file:
        raise SettingsError("oauth_clients.file: must not be empty when the backend is file")
    if backend == UserBackend.REDIS and s.store.backend != StoreBackend.REDIS:
        raise SettingsError(
            "oauth_clients.backend: redis needs store.backend = redis (its Redis is used)"
        )


# the longest lifetime api_keys.max_lifetime_days may allow: ten years
MAX_API_KEY_DAYS = 3650


def _validate_api_keys(k: model.ApiKeySettings, jwt_header: str, update_header: str) -> None:
    if not HEADER_NAME.fullmatch(k.header) or k.header.startswith(RESERVED_PREFIXES):
        raise SettingsError(f"api_keys.header: expected a lower-case header name, got {k.header!r}")
    if k.header in RESERVED_HEADERS or k.header in ("authorization", jwt_header, update_header):
        raise SettingsError(f"api_keys.header: {k.header!r} means something else")
    if not 1 <= k.max_lifetime_days <= MAX_API_KEY_DAYS:
        raise SettingsError(f"api_keys.max_lifetime_days: expected 1-{MAX_API_KEY_DAYS}")
    if not 1 <= k.default_lifetime_days <= k.max_lifetime_days:
        raise SettingsError("api_keys.default_lifetime_days: expected 1-api_keys.max_lifetime_days")
    if not 1 <= k.touch_interval_seconds <= 86400:
        raise SettingsError("api_keys.touch_interval_seconds: expected 1-86400")


def _validate_oauth(s: Settings) -> None:
    o = s.oauth
    if not 10 <= o.access_token_lifetime_seconds <= 86400:
        raise SettingsError("oauth.access_token_lifetime_seconds: expected 10-86400 seconds")
    if not 60 <= o.refresh_token_lifetime_seconds <= 365 * 86400:
        raise SettingsError("oauth.refresh_token_lifetime_seconds: expected 60 s - 365 days")
    if not 5 <= o.code_lifetime_seconds <= 600:
        raise SettingsError("oauth.code_lifetime_seconds: expected 5-600 seconds (RFC 6749 §4.1.2)")
    if not 60 <= o.consent_lifetime_seconds <= 5 * 365 * 86400:
        raise SettingsError("oauth.consent_lifetime_seconds: expected 60 s - 5 years")
    issuer = o.issuer or s.jwt.issuer
    parts = urlsplit(issuer)
    loopback = is_loopback_host(parts.hostname or "")
    if o.enabled and (
        parts.scheme not in ("https", "http") or (parts.scheme == "http" and not loopback)
        or not parts.netloc or parts.query or parts.fragment
    ):
        raise SettingsError(
            "oauth.issuer: expected an https URL without query or fragment (RFC 8414 §2; "
            f"http only on loopback), got {issuer!r}"
        )
    for entry in o.scope_descriptions:
        scope, sep, words = entry.partition("=")
        if not sep or not scope.strip() or not words.strip():
            raise SettingsError(
                f"oauth.scope_descriptions: expected '<scope>=<description>', got {entry!r}"
            )


def _validate_mfa(s: Settings) -> None:
    m = s.mfa
    if m.mode == mfa.MfaMode.ROLES and not m.required_roles:
        raise SettingsError("mfa.required_roles: must name a role when mfa.mode is roles")
    try:
        validate_scope_tokens("roles", m.required_roles)
    except ValueError as exc:
        raise SettingsError(f"mfa.required_roles: {exc}") from None
    if s.users.backend == UserBackend.FILE and not m.file:
        raise SettingsError("mfa.file: must not be empty when users.backend is file")
    if not m.issuer or ":" in m.issuer or len(m.issuer) > 64:
        raise SettingsError("mfa.issuer: expected 1-64 characters without ':'")
    if not 60 <= m.fresh_auth_seconds <= 86400:
        raise SettingsError("mfa.fresh_auth_seconds: expected 60-86400")
    if not 30 <= m.pending_seconds <= 3600:
        raise SettingsError("mfa.pending_seconds: expected 30-3600")
    validate_passkeys(m)
