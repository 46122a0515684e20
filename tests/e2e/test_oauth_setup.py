"""Registering an application the way docs/oauth.md and the README say, on the demo's own
settings file (its ``.demo/`` paths moved into a temporary directory, nothing else changed, no
``EXTAUTHZ_OAUTH*`` override but ``enabled``): a client added with ``extauthz clients add
--config`` or through the admin API is one the running authorization server knows, through
Envoy. tests/e2e/test_oauth_flow.py configures the client store by environment instead."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode

import pytest
import requests

from harness.extauthz import add_user
from tests.support import DEMO_SETTINGS, Stack, envoy_binaries, start_stack
from tests.support.oauth_stack import parse_added

pytestmark = pytest.mark.e2e

REDIRECT_URI = "http://127.0.0.1:9999/callback"


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, Path]]:
    from tests.conftest import missing

    binaries = envoy_binaries()
    if not binaries:
        missing("no Envoy binary: set EXTAUTHZ_ENVOY_BINARIES or put envoy on PATH")
    work = tmp_path_factory.mktemp("oauth-demo-settings")
    settings = work / "extauthz.toml"
    settings.write_text(DEMO_SETTINGS.read_text().replace('".demo/', f'"{work}/'))
    add_user(work / "users.json", "alice", "alice-password-1", scopes=["read"])
    stack = start_stack(binaries[-1], work, settings_path=settings,
                        env={"EXTAUTHZ_OAUTH_ENABLED": "true"})  # fmt: skip
    yield stack, settings
    stack.stop()


def _known_to_the_server(stack: Stack, client_id: str, secret: str) -> None:
    """A client-credentials token through Envoy, and an authorization request that goes on to
    the login page (an unknown client is a 400 page)."""
    token = requests.post(
        stack.base_url + "/auth/oauth/token", auth=(client_id, secret),
        data={"grant_type": "client_credentials", "scope": "read"}, timeout=10,
    )  # fmt: skip
    assert token.status_code == 200, token.text
    query = urlencode({
        "response_type": "code", "client_id": client_id, "redirect_uri": REDIRECT_URI,
        "scope": "read", "state": "s1", "code_challenge_method": "S256",
        "code_challenge": "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
    })  # fmt: skip
    authorize = requests.get(f"{stack.base_url}/auth/oauth/authorize?{query}", timeout=10,
                             allow_redirects=False)  # fmt: skip
    assert authorize.status_code == 303, authorize.text
    assert authorize.headers["location"].startswith("/auth/login?return_to=")


def test_a_client_added_with_the_cli_is_known_to_the_server(demo: tuple[Stack, Path]) -> None:
    stack, settings = demo
    out = stack.extauthz.cli("clients", "add", "--config", str(settings), "--name", "Reports",
                             "--redirect-uri", REDIRECT_URI, "--scope", "read")  # fmt: skip
    client_id, secret = parse_added(out)
    assert secret is not None
    _known_to_the_server(stack, client_id, secret)


def test_a_client_added_through_the_admin_api_is_known_to_the_server(
    demo: tuple[Stack, Path],
) -> None:
    stack, settings = demo
    out = stack.extauthz.cli("clients", "add", "--target", stack.extauthz.grpc_target,
                             "--name", "Exports", "--redirect-uri", REDIRECT_URI,
                             "--scope", "read")  # fmt: skip
    client_id, secret = parse_added(out)
    assert secret is not None
    _known_to_the_server(stack, client_id, secret)
