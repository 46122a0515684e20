"""The grants: authorization code with PKCE (S256 only, required for every client),
client credentials (confidential clients), refresh token with rotation and reuse detection.
:func:`build_server` registers them and the revocation and introspection endpoints.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from base64 import urlsafe_b64encode
from typing import Any

from authlib.oauth2.rfc6749 import grants
from authlib.oauth2.rfc6749.errors import (
    InvalidGrantError,
    InvalidRequestError,
    InvalidScopeError,
)
from authlib.oauth2.rfc7636 import CodeChallenge

from extauthz.oauth.clients import ClientStore
from extauthz.oauth.endpoints import Introspection, Revocation
from extauthz.oauth.issuer import TokenIssuer
from extauthz.oauth.records import CodeRecord, RefreshRecord
from extauthz.oauth.server import PUBLIC_METHOD, SECRET_METHODS, OAuthServer

# RFC 7636 §4.1 / §4.2: 43-128 unreserved characters
_PKCE_VALUE = re.compile(r"[A-Za-z0-9\-._~]{43,128}")
ALL_METHODS = [*SECRET_METHODS, PUBLIC_METHOD]


def s256(verifier: str) -> str:
    """RFC 7636 §4.2: BASE64URL(SHA256(ASCII(code_verifier))), unpadded."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


class S256Challenge(CodeChallenge):  # type: ignore[misc]
    """PKCE for every client, public and confidential: ``code_challenge`` with
    ``code_challenge_method=S256`` at the authorization endpoint (``plain`` and a missing
    method are refused: RFC 9700 §2.1.1), ``code_verifier`` at the token endpoint."""

    SUPPORTED_CODE_CHALLENGE_METHOD = ["S256"]

    def validate_code_challenge(self, grant: Any, redirect_uri: str) -> None:
        datalist = grant.request.payload.datalist
        challenges = datalist.get("code_challenge", [])
        methods = datalist.get("code_challenge_method", [])
        if len(challenges) != 1 or not _PKCE_VALUE.fullmatch(challenges[0]):
            raise InvalidRequestError("PKCE is required: one code_challenge (RFC 7636).")
        if methods != ["S256"]:
            raise InvalidRequestError("code_challenge_method must be S256.")

    def validate_code_verifier(self, grant: Any, result: Any) -> None:
        request = grant.request
        verifier = request.form.get("code_verifier")
        if not verifier:
            raise InvalidRequestError("Missing 'code_verifier'.")
        if not _PKCE_VALUE.fullmatch(verifier):
            raise InvalidRequestError("Invalid 'code_verifier'.")
        challenge = request.authorization_code.record.code_challenge
        if not secrets.compare_digest(s256(verifier), challenge):
            raise InvalidGrantError("Code challenge failed.")


class _Code:
    """Authlib's view of a :class:`CodeRecord`."""

    def __init__(self, record: CodeRecord) -> None:
        self.record = record

    def get_redirect_uri(self) -> str:
        return self.record.redirect_uri

    def get_scope(self) -> str:
        return self.record.scope


class _Refresh:
    """Authlib's view of a :class:`RefreshRecord`."""

    def __init__(self, record: RefreshRecord) -> None:
        self.record = record

    def check_client(self, client: Any) -> bool:
        return bool(self.record.client_id == client.client_id)

    def get_scope(self) -> str:
        return self.record.scope


class AuthorizationCodeGrant(grants.AuthorizationCodeGrant):  # type: ignore[misc]
    """RFC 6749 §4.1; the code is single-use, hashed, bound to client, redirect URI and PKCE
    challenge; a second use revokes what the first issued (:meth:`TokenIssuer.take_code`)."""

    TOKEN_ENDPOINT_AUTH_METHODS = ALL_METHODS
    server: OAuthServer

    @staticmethod
    def validate_authorization_redirect_uri(request: Any, client: Any) -> str:
        # exact match only, and never the requested value in a message (Authlib's message
        # quotes it, and characters such as a backslash make the error itself fail)
        datalist = request.payload.datalist.get("redirect_uri", [])
        if len(datalist) != 1 or not client.check_redirect_uri(datalist[0]):
            raise InvalidRequestError("The redirect_uri is not registered for this client.")
        return str(datalist[0])

    def save_authorization_code(self, code: str, request: Any) -> None:
        self.server.run(
            self.server.issuer.save_code(
                code, client_id=request.client.client_id, sub=request.user,
                redirect_uri=request.payload.redirect_uri, scope=request.scope or "",
                code_challenge=request.payload.data["code_challenge"],
            )
        )

    def query_authorization_code(self, code: str, client: Any) -> _Code | None:
        record = self.server.run(self.server.issuer.take_code(code, client.client_id))
        return _Code(record) if record is not None else None

    def delete_authorization_code(self, authorization_code: Any) -> None:
        return None  # used up by query_authorization_code, kept to detect a second use

    def authenticate_user(self, authorization_code: _Code) -> str:
        return authorization_code.record.sub


class ClientCredentialsGrant(grants.ClientCredentialsGrant):  # type: ignore[misc]
    """RFC 6749 §4.4, confidential clients only; ``sub`` = ``client:<client_id>``."""

    TOKEN_ENDPOINT_AUTH_METHODS = list(SECRET_METHODS)

    def validate_requested_scope(self) -> None:
        scope = self.request.client.get_allowed_scope(self.request.payload.scope)
        if scope is None:
            raise InvalidScopeError()
        self.request.scope = scope


class RefreshTokenGrant(grants.RefreshTokenGrant):  # type: ignore[misc]
    """RFC 6749 §6 with rotation: every use returns a new refresh token (same family, same
    scope, same absolute end); a used one presented again revokes the family."""

    TOKEN_ENDPOINT_AUTH_METHODS = ALL_METHODS
    INCLUDE_NEW_REFRESH_TOKEN = True
    server: OAuthServer

    def authenticate_refresh_token(self, refresh_token: str) -> _Refresh | None:
        client_id = self.request.client.client_id
        issuer = self.server.issuer
        seen = self.server.run(issuer.peek_refresh(refresh_token))
        if seen is None or seen.record.client_id != client_id:
            return None
        # a scope the token cannot give is refused before the token is used up
        asked = self.request.payload.scope
        record = seen.record
        if asked and not set(asked.split()) <= set(record.scope.split()):
            raise InvalidScopeError()
        taken = self.server.run(issuer.take_refresh(refresh_token, client_id))
        return _Refresh(taken) if taken is not None else None

    def authenticate_user(self, refresh_token: _Refresh) -> str:
        return refresh_token.record.sub

    def revoke_old_credential(self, refresh_token: Any) -> None:
        return None  # used up by authenticate_refresh_token, kept to detect a replay


def build_server(clients: ClientStore, issuer: TokenIssuer, *, threads: int = 4) -> OAuthServer:
    """The authorization server with the three grants and the RFC 7009 / RFC 7662 endpoints."""
    server = OAuthServer(clients, issuer, threads=threads)
    server.register_grant(AuthorizationCodeGrant, [S256Challenge(required=True)])
    server.register_grant(ClientCredentialsGrant)
    server.register_grant(RefreshTokenGrant)
    server.register_endpoint(Revocation)
    server.register_endpoint(Introspection)
    return server
