"""``[oauth]`` settings and the composition root: off by default (no route), built from the
settings when enabled (the real app serves the metadata and a client-credentials token)."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer
from argon2 import PasswordHasher, Type

from extauthz.errors import SettingsError
from extauthz.oauth.clients import FileClientStore, new_client
from extauthz.server.app import build_components
from extauthz.server.http_server import build_http_app
from extauthz.settings import load_settings
from tests.support.extauthz_nodes import node_settings

MEMORY = {"strategy": "sticky", "backend": "memory"}
FAST = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1, type=Type.ID)


def test_oauth_is_off_by_default_with_explicit_lifetimes() -> None:
    o = load_settings(None, environ={}).oauth
    assert o.enabled is False
    assert (o.access_token_lifetime_seconds, o.refresh_token_lifetime_seconds,
            o.code_lifetime_seconds) == (600, 30 * 86400, 60)


def test_oauth_settings_from_the_environment() -> None:
    o = load_settings(None, environ={
        "EXTAUTHZ_OAUTH_ENABLED": "true", "EXTAUTHZ_OAUTH_ISSUER": "https://auth.example",
        "EXTAUTHZ_OAUTH_ACCESS_TOKEN_LIFETIME_SECONDS": "300",
        "EXTAUTHZ_OAUTH_SCOPE_DESCRIPTIONS": "read=Read your reports",
    }).oauth
    assert (o.enabled, o.issuer, o.access_token_lifetime_seconds) == (
        True, "https://auth.example", 300
    )
    assert o.scope_descriptions == ("read=Read your reports",)


@pytest.mark.parametrize(
    "env",
    [
        {"EXTAUTHZ_OAUTH_ENABLED": "true", "EXTAUTHZ_OAUTH_ISSUER": "http://auth.example"},
        {"EXTAUTHZ_OAUTH_ENABLED": "true", "EXTAUTHZ_OAUTH_ISSUER": "https://a.example/?x=1"},
        {"EXTAUTHZ_OAUTH_CODE_LIFETIME_SECONDS": "3600"},
        {"EXTAUTHZ_OAUTH_ACCESS_TOKEN_LIFETIME_SECONDS": "0"},
        {"EXTAUTHZ_OAUTH_SCOPE_DESCRIPTIONS": "read"},
    ],
)
def test_bad_oauth_settings_are_refused(env: dict[str, str]) -> None:
    with pytest.raises(SettingsError, match="oauth"):
        load_settings(None, environ=env)


async def test_disabled_oauth_has_no_routes(tmp_path: Path) -> None:
    components = build_components(node_settings(tmp_path, "n1", MEMORY))
    assert components.oauth is None
    app = build_http_app(components.keyring, components.auth, oauth=components.oauth)
    async with TestClient(TestServer(app)) as client:
        assert (await client.get("/.well-known/oauth-authorization-server")).status == 404
        assert (await client.post("/auth/oauth/token", data={})).status == 404


async def test_enabled_oauth_serves_metadata_and_tokens(tmp_path: Path) -> None:
    clients_file = tmp_path / "clients.json"
    client, secret = new_client("Reporting", ["https://app.example/cb"], ["read"],
                                confidential=True, now=1.0, hasher=FAST)
    await FileClientStore(clients_file).put(client)
    settings = node_settings(tmp_path, "n1", MEMORY, oauth={
        "enabled": True, "issuer": "https://auth.example",
        "scope_descriptions": ["read=Read your reports"], "access_token_lifetime_seconds": 120,
    }, oauth_clients={"backend": "file", "file": str(clients_file)})
    components = build_components(settings)
    assert components.oauth is not None
    app = build_http_app(components.keyring, components.auth, oauth=components.oauth)
    async with TestClient(TestServer(app)) as http:
        doc = await (await http.get("/.well-known/oauth-authorization-server")).json()
        assert doc["issuer"] == "https://auth.example"
        assert doc["scopes_supported"] == ["read"]
        basic = base64.b64encode(f"{client.client_id}:{secret}".encode()).decode()
        answer = await http.post("/auth/oauth/token", data={"grant_type": "client_credentials"},
                                 headers={"Authorization": f"Basic {basic}"})
        body = await answer.json()
        assert answer.status == 200, body
        assert body["expires_in"] == 120
        session = await components.sessions.lookup(body["access_token"])
        assert session.client_id == client.client_id
        # removing the client (ClientAdmin.RemoveClient) revokes its tokens
        assert await components.revoke_client_tokens(client.client_id) >= 1
        assert await components.sessions.was_revoked(body["access_token"])
    await components.close()


async def test_ending_an_application_on_the_session_page_ends_its_refresh_tokens(
    tmp_path: Path,
) -> None:
    """The composition root hands the token issuer to the session page: the user ends an
    application's access token there, and the application's refresh token dies with it."""
    settings = node_settings(tmp_path, "n1", MEMORY, oauth={
        "enabled": True, "issuer": "https://auth.example",
    }, auth={"allowed_origins": ["https://auth.example"]})
    components = build_components(settings)
    assert components.oauth is not None
    issuer = components.oauth.issuer
    issued = await issuer.issue(client_id="app-1", sub="alice", scope="read", family="f1",
                                with_refresh=True)
    assert issued.refresh_token is not None
    login, _ = await components.sessions.create("alice")
    app_sid = (await components.sessions.lookup(issued.access_token)).sid
    app = build_http_app(components.keyring, components.auth, oauth=components.oauth)
    async with TestClient(TestServer(app)) as http:
        answer = await http.post(
            "/auth/session/end", json={"sid": app_sid},
            headers={"Authorization": f"Bearer {login}", "Origin": "https://auth.example"},
        )
        assert answer.status == 200, await answer.text()
    assert await components.sessions.was_revoked(issued.access_token)
    assert await issuer.peek_refresh(issued.refresh_token) is None
    await components.close()
