"""OAuth 2.0 clients (RFC 6749 §2): the registered client, its secret, and where clients live.

A client has a generated ``client_id`` (RFC 6749 §2.2), a display name (shown on the consent
page), the exact redirect URIs it may use (§3.1.2), the scopes it may ever be granted (§3.3)
and a type (§2.1): *confidential* clients get a 256-bit random secret, shown once and stored
only as an argon2id hash with the same parameters as user passwords
(:data:`~extauthz.login.users.passwords.PRODUCTION_PARAMETERS`); *public* clients get none and
rely on PKCE. Client secrets are never logged.

Redirect URIs follow :mod:`extauthz.oauth.redirect_uris` (exact, ``https`` or loopback
``http``, no fragment, userinfo or wildcard).
"""

from __future__ import annotations

import logging
import math
import os
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from argon2 import PasswordHasher, Type, extract_parameters
from argon2.exceptions import InvalidHashError, VerificationError

from extauthz.errors import ExtauthzError, StoreUnavailable
from extauthz.login.users.passwords import PRODUCTION_PARAMETERS
from extauthz.oauth.redirect_uris import validate_redirect_uris
from extauthz.recordfile import RecordFile, list_field
from extauthz.scopes import validate_scope_tokens

log = logging.getLogger("extauthz.oauth.clients")

NAME_MAX = 100
SCOPES_MAX = 100
SECRET_MAX = 256
"""Longer presented secrets are refused without hashing (ours are 43 characters)."""
CLIENT_ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,64}")
"""Generated ids are ``secrets.token_urlsafe(16)`` (22 characters); stored ones may be 1-64."""
FILE_VERSION = 1

_hasher = PRODUCTION_PARAMETERS.hasher()


class ClientStoreError(ExtauthzError):
    """A client store holds data that cannot be read (a bad file, a malformed record).

    The message names the source (file path or key) and the entry.
    """


# what a ClientStore raises when it cannot answer (see ClientStore)
CLIENT_STORE_ERRORS: tuple[type[Exception], ...] = (StoreUnavailable, ClientStoreError, OSError)


def validate_client_name(name: object) -> str:
    """Return ``name`` if it is 1-100 printable characters without surrounding spaces;
    raise ``ValueError`` saying why not."""
    if not isinstance(name, str):
        raise ValueError(f"client name must be a string, not {type(name).__name__}")
    if not 1 <= len(name) <= NAME_MAX or not name.isprintable() or name != name.strip():
        raise ValueError(
            f"invalid client name {name[:120]!r}: use 1-{NAME_MAX} printable characters, "
            "not starting or ending with a space"
        )
    return name


def validate_client_scopes(scopes: Iterable[str]) -> tuple[str, ...]:
    """1-100 RFC 6749 §3.3 scope tokens, deduplicated in order; ``ValueError`` otherwise."""
    out = validate_scope_tokens("scopes", scopes)
    if not 1 <= len(out) <= SCOPES_MAX:
        raise ValueError(f"a client needs 1-{SCOPES_MAX} scopes")
    return out


def _validate_secret_hash(secret_hash: object) -> str:
    if not isinstance(secret_hash, str):
        raise ValueError("secret_hash must be a string")
    try:
        params = extract_parameters(secret_hash)
    except InvalidHashError:
        raise ValueError("secret_hash is not an argon2id PHC string ($argon2id$v=19$...)") from None
    if params.type is not Type.ID:
        raise ValueError("secret_hash must be argon2id (RFC 9106)")
    return secret_hash


@dataclass(frozen=True)
class OAuthClient:
    """A registered OAuth 2.0 client (RFC 6749 §2). Validated on construction (``ValueError``).

    ``created_at`` is seconds since the epoch. A confidential client has a ``secret_hash``
    (argon2id PHC string), a public one has none. A public client needs at least one
    redirect URI (it can only use the authorization code flow); a confidential client without
    one can only use the client credentials grant (RFC 6749 §4.4). ``repr`` leaves the hash out.
    """

    client_id: str
    name: str
    redirect_uris: tuple[str, ...]
    scopes: tuple[str, ...]
    confidential: bool
    secret_hash: str | None = field(default=None, repr=False)
    created_at: float = 0.0

    def __post_init__(self) -> None:
        if not isinstance(self.client_id, str) or not CLIENT_ID_PATTERN.fullmatch(self.client_id):
            raise ValueError("client_id must be 1-64 characters of A-Z a-z 0-9 _ -")
        validate_client_name(self.name)
        object.__setattr__(self, "redirect_uris", validate_redirect_uris(self.redirect_uris))
        object.__setattr__(self, "scopes", validate_client_scopes(self.scopes))
        if not isinstance(self.confidential, bool):
            raise ValueError("confidential must be true or false")
        if self.confidential:
            _validate_secret_hash(self.secret_hash)
        else:
            if self.secret_hash is not None:
                raise ValueError("a public client has no secret")
            if not self.redirect_uris:
                raise ValueError("a public client needs at least one redirect URI")
        if (
            isinstance(self.created_at, bool)
            or not isinstance(self.created_at, int | float)
            or not math.isfinite(self.created_at)
            or self.created_at < 0
        ):
            raise ValueError("created_at must be a finite number of seconds >= 0")
        object.__setattr__(self, "created_at", float(self.created_at))

    def verify_secret(self, secret: str) -> bool:
        """``True`` if ``secret`` is this client's secret (RFC 6749 §2.3.1).

        One argon2id verification (constant-time comparison); ``False`` without hashing for a
        public client, a non-string or a secret longer than :data:`SECRET_MAX`. CPU- and
        memory-bound (about 50-150 ms and 64 MiB at production parameters) and blocking: from
        the event loop, call it in a worker thread and bound how many run at once.
        """
        if not self.confidential or self.secret_hash is None:
            return False
        if not isinstance(secret, str) or not 1 <= len(secret) <= SECRET_MAX:
            return False
        try:
            return bool(_hasher.verify(self.secret_hash, secret))
        except VerificationError:  # includes VerifyMismatchError
            return False
        except InvalidHashError:
            log.error("client %s has an unreadable secret hash", self.client_id)
            return False

    @property
    def client_type(self) -> str:
        """``"confidential"`` or ``"public"`` (RFC 6749 §2.1)."""
        return "confidential" if self.confidential else "public"


def _new_client_id() -> str:
    """``secrets.token_urlsafe(16)``, drawn again when it starts with ``-`` (a command line
    would read it as an option)."""
    for _ in range(32):  # a draw starts with "-" once in 64
        client_id = secrets.token_urlsafe(16)
        if not client_id.startswith("-"):
            return client_id
    raise RuntimeError("no usable client id in 32 draws: the random source is broken")


def new_client(
    name: str,
    redirect_uris: Iterable[str],
    scopes: Iterable[str],
    *,
    confidential: bool,
    now: float,
    hasher: PasswordHasher | None = None,
) -> tuple[OAuthClient, str | None]:
    """A new client with a fresh ``client_id`` (22 base64url characters, never starting with
    ``-``), and the plaintext secret to show once (``None`` for a public client). The secret
    is 256 random bits, base64url (43 characters).

    ``hasher`` (optional, argon2id) replaces the production parameters, for tests. Hashing is
    CPU-bound and blocking. Raises ``ValueError`` on a bad name, redirect URI or scope token.
    """
    chosen = hasher if hasher is not None else _hasher
    if chosen.type is not Type.ID:
        raise ValueError(f"client secret hasher must use argon2id (RFC 9106), not {chosen.type}")
    # validate before the (slow) hashing; generators are read once
    validate_client_name(name)
    uris = validate_redirect_uris(redirect_uris)
    granted = validate_client_scopes(scopes)
    secret = secrets.token_urlsafe(32) if confidential else None
    client = OAuthClient(
        client_id=_new_client_id(),
        name=name,
        redirect_uris=uris,
        scopes=granted,
        confidential=confidential,
        secret_hash=chosen.hash(secret) if secret is not None else None,
        created_at=now,
    )
    return client, secret


class ClientStore(Protocol):
    """Where clients live, keyed by ``client_id``.

    ``get`` answers ``None`` and ``remove`` ``False`` for an id that is not of the
    :data:`CLIENT_ID_PATTERN` shape, without asking the store (ids come from requests).
    Store failures propagate, as one of :data:`CLIENT_STORE_ERRORS`: ``OSError`` or
    :class:`ClientStoreError` from a file, :class:`~extauthz.errors.StoreUnavailable` from a
    store that does not answer; callers map them to "unavailable" (503), never to a refusal.
    """

    async def get(self, client_id: str) -> OAuthClient | None: ...

    async def put(self, client: OAuthClient) -> None:
        """Create or replace the client with this ``client_id``."""

    async def remove(self, client_id: str) -> bool:
        """Delete the client; ``True`` if it existed. Its tokens are the caller's to revoke."""

    async def list(self) -> list[OAuthClient]:
        """Every client, sorted by ``(created_at, client_id)``."""


def is_client_id(client_id: object) -> bool:
    """Whether ``client_id`` has the shape of a client id (any string may arrive in a request)."""
    return isinstance(client_id, str) and CLIENT_ID_PATTERN.fullmatch(client_id) is not None


def sorted_clients(clients: Iterable[OAuthClient]) -> list[OAuthClient]:
    """``clients`` in :meth:`ClientStore.list` order: oldest first, then by id."""
    return sorted(clients, key=lambda c: (c.created_at, c.client_id))


class MemoryClientStore:
    """A :class:`ClientStore` in a dict: tests, demos, single-process setups without a file."""

    def __init__(self, clients: Iterable[OAuthClient] = ()) -> None:
        self._clients = {c.client_id: c for c in clients}

    async def get(self, client_id: str) -> OAuthClient | None:
        return self._clients.get(client_id) if is_client_id(client_id) else None

    async def put(self, client: OAuthClient) -> None:
        if not isinstance(client, OAuthClient):
            raise ValueError("put takes an OAuthClient")
        self._clients[client.client_id] = client

    async def remove(self, client_id: str) -> bool:
        return is_client_id(client_id) and self._clients.pop(client_id, None) is not None

    async def list(self) -> list[OAuthClient]:
        return sorted_clients(self._clients.values())


_ENTRY_KEYS = {"name", "redirect_uris", "scopes", "confidential", "secret_hash", "created_at"}


def client_from_fields(client_id: str, entry: dict[str, Any]) -> OAuthClient:
    """An :class:`OAuthClient` from its stored fields (a file entry, a decoded Redis record):
    the keys of :func:`client_fields`. ``ValueError`` saying what is wrong."""
    unknown = set(entry) - _ENTRY_KEYS
    missing = {"name", "confidential"} - set(entry)
    if unknown or missing:
        raise ValueError(
            f"unknown keys {sorted(unknown)}" if unknown else f"missing keys {sorted(missing)}"
        )
    return OAuthClient(
        client_id=client_id,
        name=entry["name"],
        redirect_uris=tuple(list_field(entry, "redirect_uris")),
        scopes=tuple(list_field(entry, "scopes")),
        confidential=entry["confidential"],
        secret_hash=entry.get("secret_hash"),
        created_at=entry.get("created_at", 0.0),
    )


def client_fields(client: OAuthClient) -> dict[str, Any]:
    """The stored fields of ``client`` (everything but ``client_id``, which is the key)."""
    return {
        "name": client.name,
        "redirect_uris": list(client.redirect_uris),
        "scopes": list(client.scopes),
        "confidential": client.confidential,
        "secret_hash": client.secret_hash,
        "created_at": client.created_at,
    }


class FileClientStore:
    """Clients in one JSON file (``{"version": 1, "clients": {client_id: {...}}}``), mode 0600,
    managed by ``extauthz clients`` (:class:`~extauthz.recordfile.RecordFile`: atomic writes
    under a ``flock``, re-read when the file changed, so a running server sees CLI edits).

    Raises :class:`ClientStoreError` for a bad file, ``OSError`` for I/O failures.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._file = RecordFile(
            path, version=FILE_VERSION, section="clients", noun="client",
            parse=client_from_fields, dump=client_fields, error=ClientStoreError, log=log,
        )

    @property
    def path(self) -> Path:
        return self._file.path

    async def get(self, client_id: str) -> OAuthClient | None:
        return (await self._file.read()).get(client_id) if is_client_id(client_id) else None

    async def put(self, client: OAuthClient) -> None:
        if not isinstance(client, OAuthClient):
            raise ValueError("put takes an OAuthClient")

        def change(clients: dict[str, OAuthClient]) -> bool:
            clients[client.client_id] = client
            return True

        await self._file.modify(change)

    async def remove(self, client_id: str) -> bool:
        if not is_client_id(client_id):
            return False
        return await self._file.modify(lambda clients: clients.pop(client_id, None) is not None)

    async def list(self) -> list[OAuthClient]:
        return sorted_clients((await self._file.read()).values())
