"""Token revocation (RFC 7009) and introspection (RFC 7662).

Both take an access token (``xat_``: an OAuth session; a login session or an API key is
never answered for) or a refresh token (``xrt_``). Revocation: a client revokes only its own
tokens, any client type (``none`` for public clients); an unknown or foreign token is
answered 200 and left alone (RFC 7009 §2.2). Revoking a refresh token revokes its family
(§2.1: the access tokens of the same grant too). Introspection: confidential clients only
(resource servers and gateways authenticate as clients); access tokens of any client, refresh
tokens of the caller's own. With ``Accept: application/jwt`` an active access token is
answered with the session's JWT (the phantom-token exchange).
"""

from __future__ import annotations

from typing import Any

from authlib.consts import default_json_headers
from authlib.oauth2.rfc7009 import RevocationEndpoint
from authlib.oauth2.rfc7662 import IntrospectionEndpoint

from extauthz import tokens
from extauthz.errors import Unauthenticated
from extauthz.oauth.records import RefreshRecord
from extauthz.oauth.server import PUBLIC_METHOD, SECRET_METHODS, JwtFor, OAuthServer
from extauthz.store.model import Session


class _AccessToken:
    def __init__(self, token: str, session: Session) -> None:
        self.token = token
        self.session = session

    def check_client(self, client: Any) -> bool:
        return bool(self.session.client_id == client.client_id)

    def is_expired(self) -> bool:
        return False  # only live sessions are found

    def is_revoked(self) -> bool:
        return False


class _RefreshToken:
    def __init__(self, record: RefreshRecord, unused: bool) -> None:
        self.record = record
        self.unused = unused

    def check_client(self, client: Any) -> bool:
        return bool(self.record.client_id == client.client_id)

    def is_expired(self) -> bool:
        return False  # the store drops a family's tokens at its end

    def is_revoked(self) -> bool:
        return not self.unused  # rotated


async def _session(server: OAuthServer, token: str) -> Session | None:
    try:
        session = await server.issuer.sessions.lookup(token)
    except Unauthenticated:
        return None
    return session if session.kind == "oauth" else None


def _find(server: OAuthServer, token: str, hint: str | None) -> Any:
    if not isinstance(token, str):
        return None
    if tokens.has_token_shape(token, tokens.PREFIX):
        session = server.run(_session(server, token))
        return _AccessToken(token, session) if session is not None else None
    if tokens.has_token_shape(token, tokens.REFRESH_TOKEN_PREFIX):
        seen = server.run(server.issuer.peek_refresh(token))
        if seen is not None and isinstance(seen.record, RefreshRecord):
            return _RefreshToken(seen.record, seen.first)
    return None


class Revocation(RevocationEndpoint):  # type: ignore[misc]
    """RFC 7009 at ``POST /auth/oauth/revoke``."""

    CLIENT_AUTH_METHODS = [*SECRET_METHODS, PUBLIC_METHOD]
    server: OAuthServer

    def authenticate_token(self, request: Any, client: Any) -> Any:
        self.check_params(request, client)
        found = self.query_token(request.form["token"], request.form.get("token_type_hint"))
        return found if found is not None and found.check_client(client) else None

    def query_token(self, token_string: str, token_type_hint: str | None) -> Any:
        return _find(self.server, token_string, token_type_hint)

    def revoke_token(self, token: Any, request: Any) -> None:
        if isinstance(token, _AccessToken):
            self.server.run(self.server.issuer.sessions.revoke_token(token.token))
        else:
            self.server.run(self.server.issuer.revoke_family(token.record.family))


class Introspection(IntrospectionEndpoint):  # type: ignore[misc]
    """RFC 7662 at ``POST /auth/oauth/introspect``."""

    CLIENT_AUTH_METHODS = list(SECRET_METHODS)
    server: OAuthServer

    def query_token(self, token_string: str, token_type_hint: str | None) -> Any:
        return _find(self.server, token_string, token_type_hint)

    def check_permission(self, token: Any, client: Any, request: Any) -> bool:
        if isinstance(token, _AccessToken):
            return True
        return bool(token.check_client(client))

    def introspect_token(self, token: Any) -> dict[str, Any]:
        if isinstance(token, _AccessToken):
            s = token.session
            return {
                "active": True, "token_type": "Bearer", "scope": " ".join(s.scopes),
                "client_id": s.client_id, "sub": s.sub, "iat": int(s.created_at),
                "exp": int(s.deadline),
            }
        r = token.record
        return {
            "active": True, "token_type": "refresh_token", "scope": r.scope,
            "client_id": r.client_id, "sub": r.sub, "exp": int(r.family_expires_at),
        }

    def create_endpoint_response(self, request: Any) -> tuple[int, Any, Any]:
        client = self.authenticate_endpoint_client(request)
        token = self.authenticate_token(request, client)
        body = self.create_introspection_payload(token)
        if body.get("active") and request.incoming.wants_jwt and isinstance(token, _AccessToken):
            headers = [("Content-Type", "application/jwt"), ("Cache-Control", "no-store")]
            return 200, JwtFor(token.session), headers
        return 200, body, default_json_headers
