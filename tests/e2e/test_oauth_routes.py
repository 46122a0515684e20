"""The front proxy's routes for OAuth 2.0, read from envoy/front-proxy.yaml the way Envoy picks
a route (the first whose match fits; prefix and exact path only, which is all the file uses):
the authorization server's endpoints and metadata reach extauthz's HTTP service without
ext_authz and without the session-update processor, and the example route that needs a scope
keeps the catch-all's other requirements. tests/e2e/test_oauth_flow.py runs the same file."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from tests.support import FRONT_PROXY

EXT_AUTHZ = "envoy.filters.http.ext_authz"
SESSION_UPDATE = "extauthz_session_update"
OAUTH_PATHS = [
    "/auth/oauth/authorize",
    "/auth/oauth/token",
    "/auth/oauth/revoke",
    "/auth/oauth/introspect",
    "/.well-known/oauth-authorization-server",
]


def _routes() -> list[dict[str, Any]]:
    doc = yaml.safe_load(FRONT_PROXY.read_text())
    (listener,) = doc["static_resources"]["listeners"]
    (chain,) = listener["filter_chains"]
    (hcm,) = chain["filters"]
    (vhost,) = hcm["typed_config"]["route_config"]["virtual_hosts"]
    routes: list[dict[str, Any]] = vhost["routes"]
    return routes


def route_for(path: str) -> dict[str, Any]:
    """The route Envoy picks for ``path``. :raises AssertionError: a match kind this reader
    does not know (it would have to learn it rather than guess)."""
    for route in _routes():
        match = route["match"]
        assert set(match) <= {"prefix", "path"}, match
        if match.get("path") == path or path.startswith(match.get("prefix", "\0")):
            return route
    raise AssertionError(f"no route for {path}")


def _per_route(route: dict[str, Any], name: str) -> dict[str, Any]:
    config: dict[str, Any] = route.get("typed_per_filter_config", {}).get(name, {})
    return config


@pytest.mark.parametrize("path", OAUTH_PATHS)
def test_the_oauth_endpoints_reach_the_auth_service_without_ext_authz(path: str) -> None:
    route = route_for(path)
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
