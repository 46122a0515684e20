"""The composition root's OAuth part (``[oauth]``, :mod:`extauthz.oauth`): built by
:func:`build_oauth` when ``oauth.enabled`` is true. A module of its own beside ``app.py``
(which is at the size limit), with the same right to read settings."""

from __future__ import annotations

import logging

from authlib.oauth2.rfc8414 import AuthorizationServerMetadata

from extauthz.check.minting import JwtMinter
from extauthz.errors import SettingsError
from extauthz.login.csrf import SameSiteCheck
from extauthz.login.http import AuthHandlers
from extauthz.oauth.clients import ClientStore, FileClientStore
from extauthz.oauth.consent import parse_descriptions
from extauthz.oauth.grants import build_server
from extauthz.oauth.http import OAuthHandlers
from extauthz.oauth.issuer import Lifetimes, TokenIssuer
from extauthz.oauth.metadata import metadata
from extauthz.oauth.records import MemoryOAuthRecords, OAuthRecords
from extauthz.settings import Settings, UserBackend
from extauthz.store.manager import SessionManager
from extauthz.store.redis.clients import Redis
from extauthz.store.redis.oauth_clients import RedisClientStore
from extauthz.store.redis.oauth_records import RedisOAuthRecords

__all__ = ["OAuthHandlers", "build_oauth"]

log = logging.getLogger("extauthz")


def build_oauth(
    settings: Settings,
    sessions: SessionManager,
    auth: AuthHandlers,
    minter: JwtMinter,
    client: Redis | None,
) -> OAuthHandlers:
    """The authorization server's routes, with its client store and records in ``client``'s
    Redis when given (records) / configured (clients), else in memory / the clients file.

    :raises SettingsError: the metadata would not be valid RFC 8414 metadata.
    """
    o = settings.oauth
    clients: ClientStore
    if o.clients_backend == UserBackend.REDIS:
        assert client is not None  # settings refuse clients_backend=redis without Redis
        clients = RedisClientStore(client, settings.store.key_prefix)
    else:
        clients = FileClientStore(o.clients_file)
    records: OAuthRecords = (
        RedisOAuthRecords(client, settings.store.key_prefix)
        if client is not None else MemoryOAuthRecords()
    )
    issuer = TokenIssuer(
        sessions, records,
        Lifetimes(
            access=o.access_token_lifetime_seconds, refresh=o.refresh_token_lifetime_seconds,
            code=o.code_lifetime_seconds, consent=o.consent_lifetime_seconds,
        ),
    )
    descriptions = parse_descriptions(o.scope_descriptions)
    document = metadata(o.issuer or settings.jwt.issuer, sorted(descriptions) or None)
    try:
        AuthorizationServerMetadata(document).validate()
    except ValueError as exc:
        if document["issuer"].startswith("https:"):
            raise SettingsError(f"oauth.issuer: the RFC 8414 metadata is invalid: {exc}") from None
        log.warning("oauth.issuer is not https (loopback only): %s", exc)
    return OAuthHandlers(
        build_server(clients, issuer), auth, minter, metadata=document,
        same_site=SameSiteCheck.with_origins(settings.auth.allowed_origins),
        scope_descriptions=descriptions,
    )
