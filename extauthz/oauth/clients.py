"""OAuth 2.0 clients (RFC 6749 §2): the registered client, its secret, and where clients live.

A client has a generated ``client_id`` (RFC 6749 §2.2), a display name (shown on the consent
page), the exact redirect URIs it may use (§3.1.2), the scopes it may ever be granted (§3.3)
and a type (§2.1): *confidential* clients get a 256-bit random secret, shown once and stored
only as an argon2id hash with the same parameters as user passwords
(:data:`~extauthz.login.users.passwords.PRODUCTION_PARAMETERS`); *public* clients get none and
rely on PKCE. Client secrets are never logged.

Redirect URI rules (checked by :func:`validate_redirect_uri`): absolute, ``https`` (or ``http``
on a loopback host only: ``127.0.0.0/8``, ``[::1]``, ``localhost``, RFC 8252 §7.3), no fragment
(RFC 6749 §3.1.2), no userinfo, no wildcard ``*``, no backslash, space, control or non-ASCII
character, at most :data:`REDIRECT_URI_MAX` characters and :data:`REDIRECT_URIS_MAX` URIs per
client. They are compared by exact string match.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol
from urllib.parse import urlsplit

from argon2 import PasswordHasher, Type, extract_parameters
from argon2.exceptions import InvalidHashError, VerificationError

from extauthz.errors import ExtauthzError, StoreUnavailable
from extauthz.login.users.passwords import PRODUCTION_PARAMETERS
from extauthz.scopes import validate_scope_tokens

log = logging.getLogger("extauthz.oauth.clients")

NAME_MAX = 100
REDIRECT_URI_MAX = 2000
REDIRECT_URIS_MAX = 10
SCOPES_MAX = 100
SECRET_MAX = 256
"""Longer presented secrets are refused without hashing (ours are 43 characters)."""
CLIENT_ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,64}")
"""Generated ids are ``secrets.token_urlsafe(16)`` (22 characters); stored ones may be 1-64."""

# RFC 3986 §2 characters, without '#' (no fragment) and '*' (no wildcard)
_URI_CHARS = re.compile(r"[A-Za-z0-9\-._~:/?\[\]@!$&'()+,;=%]+")
_BAD_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")
_DNS_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")

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


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_host(host: str, bracketed: bool) -> None:
    if bracketed:
        if "%" in host:
            raise ValueError("an IPv6 zone id is not allowed")
        ipaddress.IPv6Address(host)  # ValueError if not an address
        return
    labels = host.split(".")
    if labels[-1].isdigit():  # looks numeric: only a dotted-quad IPv4 address, no "127.1"
        ipaddress.IPv4Address(host)
        return
    if len(host) > 253 or not all(_DNS_LABEL.fullmatch(label) for label in labels):
        raise ValueError(f"invalid host {host!r}")


def validate_redirect_uri(uri: object) -> str:
    """Return ``uri`` if it may be registered as a redirect URI (rules in the module docstring,
    RFC 6749 §3.1.2, RFC 8252 §7.3 and §8.3); raise ``ValueError`` saying why not."""
    if not isinstance(uri, str):
        raise ValueError(f"redirect URI must be a string, not {type(uri).__name__}")
    shown = repr(uri[:120])
    if not 1 <= len(uri) <= REDIRECT_URI_MAX:
        raise ValueError(f"redirect URI {shown} must be 1-{REDIRECT_URI_MAX} characters")
    if "#" in uri:
        raise ValueError(f"redirect URI {shown} must not have a fragment (RFC 6749 §3.1.2)")
    if "*" in uri:
        raise ValueError(f"redirect URI {shown} must not contain a wildcard '*': exact URIs only")
    if not _URI_CHARS.fullmatch(uri) or _BAD_PERCENT.search(uri):
        raise ValueError(
            f"redirect URI {shown} has a character that is not allowed in a URI "
            "(backslash, space, control, non-ASCII or a bad %-escape)"
        )
    try:
        parts = urlsplit(uri)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"redirect URI {shown} does not parse: {exc}") from None
    if parts.scheme not in ("https", "http") or not uri.startswith(parts.scheme + "://"):
        raise ValueError(
            f"redirect URI {shown} must be an absolute https:// URI (http:// on loopback only)"
        )
    authority = parts.netloc
    if "@" in authority:
        raise ValueError(f"redirect URI {shown} must not contain userinfo ('@')")
    host = parts.hostname or ""
    if not host or authority.endswith(":") or (port is not None and port == 0):
        raise ValueError(f"redirect URI {shown} needs a host (and a non-zero port if any)")
    try:
        _check_host(host, authority.startswith("["))
    except ValueError:
        raise ValueError(f"redirect URI {shown} has an invalid host") from None
    if parts.scheme == "http" and not _loopback(host):
        raise ValueError(
            f"redirect URI {shown}: http:// is only allowed on a loopback host "
            "(127.0.0.0/8, [::1], localhost); use https://"
        )
    return uri


def validate_redirect_uris(uris: Iterable[str]) -> tuple[str, ...]:
    """Each URI validated (:func:`validate_redirect_uri`), deduplicated in order, at most
    :data:`REDIRECT_URIS_MAX`; ``ValueError`` otherwise (also for one string instead of a list).
    """
    if isinstance(uris, str):
        raise ValueError("redirect_uris must be a list of strings, not one string")
    out = tuple(dict.fromkeys(validate_redirect_uri(u) for u in uris))
    if len(out) > REDIRECT_URIS_MAX:
        raise ValueError(f"at most {REDIRECT_URIS_MAX} redirect URIs per client")
    return out


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


def new_client(
    name: str,
    redirect_uris: Iterable[str],
    scopes: Iterable[str],
    *,
    confidential: bool,
    now: float,
    hasher: PasswordHasher | None = None,
) -> tuple[OAuthClient, str | None]:
    """A new client with a fresh ``client_id``, and the plaintext secret to show once (``None``
    for a public client). The secret is 256 random bits, base64url (43 characters).

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
        client_id=secrets.token_urlsafe(16),
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
