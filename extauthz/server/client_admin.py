"""``extauthz.v1.ClientAdmin``: OAuth 2.0 client registration over the admin API
(``protos/extauthz/v1/admin.proto``), behind the same admin token as ``SessionAdmin``
(:class:`~extauthz.server.admin.AdminGuard`).

``AddClient`` answers the client secret once; nothing answers it or its hash again, and
nothing logs it. ``RemoveClient`` removes the client first (no new grant can name it), then
revokes every token issued to it through the ``revoke_client_tokens`` it was given.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

import grpc
from argon2 import PasswordHasher

from extauthz._proto.extauthz.v1 import admin_pb2, admin_pb2_grpc
from extauthz.oauth.clients import (
    CLIENT_STORE_ERRORS,
    ClientStore,
    OAuthClient,
    is_client_id,
    new_client,
)
from extauthz.server.admin import AdminGuard, CallContext, _timestamp
from extauthz.store.model import SessionStore

log = logging.getLogger("extauthz.admin")

T = TypeVar("T")

RevokeClientTokens = Callable[[str], Awaitable[int]]
"""``revoke(client_id)``: revoke every token issued to the client; answers how many.
Raises :class:`~extauthz.errors.StoreUnavailable` when the store cannot answer."""


def client_message(client: OAuthClient) -> admin_pb2.OAuthClient:
    """The client as the admin API shows it: never its secret or the secret's hash."""
    return admin_pb2.OAuthClient(
        client_id=client.client_id,
        name=client.name,
        redirect_uris=list(client.redirect_uris),
        scopes=list(client.scopes),
        confidential=client.confidential,
        created_at=_timestamp(client.created_at),
    )


def client_credentials_revoker(store: SessionStore) -> RevokeClientTokens:
    """Revokes the access tokens a client holds for itself (client credentials grant, RFC 6749
    §4.4): the ``kind="oauth"`` sessions of subject ``client:<client_id>`` issued to that
    client. Tokens that users granted the client are not covered: the OAuth server adds its
    own revocation of those (and of refresh tokens) in the composition root."""

    async def revoke(client_id: str) -> int:
        count = 0
        for session in await store.list_subject(f"client:{client_id}"):
            if session.kind == "oauth" and session.client_id == client_id:
                count += await store.revoke_sid(session.sid) is not None
        return count

    return revoke


class ClientAdminServicer(admin_pb2_grpc.ClientAdminServicer):
    """``AddClient``, ``ListClients``, ``RemoveClient``.

    Status codes: ``UNAUTHENTICATED``/``PERMISSION_DENIED`` from the guard;
    ``INVALID_ARGUMENT`` for a bad name, redirect URI, scope or client id (the message says
    which); ``UNAVAILABLE`` when the client store (a bad or unreadable file too) or the
    session store cannot answer (one of
    :data:`~extauthz.oauth.clients.CLIENT_STORE_ERRORS`).
    ``hasher`` (argon2id) replaces the production parameters, for tests; hashing runs in a
    worker thread.
    """

    def __init__(
        self,
        clients: ClientStore,
        guard: AdminGuard,
        revoke_client_tokens: RevokeClientTokens,
        *,
        clock: Callable[[], float],
        hasher: PasswordHasher | None = None,
    ) -> None:
        self._clients = clients
        self._guard = guard
        self._revoke = revoke_client_tokens
        self._clock = clock
        self._hasher = hasher

    async def _call(self, context: CallContext, fn: Callable[[], Awaitable[T]]) -> T:
        await self._guard.check(context)
        try:
            return await fn()
        except CLIENT_STORE_ERRORS as exc:  # from the client store or the token revocation
            log.warning("client admin call failed: %s", exc)
            await context.abort(grpc.StatusCode.UNAVAILABLE, "client or session store unavailable")
        except ValueError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        raise AssertionError("unreachable")  # abort() always raises

    async def AddClient(
        self, request: admin_pb2.AddClientRequest, context: CallContext
    ) -> admin_pb2.AddClientResponse:
        async def run() -> admin_pb2.AddClientResponse:
            client, secret = await asyncio.to_thread(
                new_client,
                request.name,
                list(request.redirect_uris),
                list(request.scopes),
                confidential=not request.public_client,
                now=self._clock(),
                hasher=self._hasher,
            )
            await self._clients.put(client)
            log.info(
                "oauth client added client_id=%s type=%s", client.client_id, client.client_type
            )
            return admin_pb2.AddClientResponse(
                client=client_message(client), client_secret=secret or ""
            )

        return await self._call(context, run)

    async def ListClients(
        self, request: admin_pb2.ListClientsRequest, context: CallContext
    ) -> admin_pb2.ListClientsResponse:
        async def run() -> admin_pb2.ListClientsResponse:
            clients = await self._clients.list()
            return admin_pb2.ListClientsResponse(clients=[client_message(c) for c in clients])

        return await self._call(context, run)

    async def RemoveClient(
        self, request: admin_pb2.RemoveClientRequest, context: CallContext
    ) -> admin_pb2.RemoveClientResponse:
        async def run() -> admin_pb2.RemoveClientResponse:
            client_id = request.client_id
            if not is_client_id(client_id):
                raise ValueError("client_id must be 1-64 characters of A-Z a-z 0-9 _ -")
            removed = await self._clients.remove(client_id)
            # also when it was not registered (any more): a retry finishes a failed revocation
            revoked = await self._revoke(client_id)
            log.info(
                "oauth client removed client_id=%s found=%s tokens_revoked=%d",
                client_id, removed, revoked,
            )
            return admin_pb2.RemoveClientResponse(removed=removed, tokens_revoked=revoked)

        return await self._call(context, run)


def add_client_admin(server: grpc.aio.Server, servicer: ClientAdminServicer) -> str:
    """Register ``servicer`` on ``server``; returns the service's full name (for reflection)."""
    admin_pb2_grpc.add_ClientAdminServicer_to_server(servicer, server)
    return str(admin_pb2.DESCRIPTOR.services_by_name["ClientAdmin"].full_name)
