"""``extauthz.v1.ApiKeyAdmin`` (``protos/extauthz/v1/admin.proto``): API keys for machine
clients, behind the same admin token as ``SessionAdmin``
(:class:`~extauthz.server.admin.AdminGuard`).

An API key is a session record of kind ``"api_key"``
(:meth:`~extauthz.store.manager.SessionManager.create`): its token (``xak_…``) is returned once
and stored only as its hash; its ``sid`` is the key id; ``data`` holds ``{"name": …}``; its
lifetime is fixed (never slides) and bounded (``api_keys.max_lifetime_days``); its
``last_seen`` is its last use. Revocation goes through the store's ordinary revocation, so every
node refuses the key at once. Docs: docs/authentication.md, 'API keys'.
"""

from __future__ import annotations

import logging

from extauthz._proto.extauthz.v1 import admin_pb2, admin_pb2_grpc
from extauthz.server.admin import AdminGuard, CallContext, _call, _timestamp
from extauthz.store.manager import SessionManager, printable
from extauthz.store.model import Session

log = logging.getLogger("extauthz.admin")

KIND = "api_key"
MAX_NAME_CHARS = 100
DAY_SECONDS = 86400


def validate_key_name(name: str) -> str:
    """An API key's name: 1-100 characters, none of them a control character, a line
    separator or a bidirectional control (names land in logs and listings).

    :raises ValueError: not such a name.
    """
    if not 1 <= len(name) <= MAX_NAME_CHARS:
        raise ValueError(f"name must be 1-{MAX_NAME_CHARS} characters")
    if printable(name) != name:
        raise ValueError("name must not contain control characters")
    return name


def lifetime_seconds(requested: int, *, default_days: int, max_days: int) -> int:
    """The lifetime of a new key: ``requested`` seconds, or ``default_days`` when 0.

    :raises ValueError: negative, or over ``max_days`` (``api_keys.max_lifetime_days``).
    """
    if requested < 0:
        raise ValueError("lifetime_seconds must not be negative")
    lifetime = requested or default_days * DAY_SECONDS
    if lifetime > max_days * DAY_SECONDS:
        raise ValueError(
            f"an API key may live at most {max_days} days (api_keys.max_lifetime_days); "
            f"asked for {lifetime / DAY_SECONDS:g} days"
        )
    return lifetime


def api_key_message(session: Session) -> admin_pb2.ApiKey:
    name = session.data.get("name")
    message = admin_pb2.ApiKey(
        key_id=session.sid,
        sub=session.sub,
        name=name if isinstance(name, str) else "",
        scopes=list(session.scopes),
        created_at=_timestamp(session.created_at),
        expires_at=_timestamp(session.expires_at),
    )
    if session.last_seen != session.created_at:  # used at least once
        message.last_used_at.CopyFrom(_timestamp(session.last_seen))
    return message


class ApiKeyAdminServicer(admin_pb2_grpc.ApiKeyAdminServicer):
    """Creates, lists and revokes API keys; lifetimes in days as the ``api_keys`` settings."""

    def __init__(
        self,
        sessions: SessionManager,
        guard: AdminGuard,
        default_lifetime_days: int = 90,
        max_lifetime_days: int = 365,
    ) -> None:
        self._sessions = sessions
        self._guard = guard
        self._default_days = default_lifetime_days
        self._max_days = max_lifetime_days

    async def CreateApiKey(
        self, request: admin_pb2.CreateApiKeyRequest, context: CallContext
    ) -> admin_pb2.CreateApiKeyResponse:
        async def run() -> admin_pb2.CreateApiKeyResponse:
            lifetime = lifetime_seconds(
                request.lifetime_seconds,
                default_days=self._default_days,
                max_days=self._max_days,
            )
            key, session = await self._sessions.create(
                request.sub,
                scopes=request.scopes,
                data={"name": validate_key_name(request.name)},
                kind=KIND,
                lifetime_seconds=lifetime,
            )
            log.info(
                "API key created key_id=%s sub=%s expires_in=%ds",
                session.sid,
                session.sub,
                lifetime,
            )
            return admin_pb2.CreateApiKeyResponse(api_key=key, key=api_key_message(session))

        return await _call(context, self._guard, run)

    async def ListApiKeys(
        self, request: admin_pb2.ListApiKeysRequest, context: CallContext
    ) -> admin_pb2.ListApiKeysResponse:
        async def run() -> admin_pb2.ListApiKeysResponse:
            sessions = await self._sessions.store.list_subject(request.sub)
            keys = [api_key_message(s) for s in sessions if s.kind == KIND]
            return admin_pb2.ListApiKeysResponse(keys=keys)

        return await _call(context, self._guard, run)

    async def RevokeApiKey(
        self, request: admin_pb2.RevokeApiKeyRequest, context: CallContext
    ) -> admin_pb2.RevokeApiKeyResponse:
        async def run() -> admin_pb2.RevokeApiKeyResponse:
            # only a key: a login session or an application's token is not revoked here
            found = await self._sessions.store.get_by_sid(request.key_id)
            revoked = None
            if found is not None and found.kind == KIND:
                revoked = await self._sessions.store.revoke_sid(request.key_id)
            log.info(
                "API key revoked key_id=%s found=%s",
                printable(request.key_id),
                revoked is not None,
            )
            return admin_pb2.RevokeApiKeyResponse(revoked=revoked is not None)

        return await _call(context, self._guard, run)
