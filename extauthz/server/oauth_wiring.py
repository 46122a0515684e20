"""The composition root's OAuth part (``[oauth]``, :mod:`extauthz.oauth`): built by
:func:`build_oauth` when ``oauth.enabled`` is true. A module of its own beside ``app.py``
(which is at the size limit), with the same right to read settings.

The authorization server (Authlib and the modules over it) is imported by :func:`build_oauth`
when it is on, and only then: a node without it does not carry Authlib (tested by
tests/server/test_lazy_imports.py)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from extauthz.check.minting import JwtMinter
from extauthz.errors import SettingsError
from extauthz.login.csrf import SameSiteCheck
from extauthz.login.http import AuthHandlers
from extauthz.oauth.clients import ClientStore
from extauthz.oauth.consent import parse_descriptions
from extauthz.oauth.issuer import Lifetimes, TokenIssuer
from extauthz.oauth.metadata import metadata
from extauthz.oauth.records import MemoryOAuthRecords, OAuthRecords
from extauthz.server.client_admin import RevokeClientTokens, client_credentials_revoker
from extauthz.settings import Settings
from extauthz.store.manager import SessionManager
from extauthz.store.redis.clients import Redis
from extauthz.store.redis.oauth_records import RedisOAuthRecords

if TYPE_CHECKING:  # loaded only when oauth.enabled (module docstring)
    from extauthz.oauth.http import OAuthHandlers

__all__ = ["build_oauth"]

log = logging.getLogger("extauthz")


def build_oauth(
    settings: Settings,
    sessions: SessionManager,
    auth: AuthHandlers,
    minter: JwtMinter,
    clients: ClientStore,
    client: Redis | None,
) -> tuple[OAuthHandlers | None, RevokeClientTokens]:
    """The authorization server's routes (``None`` unless ``oauth.enabled``) over the
    registered ``clients``, its records in ``client``'s Redis when given, else in memory; and
    what removing a client revokes its tokens with (``ClientAdmin.RemoveClient``): its own
    client-credentials sessions, and with the server every token of every grant too.

    :raises SettingsError: the metadata would not be valid RFC 8414 metadata.
    """
    own_tokens = client_credentials_revoker(sessions.store)
    if not settings.oauth.enabled:
        return None, own_tokens
    from authlib.oauth2.rfc8414 import AuthorizationServerMetadata

    from extauthz.oauth.grants import build_server
    from extauthz.oauth.http import OAuthHandlers

    o = settings.oauth
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
    handlers = OAuthHandlers(
        build_server(clients, issuer), auth, minter, metadata=document,
        same_site=SameSiteCheck.with_origins(settings.auth.allowed_origins),
        scope_descriptions=descriptions,
    )

    # ending an application on the user's session page ends its whole grant (refresh too)
    auth.account.grants = issuer

    async def revoke_client_tokens(client_id: str) -> int:
        return await issuer.revoke_client_tokens(client_id) + await own_tokens(client_id)

    return handlers, revoke_client_tokens
