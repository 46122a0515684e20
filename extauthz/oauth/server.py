"""The OAuth 2.0 authorization server on Authlib's framework-agnostic core.

Authlib's hooks are synchronous: every Authlib call runs in a small thread pool
(:meth:`OAuthServer.call`), and the hooks reach the async stores back on the event loop
(:meth:`OAuthServer.run`). The framework adapter (:mod:`extauthz.oauth.http`) hands in a
:class:`Incoming` request (parameters from the query for ``GET``, from the form body for
``POST``, never both merged) and gets an :class:`Answer` back.

Clients: a confidential client authenticates with ``client_secret_basic`` or
``client_secret_post``; a public one with ``none`` (RFC 6749 §2.3, §3.2.1). A redirect URI
is never defaulted: ``redirect_uri`` is required and matched exactly (RFC 6749 §3.1.2).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from collections import defaultdict
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from authlib.oauth2 import AuthorizationServer, OAuth2Request
from authlib.oauth2.rfc6749 import ClientMixin, OAuth2Payload
from authlib.oauth2.rfc6749.errors import InvalidGrantError, InvalidRequestError, OAuth2Error

from extauthz.errors import StoreUnavailable
from extauthz.oauth.clients import ClientStore, ClientStoreError, OAuthClient, is_client_id
from extauthz.oauth.issuer import CLIENT_SUBJECT_PREFIX, FamilyRevoked, TokenIssuer, new_family

T = TypeVar("T")
# Authlib logs issued tokens at DEBUG ("Issue token %r to %r"): never, whatever the root level
logging.getLogger("authlib").setLevel(logging.INFO)
SECRET_METHODS = ("client_secret_basic", "client_secret_post")
PUBLIC_METHOD = "none"
STORE_WAIT_SECONDS = 5.0


@dataclass(frozen=True)
class Incoming:
    """A request as the adapter read it: ``params`` from the query (``GET``) or the form
    body (``POST``), in order, repeated names kept. ``uri`` starts with the scheme the client
    used (``X-Forwarded-Proto`` from a trusted proxy). ``wants_jwt``: ``Accept:
    application/jwt`` (introspection)."""

    method: str
    uri: str
    headers: Mapping[str, str]
    params: Sequence[tuple[str, str]]
    wants_jwt: bool = False


@dataclass(frozen=True)
class Answer:
    """What to send: ``body`` is a JSON-able dict, a string, or a :class:`JwtFor` (the
    adapter mints the session's JWT on the event loop)."""

    status: int
    body: Any
    headers: list[tuple[str, str]] = field(default_factory=list)

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k.lower() == name.lower()), None)


MALFORMED = Answer(
    400,
    {"error": "invalid_request", "error_description": "The request is malformed."},
    [("Cache-Control", "no-store"), ("Pragma", "no-cache")],
)


@dataclass(frozen=True)
class JwtFor:
    """Introspection with ``Accept: application/jwt``: the JWT of this session (any type
    the minter takes)."""

    session: Any


class _Payload(OAuth2Payload):  # type: ignore[misc]
    def __init__(self, params: Sequence[tuple[str, str]]) -> None:
        self._datalist: defaultdict[str, list[str]] = defaultdict(list)
        for name, value in params:
            self._datalist[name].append(value)
        self._data = {name: values[0] for name, values in self._datalist.items()}

    @property
    def data(self) -> dict[str, str]:
        return self._data

    @property
    def datalist(self) -> defaultdict[str, list[str]]:
        return self._datalist


class OAuthRequest(OAuth2Request):  # type: ignore[misc]
    """Authlib's request over an :class:`Incoming`: ``form`` is the body's parameters for a
    ``POST`` and empty for a ``GET``; ``args`` the query's for a ``GET``."""

    def __init__(self, incoming: Incoming) -> None:
        super().__init__(incoming.method, incoming.uri, headers=incoming.headers)
        self.incoming = incoming
        self.payload = _Payload(incoming.params)

    @property
    def args(self) -> dict[str, str]:
        return self.payload.data if self.method == "GET" else {}

    @property
    def form(self) -> dict[str, str]:
        return self.payload.data if self.method == "POST" else {}


class Client(ClientMixin):  # type: ignore[misc]
    """Authlib's view of an :class:`OAuthClient`."""

    def __init__(self, client: OAuthClient) -> None:
        self.client = client
        self.client_id = client.client_id

    def get_client_id(self) -> str:
        return self.client.client_id

    def get_default_redirect_uri(self) -> None:
        return None  # redirect_uri is always required

    def get_allowed_scope(self, scope: str | None) -> str | None:
        """The requested scope when the client may have all of it, else ``None``
        (``invalid_scope``); no scope asked: every scope the client may have (§3.3)."""
        asked = scope.split() if scope else list(self.client.scopes)
        if not set(asked) <= set(self.client.scopes):
            return None
        return " ".join(dict.fromkeys(asked))

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return redirect_uri in self.client.redirect_uris

    def check_client_secret(self, client_secret: str) -> bool:
        return bool(self.client.verify_secret(client_secret))

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        if self.client.confidential:
            return method in SECRET_METHODS
        return method == PUBLIC_METHOD

    def check_response_type(self, response_type: str) -> bool:
        return response_type == "code"

    def check_grant_type(self, grant_type: str) -> bool:
        if grant_type == "client_credentials":
            return self.client.confidential
        return grant_type in ("authorization_code", "refresh_token")


class OAuthServer(AuthorizationServer):  # type: ignore[misc]
    """Authlib's authorization server over the client store and the token issuer. The grants
    and endpoints are registered by :func:`extauthz.oauth.grants.build_server`."""

    def __init__(self, clients: ClientStore, issuer: TokenIssuer, *, threads: int = 4) -> None:
        super().__init__()
        self.clients = clients
        self.issuer = issuer
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pool = concurrent.futures.ThreadPoolExecutor(threads, "oauth")
        self.register_token_generator("default", self._skeleton)

    # -- the bridge ----------------------------------------------------------------------

    async def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run Authlib's ``fn`` off the event loop (its hooks call :meth:`run`)."""
        self._loop = asyncio.get_running_loop()
        return await self._loop.run_in_executor(self._pool, lambda: fn(*args, **kwargs))

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """From an Authlib hook (a worker thread): run ``coro`` on the event loop, wait.

        :raises StoreUnavailable: no answer within :data:`STORE_WAIT_SECONDS`.
        """
        assert self._loop is not None, "run() outside call()"
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result(STORE_WAIT_SECONDS)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise StoreUnavailable("oauth: the store did not answer in time") from None

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    # -- Authlib's abstract methods ------------------------------------------------------

    def query_client(self, client_id: str) -> Client | None:
        if not is_client_id(client_id):
            return None
        try:
            found = self.run(self.clients.get(client_id))
        except (OSError, ClientStoreError) as exc:  # the clients file: unreadable or malformed
            raise StoreUnavailable(f"oauth clients: {exc}") from None
        return Client(found) if found is not None else None

    def create_oauth2_request(self, request: Any) -> OAuthRequest:
        return request if isinstance(request, OAuthRequest) else OAuthRequest(request)

    def create_json_request(self, request: Any) -> Any:
        raise NotImplementedError("no JSON requests")

    def handle_response(self, status: int, body: Any, headers: Any) -> Answer:
        return Answer(status, body, [(str(k), str(v)) for k, v in headers or ()])

    def send_signal(self, name: str, *args: Any, **kwargs: Any) -> None:
        return None

    @staticmethod
    def _skeleton(*, scope: str | None = None, **_: Any) -> dict[str, Any]:
        # the values are filled in by save_token, which issues them (a session, a record);
        # the scope is the one the grant decided (a refresh may narrow it, RFC 6749 §6)
        return {"token_type": "Bearer", "scope": scope}

    def save_token(self, token: dict[str, Any], request: OAuthRequest) -> None:
        """Issue what ``token`` announces: the access token (a session) and the refresh
        token, into the family of the code or the refresh token, or a new one."""
        client: Client = request.client
        grant_type = request.payload.grant_type
        family_ends: float | None = None
        refresh_scope: str | None = None
        if grant_type == "client_credentials":
            sub, scope, family = CLIENT_SUBJECT_PREFIX + client.client_id, request.scope, None
            with_refresh = False
        elif grant_type == "authorization_code":
            code = request.authorization_code.record
            sub, scope, family, with_refresh = code.sub, code.scope, code.family, True
        else:  # refresh_token
            old = request.refresh_token.record
            sub, family, with_refresh = old.sub, old.family, True
            scope = token.get("scope") or old.scope
            refresh_scope, family_ends = old.scope, old.family_expires_at
        try:
            issued = self.run(
                self.issuer.issue(
                    client_id=client.client_id, sub=sub, scope=scope or "",
                    family=family or new_family(), family_expires_at=family_ends,
                    refresh_scope=refresh_scope, with_refresh=with_refresh,
                )
            )
        except FamilyRevoked:
            raise InvalidGrantError("The grant was revoked.") from None
        except ValueError:
            raise InvalidRequestError("The token could not be issued.") from None
        token.clear()
        token.update(
            token_type="Bearer", access_token=issued.access_token,
            expires_in=issued.expires_in, scope=issued.scope,
        )
        if issued.refresh_token is not None:
            token["refresh_token"] = issued.refresh_token

    # -- entry points for the adapter (each runs in the pool) ----------------------------
    # Authlib builds some error descriptions from the request's values and refuses to build
    # one holding characters RFC 6749 §5.2 does not allow (ValueError): such a request is
    # answered as malformed, never with a 500. InsecureTransportError: plain http to a host
    # that is not loopback, without X-Forwarded-Proto: https from a trusted proxy.

    def token_answer(self, incoming: Incoming) -> Answer:
        try:
            answer: Answer = self.create_token_response(OAuthRequest(incoming))
        except OAuth2Error as error:
            return self.handle_response(*error())
        except ValueError:
            return MALFORMED
        return answer

    def endpoint_answer(self, name: str, incoming: Incoming) -> Answer:
        try:
            answer: Answer = self.create_endpoint_response(name, OAuthRequest(incoming))
        except OAuth2Error as error:
            return self.handle_response(*error())
        except ValueError:
            return MALFORMED
        return answer

    def consent_grant(self, incoming: Incoming) -> Any:
        """The validated authorization request's grant (``grant.request.client``,
        ``.scope``, ``.redirect_uri``), or the :class:`Answer` for an invalid one: a 302 to
        the redirect URI when that was validated, else a 400 (never redirected)."""
        try:
            request = OAuthRequest(incoming)
            try:
                return self.get_consent_grant(request=request, end_user=None)
            except OAuth2Error as error:
                return self.handle_error_response(request, error)
        except OAuth2Error as error:
            return self.handle_response(*error())
        except ValueError:
            return MALFORMED

    def authorization_answer(self, grant: Any, sub: str | None) -> Answer:
        """The redirect for the user's decision: a code (``sub`` approved) or
        ``access_denied`` (``sub`` is ``None``)."""
        try:
            answer: Answer = self.create_authorization_response(
                request=grant.request, grant_user=sub, grant=grant
            )
        except ValueError:
            return MALFORMED
        return answer
