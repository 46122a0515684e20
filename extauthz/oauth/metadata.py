"""RFC 8414 authorization server metadata, served at
``/.well-known/oauth-authorization-server`` (RFC 8414 §3)."""

from __future__ import annotations

from typing import Any

from extauthz.oauth.consent import AUTHORIZE_PATH

METADATA_PATH = "/.well-known/oauth-authorization-server"
TOKEN_PATH = "/auth/oauth/token"
REVOKE_PATH = "/auth/oauth/revoke"
INTROSPECT_PATH = "/auth/oauth/introspect"
JWKS_PATH = "/.well-known/jwks.json"


def metadata(issuer: str, scopes: list[str] | None = None) -> dict[str, Any]:
    """The metadata document for ``issuer`` (an https URL without query or fragment; the
    endpoints are below it). ``scopes``: ``scopes_supported`` when known."""
    base = issuer.rstrip("/")
    doc: dict[str, Any] = {
        "issuer": issuer,
        "authorization_endpoint": base + AUTHORIZE_PATH,
        "token_endpoint": base + TOKEN_PATH,
        "revocation_endpoint": base + REVOKE_PATH,
        "introspection_endpoint": base + INTROSPECT_PATH,
        "jwks_uri": base + JWKS_PATH,
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code", "client_credentials", "refresh_token"],
        "token_endpoint_auth_methods_supported": [
            "client_secret_basic", "client_secret_post", "none",
        ],
        "revocation_endpoint_auth_methods_supported": [
            "client_secret_basic", "client_secret_post", "none",
        ],
        "introspection_endpoint_auth_methods_supported": [
            "client_secret_basic", "client_secret_post",
        ],
        "code_challenge_methods_supported": ["S256"],
    }
    if scopes:
        doc["scopes_supported"] = sorted(set(scopes))
    return doc
