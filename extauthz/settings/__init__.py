"""Settings: one frozen object built once at start-up.

Sources, later ones win:

1. defaults (the dataclass field defaults in :mod:`extauthz.settings.model`);
2. a TOML file (``extauthz serve --config FILE``), tables named after the sections;
3. environment variables ``EXTAUTHZ_<SECTION>_<KEY>`` (upper case), e.g.
   ``EXTAUTHZ_STORE_REDIS_URL=redis://127.0.0.1:6390/0``. Lists are comma separated.

Nothing here reads the environment at import time. A bad value raises
:class:`~extauthz.errors.SettingsError` whose message is one line naming the key
(``store.redis_url``) and what is wrong with it (:mod:`extauthz.settings.loading`,
:mod:`extauthz.settings.validation`).
"""

from __future__ import annotations

from extauthz.settings.loading import load_settings
from extauthz.settings.mfa import MfaMode, MfaSettings
from extauthz.settings.model import (
    AdminSettings,
    AuthSettings,
    CacheSettings,
    ClientBackend,
    DenySettings,
    JwtSettings,
    OAuthClientsSettings,
    OAuthSettings,
    RateLimitSettings,
    ServerSettings,
    SessionSettings,
    SessionUpdateSettings,
    Settings,
    StoreSettings,
    UserBackend,
    UsersSettings,
)
from extauthz.strategies import StoreBackend, StoreStrategy

__all__ = [
    "AdminSettings",
    "AuthSettings",
    "CacheSettings",
    "ClientBackend",
    "DenySettings",
    "JwtSettings",
    "MfaMode",
    "MfaSettings",
    "OAuthClientsSettings",
    "OAuthSettings",
    "RateLimitSettings",
    "ServerSettings",
    "SessionSettings",
    "SessionUpdateSettings",
    "Settings",
    "StoreBackend",
    "StoreSettings",
    "StoreStrategy",
    "UserBackend",
    "UsersSettings",
    "load_settings",
]
