"""The routes for OAuth 2.0, read from envoy/front-proxy.yaml and envoy/sidecar.yaml the way
Envoy picks a route (the first whose match fits; prefix and exact path only, which is all the
files use): the authorization server's endpoints and metadata reach extauthz's HTTP service
without ext_authz and without the session-update processor, and the front proxy's example route
that needs a scope keeps the catch-all's other requirements. tests/e2e/test_oauth_flow.py runs
the front proxy itself."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support import FRONT_PROXY, REPO_ROOT

EXT_AUTHZ = "envoy.filters.http.ext_authz"
SESSION_UPDATE = "extauthz_session_update"
OAUTH_PATHS = [
    "/auth/oauth/authorize",
    "/auth/oauth/token",
    "/auth/oauth/revoke",
    "/auth/oauth/introspect",
    "/.well-known/oauth-authorization-server",
]


SIDECAR = REPO_ROOT / "envoy" / "sidecar.yaml"


def _routes(config: Path = FRONT_PROXY) -> list[dict[str, Any]]:
    doc = yaml.safe_load(config.read_text())
    (listener,) = doc["static_resources"]["listeners"]
    (chain,) = listener["filter_chains"]
    (hcm,) = chain["filters"]
    (vhost,) = hcm["typed_config"]["route_config"]["virtual_hosts"]
    routes: list[dict[str, Any]] = vhost["routes"]
    return routes


def route_for(path: str, config: Path = FRONT_PROXY) -> dict[str, Any]:
    """The route Envoy picks for ``path``. :raises AssertionError: a match kind this reader
    does not know (it would have to learn it rather than guess)."""
    for route in _routes(config):
        match = route["match"]
        assert set(match) <= {"prefix", "path"}, match
        if match.get("path") == path or path.startswith(match.get("prefix", "\0")):
            return route
    raise AssertionError(f"no route for {path}")


def _per_route(route: dict[str, Any], name: str) -> dict[str, Any]:
    config: dict[str, Any] = route.get("typed_per_filter_config", {}).get(name, {})
    return config


@pytest.mark.parametrize("config", [FRONT_PROXY, SIDECAR], ids=lambda p: p.name)
@pytest.mark.parametrize("path", OAUTH_PATHS)
def test_the_oauth_endpoints_reach_the_auth_service_without_ext_authz(
    path: str, config: Path
) -> None:
    route = route_for(path, config)
    assert route["route"]["cluster"] == "extauthz_http"
    assert _per_route(route, EXT_AUTHZ).get("disabled") is True
    assert _per_route(route, SESSION_UPDATE).get("disabled") is True


def test_the_write_route_needs_the_scope_and_keeps_the_catch_alls_rules() -> None:
    route = route_for("/edit/photo")
    assert route["route"]["cluster"] == "upstream"
    settings = _per_route(route, EXT_AUTHZ)["check_settings"]["context_extensions"]
    catch_all = _per_route(route_for("/anything"), EXT_AUTHZ)["check_settings"]
    assert settings == {**catch_all["context_extensions"], "required_scopes": "write"}
    assert route_for("/editor")["match"] == {"prefix": "/"}  # a prefix, not a substring


def test_the_account_security_route_is_for_logins_only() -> None:
    route = route_for("/account/security/password")
    settings = _per_route(route, EXT_AUTHZ)["check_settings"]["context_extensions"]
    catch_all = _per_route(route_for("/anything"), EXT_AUTHZ)["check_settings"]
    assert settings == {**catch_all["context_extensions"], "credentials": "session"}
    assert route_for("/account")["match"] == {"prefix": "/"}
