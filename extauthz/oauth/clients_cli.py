"""The ``extauthz clients`` command: register, list and remove OAuth 2.0 clients.

Two ways to reach the registry, same output:

- directly, in the client store of the settings file (``--config``, and ``EXTAUTHZ_*``
  variables as for ``serve``): the JSON file ``oauth_clients.file`` or the session store's
  Redis (``[oauth_clients] backend``). A running node sees the change at its next read.
  ``remove`` this way leaves the tokens already issued to the client valid until they expire;
- through a running node's admin API (``--target HOST:PORT`` with the admin token): ``remove``
  there also revokes every token issued to the client, at once.

Output: ``add`` prints ``client_id=<id>`` and, for a confidential client, once,
``client_secret=<secret>``; ``list`` prints one line per client, tab-separated
(``<id> name=<name> type=confidential|public scopes=<a b> redirect_uris=<u1 u2>``), never a
secret or its hash.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Protocol, TextIO, TypeVar

import grpc
from argon2 import PasswordHasher

from extauthz._proto.extauthz.v1 import admin_pb2, admin_pb2_grpc
from extauthz.errors import StoreUnavailable
from extauthz.oauth.clients import (
    ClientStore,
    ClientStoreError,
    OAuthClient,
    is_client_id,
    new_client,
)

T = TypeVar("T")


@dataclass(frozen=True)
class ClientLine:
    """What ``list`` shows of a client (never its secret or hash)."""

    client_id: str
    name: str
    confidential: bool
    scopes: tuple[str, ...]
    redirect_uris: tuple[str, ...]

    def __str__(self) -> str:
        kind = "confidential" if self.confidential else "public"
        return (
            f"{self.client_id}\tname={self.name}\ttype={kind}\tscopes={' '.join(self.scopes)}"
            f"\tredirect_uris={' '.join(self.redirect_uris)}"
        )


class Registry(Protocol):
    """Where the command registers clients: a store, or a node's ``ClientAdmin``."""

    async def add(self, name: str, redirect_uris: list[str], scopes: list[str],
                  public: bool) -> tuple[ClientLine, str | None]: ...

    async def list(self) -> list[ClientLine]: ...

    async def remove(self, client_id: str) -> tuple[bool, int | None]:
        """(whether it was registered, the tokens revoked or ``None`` when none were)."""


def _line(c: OAuthClient | admin_pb2.OAuthClient) -> ClientLine:
    return ClientLine(
        c.client_id, c.name, c.confidential, tuple(c.scopes), tuple(c.redirect_uris)
    )


class StoreRegistry:
    """Clients straight in a :class:`~extauthz.oauth.clients.ClientStore`."""

    def __init__(self, store: ClientStore, *, hasher: PasswordHasher | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self._store, self._hasher, self._clock = store, hasher, clock

    async def add(self, name: str, redirect_uris: list[str], scopes: list[str],
                  public: bool) -> tuple[ClientLine, str | None]:
        client, secret = await asyncio.to_thread(
            new_client, name, redirect_uris, scopes, confidential=not public,
            now=self._clock(), hasher=self._hasher,
        )
        await self._store.put(client)
        return _line(client), secret

    async def list(self) -> list[ClientLine]:
        return [_line(c) for c in await self._store.list()]

    async def remove(self, client_id: str) -> tuple[bool, int | None]:
        return await self._store.remove(client_id), None


class AdminRegistry:
    """Clients through a node's ``extauthz.v1.ClientAdmin``; ``INVALID_ARGUMENT`` becomes
    ``ValueError``, other gRPC errors propagate (``grpc.RpcError``)."""

    def __init__(self, stub: admin_pb2_grpc.ClientAdminStub,
                 metadata: list[tuple[str, str]], timeout: float) -> None:
        self._stub, self._kw = stub, {"metadata": metadata, "timeout": timeout}

    async def add(self, name: str, redirect_uris: list[str], scopes: list[str],
                  public: bool) -> tuple[ClientLine, str | None]:
        request = admin_pb2.AddClientRequest(
            name=name, redirect_uris=redirect_uris, scopes=scopes, public_client=public
        )
        reply = await self._invalid_as_value_error(self._stub.AddClient(request, **self._kw))
        return _line(reply.client), reply.client_secret or None

    async def list(self) -> list[ClientLine]:
        reply = await self._stub.ListClients(admin_pb2.ListClientsRequest(), **self._kw)
        return [_line(c) for c in reply.clients]

    async def remove(self, client_id: str) -> tuple[bool, int | None]:
        request = admin_pb2.RemoveClientRequest(client_id=client_id)
        reply = await self._invalid_as_value_error(self._stub.RemoveClient(request, **self._kw))
        return reply.removed, reply.tokens_revoked

    @staticmethod
    async def _invalid_as_value_error(call: Awaitable[T]) -> T:
        try:
            return await call
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.INVALID_ARGUMENT:
                raise ValueError(exc.details()) from None
            raise


@asynccontextmanager
async def store_registry(
    store: AbstractAsyncContextManager[ClientStore], hasher: PasswordHasher | None = None
) -> AsyncIterator[Registry]:
    async with store as opened:
        yield StoreRegistry(opened, hasher=hasher)


@asynccontextmanager
async def admin_registry(
    target: str, metadata: list[tuple[str, str]], timeout: float
) -> AsyncIterator[Registry]:
    async with grpc.aio.insecure_channel(target) as channel:
        yield AdminRegistry(admin_pb2_grpc.ClientAdminStub(channel), metadata, timeout)


def add_clients_parser(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
) -> argparse.ArgumentParser:
    """Add ``clients add|list|remove`` to a CLI; returns the ``clients`` parser (its ``func``
    is the caller's to set, as it reads the settings: see ``extauthz.cli``)."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", help="settings TOML file naming the client store "
                        "([oauth_clients]; EXTAUTHZ_* variables override it)")
    common.add_argument("--target", help="go through this running node's admin API "
                        "(HOST:PORT) instead of the store; remove then revokes the tokens too")
    common.add_argument(
        "--admin-token-file", default=os.environ.get("EXTAUTHZ_ADMIN_TOKEN_FILE"),
        help="with --target: the admin token file (default: $EXTAUTHZ_ADMIN_TOKEN_FILE)",
    )
    common.add_argument("--timeout", type=float, default=10.0, help="seconds, with --target")

    clients = subparsers.add_parser("clients", help="register OAuth 2.0 clients")
    actions = clients.add_subparsers(dest="clients_command", required=True, metavar="ACTION")
    add = actions.add_parser("add", parents=[common], help="register a client; prints its "
                             "client_id and, once, its secret")
    add.add_argument("--name", required=True, help="shown on the consent page")
    add.add_argument("--redirect-uri", action="append", default=[], metavar="URI",
                     help="an exact redirect URI (https, or http on loopback); repeatable")
    add.add_argument("--scope", action="append", default=[], required=True, metavar="SCOPE",
                     help="a scope the client may be granted; repeatable")
    add.add_argument("--public", action="store_true",
                     help="a public client (no secret; authorization code with PKCE only)")
    actions.add_parser("list", parents=[common], help="list clients (never a secret)")
    remove = actions.add_parser("remove", parents=[common], help="remove a client")
    remove.add_argument("client_id", metavar="ID")
    return clients


def run_clients_command(
    args: argparse.Namespace,
    registry: AbstractAsyncContextManager[Registry],
    *,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    """Run a parsed ``clients`` command against ``registry``; return the exit status.

    Synchronous (runs its own event loop). 0: done; 1: the command failed (unknown client,
    a store that cannot answer, a bad client file); 2: invalid input (name, redirect URI,
    scope, client id). gRPC errors from a node other than ``INVALID_ARGUMENT`` propagate.
    """
    out, err = stdout or sys.stdout, stderr or sys.stderr
    try:
        return asyncio.run(_run(args, registry, out, err))
    except ValueError as exc:
        print(f"extauthz clients: error: {exc}", file=err)
        return 2
    except (ClientStoreError, StoreUnavailable, OSError) as exc:
        print(f"extauthz clients: error: {exc}", file=err)
        return 1


async def _run(args: argparse.Namespace, registry: AbstractAsyncContextManager[Registry],
               out: TextIO, err: TextIO) -> int:
    command = args.clients_command
    if command == "remove" and not is_client_id(args.client_id):
        raise ValueError("a client id is 1-64 characters of A-Z a-z 0-9 _ -")
    async with registry as clients:
        if command == "add":
            line, secret = await clients.add(args.name, args.redirect_uri, args.scope,
                                             args.public)
            print(f"client_id={line.client_id}", file=out)
            if secret is not None:
                print(f"client_secret={secret}", file=out)
                print("extauthz clients: the client secret is shown only now; a lost secret "
                      "means registering a new client", file=err)
            return 0
        if command == "list":
            for line in await clients.list():
                print(line, file=out)
            return 0
        removed, revoked = await clients.remove(args.client_id)
    tokens = "" if revoked is None else f"; revoked {revoked} tokens"
    if not removed:
        print(f"extauthz clients: error: no client {args.client_id!r}{tokens}", file=err)
        return 1
    print(f"removed {args.client_id}{tokens}", file=out)
    if revoked is None:
        print("extauthz clients: tokens already issued to it stay valid until they expire; "
              "remove a client with --target (a running node) to revoke them at once", file=err)
    return 0
