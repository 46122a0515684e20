"""OAuth 2.0 third-party access end to end, through Envoy running the repository's front proxy.

The third-party application is a real OAuth client library, Authlib's
``authlib.integrations.requests_client.OAuth2Session``; its ``redirect_uri`` is a small HTTP
listener in the test. Headless Chromium signs in and consents; the application redeems the code
with PKCE (S256), calls protected routes with its token, and the echo upstream shows the JWT it
received. Two extauthz nodes share one Redis with the session cache on, each behind its own
Envoy: a revocation through one is a 401 at the next request on both.

Without the browser (a small user agent signs in and answers the consent form): client
credentials with curl, refresh-token rotation and reuse detection, RFC 7009 revocation, RFC 7662
introspection (JSON and ``Accept: application/jwt``), and the refusals (redirect URIs that are
not exactly the registered one, PKCE missing or ``plain``, a code used twice, a client secret in
the query string). Last, no log line of any process holds a token, a code or a client secret.

One stack for the whole module, on one Envoy binary (the configuration is validated on every
supported one by tests/e2e/test_envoy_config.py); each test needs nothing but that stack.
"""

from __future__ import annotations

import json
import re
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jwt
import pytest
import requests
from authlib.common.security import generate_token
from authlib.integrations.requests_client import OAuth2Session, OAuthError
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

from extauthz import tokens
from tests.e2e.test_browser import assert_no_jwt, browser  # noqa: F401 (browser: the fixture)
from tests.support import envoy_binaries, redis_binary
from tests.support.auth_stack import Client
from tests.support.oauth_stack import (
    USERS,
    OAuthStack,
    RegisteredClient,
    decide,
    query_of,
    register_client,
    start_oauth_stack,
)

pytestmark = pytest.mark.e2e

AUTHORIZE = "/auth/oauth/authorize"
TOKEN = "/auth/oauth/token"
REVOKE = "/auth/oauth/revoke"
INTROSPECT = "/auth/oauth/introspect"
METADATA = "/.well-known/oauth-authorization-server"
API = {"Accept": "application/json"}
WRITE_ROUTE = "/edit/photo"  # envoy/front-proxy.yaml: needs the scope "write"
ISSUER, AUDIENCE = "http://127.0.0.1:8080", "demo-upstream"  # demo/extauthz.toml
TOKEN_IN_TEXT = re.compile(r"x(?:at|ak|rt)_[0-9A-Za-z]+")


# -- the stack and the applications ----------------------------------------------------------------


@pytest.fixture(scope="module")
def oauth(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OAuthStack]:
    from tests.conftest import missing

    binaries = envoy_binaries()
    if not binaries:
        missing("no Envoy binary: set EXTAUTHZ_ENVOY_BINARIES or put envoy on PATH")
    if redis_binary() is None:
        missing("redis-server is not on PATH")
    stack = start_oauth_stack(binaries[-1], tmp_path_factory.mktemp("oauth-stack"))
    yield stack
    stack.stop()


@pytest.fixture(scope="module")
def apps(oauth: OAuthStack) -> dict[str, RegisteredClient]:
    """The registered applications: a confidential web application (code flow), a public one
    (code flow, PKCE and no secret), a confidential back-end job (client credentials) and
    another; the first two with the CLI, the others through the admin API."""
    cb = [oauth.callback.redirect_uri]
    registered = {
        "printer": register_client(oauth, "Photo Printer", cb, ["read", "write"], via="cli"),
        "public": register_client(oauth, "Pocket Viewer", cb, ["read"], confidential=False,
                                  via="cli"),  # fmt: skip
        "batch": register_client(oauth, "Nightly Batch", cb, ["read"]),
        "other": register_client(oauth, "Other App", cb, ["read"]),
    }
    oauth.remember(*(c.secret for c in registered.values()))
    return registered


def app_session(oauth: OAuthStack, client: RegisteredClient, scope: str = "read") -> OAuth2Session:
    """The third-party application's OAuth client (Authlib), PKCE with S256."""
    return OAuth2Session(
        client.client_id, client.secret, scope=scope, redirect_uri=oauth.callback.redirect_uri,
        code_challenge_method="S256", token_endpoint=oauth.url(TOKEN),
        token_endpoint_auth_method="client_secret_basic" if client.secret else "none",
        revocation_endpoint_auth_method="client_secret_basic" if client.secret else "none",
    )  # fmt: skip


def signed_in(oauth: OAuthStack, user: str = "alice") -> Client:
    agent = oauth.client()
    assert agent.login(user, USERS[user][0]).status == 200
    oauth.remember(*agent.cookies.values())
    return agent


def authorize(
    oauth: OAuthStack, app: OAuth2Session, user: str = "alice", **params: str
) -> tuple[str, str, str]:
    """The code flow up to the redirect, for ``user`` who allows: (the URL the redirect_uri
    got, the code_verifier, the state)."""
    verifier = generate_token(48)
    url, state = app.create_authorization_url(oauth.url(AUTHORIZE), code_verifier=verifier,
                                              **params)  # fmt: skip
    answer = decide(oauth, signed_in(oauth, user), url, "allow")
    assert answer.status in (302, 303), answer.text
    location = answer.header("location") or ""
    assert location.startswith(oauth.callback.redirect_uri + "?"), location
    oauth.remember(query_of(location).get("code"))
    return location, verifier, state


def fetch(oauth: OAuthStack, app: OAuth2Session, location: str, verifier: str, state: str
          ) -> dict[str, Any]:  # fmt: skip
    token: dict[str, Any] = app.fetch_token(
        oauth.url(TOKEN), authorization_response=location, code_verifier=verifier, state=state
    )
    oauth.remember(token.get("access_token"), token.get("refresh_token"))
    return token


def code_flow_token(oauth: OAuthStack, app: OAuth2Session, user: str = "alice") -> dict[str, Any]:
    return fetch(oauth, app, *authorize(oauth, app, user))


def call(oauth: OAuthStack, access_token: str, path: str = "/photos", node: int = 0
         ) -> requests.Response:  # fmt: skip
    return requests.get(oauth.url(path, node), timeout=10,
                        headers={**API, "Authorization": f"Bearer {access_token}"})  # fmt: skip


def claims_upstream(oauth: OAuthStack, access_token: str, path: str = "/photos") -> dict[str, Any]:
    resp = call(oauth, access_token, path)
    assert resp.status_code == 200, resp.text
    seen = resp.json()["jwt"]
    assert seen["verified"], seen["error"]
    claims: dict[str, Any] = seen["claims"]
    return claims


def refused(error: type[BaseException] | tuple[type[BaseException], ...] = OAuthError) -> Any:
    return pytest.raises(error)


def next_callback(oauth: OAuthStack) -> int:
    return len(oauth.callback.requests) + 1


# -- discovery and routing -------------------------------------------------------------------------


def test_metadata_and_the_endpoints_are_reached_without_a_session(oauth: OAuthStack) -> None:
    resp = requests.get(oauth.url(METADATA), timeout=10)
    assert resp.status_code == 200, resp.text
    meta = resp.json()
    for key, path in (("authorization_endpoint", AUTHORIZE), ("token_endpoint", TOKEN),
                      ("revocation_endpoint", REVOKE), ("introspection_endpoint", INTROSPECT)):
        assert urlsplit(meta[key]).path == path, (key, meta[key])  # fmt: skip
    assert meta["issuer"]
    assert meta["code_challenge_methods_supported"] == ["S256"]
    assert {"authorization_code", "client_credentials", "refresh_token"} <= set(
        meta["grant_types_supported"]
    )
    assert meta["response_types_supported"] == ["code"]
    # the token endpoint answers for itself (an OAuth error), not Envoy's ext_authz denial
    bare = requests.post(oauth.url(TOKEN), data={"grant_type": "client_credentials"}, timeout=10)
    assert bare.status_code in (400, 401), bare.text
    assert bare.json()["error"] == "invalid_client"
    assert "reason" not in bare.json()


# -- the authorization-code flow in a real browser ------------------------------------------------


def test_a_browser_user_grants_an_application_read_access_with_pkce(
    oauth: OAuthStack, apps: dict[str, RegisteredClient], browser: WebDriver  # noqa: F811
) -> None:
    printer = apps["printer"]
    app = app_session(oauth, printer, scope="read")
    driver, wait = browser, WebDriverWait(browser, 15)

    # 1. the application sends the user to the authorization endpoint; no login yet: login page
    verifier = generate_token(48)
    url, state = app.create_authorization_url(oauth.url(AUTHORIZE), code_verifier=verifier)
    assert "code_challenge_method=S256" in url and "code_challenge=" in url
    driver.get(url)
    wait.until(ec.presence_of_element_located((By.ID, "login")))
    assert urlsplit(driver.current_url).path == "/auth/login"
    driver.find_element(By.ID, "username").send_keys("alice")
    driver.find_element(By.ID, "password").send_keys(USERS["alice"][0])
    driver.find_element(By.ID, "submit").click()

    # 2. the consent page names the application and the scope; the user says no first
    deny = (By.CSS_SELECTOR, "[name=decision][value=deny]")
    wait.until(ec.element_to_be_clickable(deny))
    assert printer.name in driver.find_element(By.TAG_NAME, "body").text
    # each requested scope, and only those (element ids: extauthz/oauth/consent.py)
    listed = driver.find_elements(By.CSS_SELECTOR, "#scopes [data-scope]")
    assert [item.get_attribute("data-scope") for item in listed] == ["read"]
    n = next_callback(oauth)
    driver.find_element(*deny).click()
    answer = query_of(oauth.callback.wait_for(n))
    assert answer["error"] == "access_denied" and answer["state"] == state
    assert "code" not in answer

    # 3. a second request (new state, new verifier): this time the user allows
    verifier = generate_token(48)
    url, state = app.create_authorization_url(oauth.url(AUTHORIZE), code_verifier=verifier)
    driver.get(url)
    allow = (By.CSS_SELECTOR, "[name=decision][value=allow]")
    wait.until(ec.element_to_be_clickable(allow))
    n = next_callback(oauth)
    driver.find_element(*allow).click()
    location = oauth.callback.wait_for(n)
    wait.until(ec.presence_of_element_located((By.ID, "done")))
    oauth.remember(query_of(location).get("code"))

    # 4. the application redeems the code with its verifier (the library checks the state)
    token = fetch(oauth, app, location, verifier, state)
    assert token["token_type"].lower() == "bearer"
    assert tokens.has_token_shape(token["access_token"], tokens.PREFIX)
    assert tokens.has_token_shape(token["refresh_token"], tokens.REFRESH_TOKEN_PREFIX)
    assert token["scope"] == "read"
    assert 0 < int(token["expires_in"]) <= 86400
    for cookie in driver.get_cookies():  # the browser never held the application's tokens
        assert cookie["value"] not in (token["access_token"], token["refresh_token"])
    assert token["access_token"] not in driver.page_source
    assert_no_jwt(driver)

    # 5. the application calls the API: upstream sees alice, the application, the grant only
    resp = app.get(oauth.url("/photos?page=2"), headers=API, timeout=10)
    assert resp.status_code == 200, resp.text
    seen = resp.json()["jwt"]
    assert seen["verified"], seen["error"]
    claims = seen["claims"]
    assert claims["sub"] == "alice"
    assert claims["client_id"] == printer.client_id
    assert claims["scope"] == "read"  # not alice's "read write"
    assert claims["auth_method"] == "oauth"
    assert token["access_token"] not in json.dumps(resp.json()["headers"])

    # 6. a route that needs a scope the user did not grant: 403 insufficient_scope
    resp = app.get(oauth.url(WRITE_ROUTE), headers=API, timeout=10)
    assert resp.status_code == 403, resp.text
    assert resp.json()["error"] == "insufficient_scope"
    assert 'error="insufficient_scope"' in resp.headers["www-authenticate"]
    # ... which alice herself, signed in, may use
    agent = signed_in(oauth, "alice")
    assert agent.request("GET", WRITE_ROUTE, headers=API).status == 200


def test_upstream_sees_the_application_and_the_granted_scope_only(
    oauth: OAuthStack, apps: dict[str, RegisteredClient]
) -> None:
    """The browser test's step 5 and 6 with the small user agent: a grant of "read" by a user
    who holds "read write"."""
    printer = apps["printer"]
    app = app_session(oauth, printer, scope="read")
    token = code_flow_token(oauth, app, "bob")
    assert token["scope"] == "read"
    app.token = token
    resp = app.get(oauth.url("/photos"), headers=API, timeout=10)
    assert resp.status_code == 200, resp.text
    claims = resp.json()["jwt"]["claims"]
    assert (claims["sub"], claims["client_id"]) == ("bob", printer.client_id)
    assert (claims["scope"], claims["auth_method"]) == ("read", "oauth")
    assert "roles" not in claims or not claims["roles"]
    denied = app.get(oauth.url(WRITE_ROUTE), headers=API, timeout=10)
    assert denied.status_code == 403, denied.text
    assert denied.json()["error"] == "insufficient_scope"
    assert 'error="insufficient_scope"' in denied.headers["www-authenticate"]
    agent = signed_in(oauth, "bob")  # bob himself holds "write"
    assert agent.request("GET", WRITE_ROUTE, headers=API).status == 200


def test_the_consent_page_cannot_be_framed_or_posted_cross_site(
    oauth: OAuthStack, apps: dict[str, RegisteredClient]
) -> None:
    app = app_session(oauth, apps["other"])
    url, _ = app.create_authorization_url(oauth.url(AUTHORIZE), code_verifier=generate_token(48))
    agent = signed_in(oauth, "bob")
    parts = urlsplit(url)
    page = agent.request("GET", f"{parts.path}?{parts.query}", headers={"Accept": "text/html"})
    assert page.status == 200, page.text
    framing = (page.header("x-frame-options") or "").upper()
    csp = page.header("content-security-policy") or ""
    assert framing == "DENY" or "frame-ancestors 'none'" in csp
    from tests.support.oauth_stack import consent_form

    form = consent_form(page.text)
    fields = {**dict(form.fields), "decision": "allow"}
    cross_site = {"Origin": "https://evil.example", "Accept": "text/html"}
    evil = agent.request("POST", form.action or parts.path, form=fields, headers=cross_site)
    assert evil.status == 403
    assert evil.header("location") is None
    forged = {**fields, "csrf_token": secrets.token_urlsafe(32)}
    wrong = agent.request("POST", form.action or parts.path, form=forged,
                          headers={"Origin": oauth.base_url, "Accept": "text/html"})  # fmt: skip
    assert wrong.status in (400, 403)
    assert wrong.header("location") is None


def test_a_public_client_uses_pkce_and_no_secret(
    oauth: OAuthStack, apps: dict[str, RegisteredClient]
) -> None:
    app = app_session(oauth, apps["public"])
    token = code_flow_token(oauth, app, "bob")
    claims = claims_upstream(oauth, token["access_token"])
    assert (claims["sub"], claims["client_id"], claims["scope"]) == (
        "bob", apps["public"].client_id, "read")  # fmt: skip


def test_an_application_token_is_bearer_only(
    oauth: OAuthStack, apps: dict[str, RegisteredClient]
) -> None:
    access = client_credentials(oauth, apps["batch"])
    assert call(oauth, access).status_code == 200
    as_cookie = requests.get(oauth.url("/photos"), timeout=10,
                             headers={**API, "Cookie": f"extauthz_session={access}"})  # fmt: skip
    assert as_cookie.status_code == 401, as_cookie.text


def test_a_route_for_logins_only_refuses_the_application(
    oauth: OAuthStack, apps: dict[str, RegisteredClient]
) -> None:
    token = code_flow_token(oauth, app_session(oauth, apps["printer"], scope="read write"))
    assert token["scope"] == "read write"
    refused_kind = call(oauth, token["access_token"], "/account/security/password")
    assert refused_kind.status_code == 403, refused_kind.text
    assert refused_kind.json()["error"] == "credential_kind_refused"
    agent = signed_in(oauth, "alice")  # the user herself, signed in
    assert agent.request("GET", "/account/security/password", headers=API).status == 200


def test_the_user_ends_an_application_from_the_session_page(
    oauth: OAuthStack, apps: dict[str, RegisteredClient]
) -> None:
    other = apps["other"]
    app = app_session(oauth, other)
    token = code_flow_token(oauth, app, "bob")
    access = token["access_token"]
    for node in (0, 1, 0, 1):  # in use on both nodes
        assert call(oauth, access, node=node).status_code == 200

    # the application sees only itself there, and may end nothing
    itself = call(oauth, access, "/auth/session")
    assert itself.status_code == 200 and itself.json()["kind"] == "oauth", itself.text
    bearer = {**API, "Authorization": f"Bearer {access}", "Origin": oauth.base_url}
    refused_end = requests.post(oauth.url("/auth/session/end"), json={"sid": "x"},
                                headers=bearer, timeout=10)  # fmt: skip
    assert refused_end.status_code == 403
    assert refused_end.json()["error"] == "credential_kind_refused"

    # bob's session page lists the application with its scope, never a token
    bob = signed_in(oauth, "bob")
    page = bob.request("GET", "/auth/session", headers=API)
    assert page.status == 200, page.text
    listed = [a for a in page.json()["applications"] if a["client_id"] == other.client_id]
    assert len(listed) == 1 and listed[0]["scopes"] == ["read"], listed
    assert access not in page.text and token["refresh_token"] not in page.text
    assert not TOKEN_IN_TEXT.search(page.text)
    end = bob.request("POST", "/auth/session/end", json_body={"sid": listed[0]["sid"]},
                      headers={**API, "Origin": oauth.base_url})  # fmt: skip
    assert end.status == 200, end.text
    assert end.json()["kind"] == "oauth" and end.json()["logged_out"] is False

    # the whole grant ends: the access token on every node, and the refresh token
    for node in (0, 1):
        assert call(oauth, access, node=node).status_code == 401, node
    with refused() as ended:
        app.refresh_token(oauth.url(TOKEN), refresh_token=token["refresh_token"])
    assert ended.value.error == "invalid_grant"
    assert bob.request("GET", "/x", headers=API).status == 200  # bob himself is still in


# -- client credentials, with curl ----------------------------------------------------------------


def curl(*args: str) -> tuple[int, Any]:
    """``curl -sS ARGS``: (HTTP status, the JSON body or the text)."""
    if shutil.which("curl") is None:
        from tests.conftest import missing

        missing("curl is not on PATH (README: assumed, like make and apt-get)")
    proc = subprocess.run(["curl", "-sS", "-w", "\n%{http_code}", *args],
                          capture_output=True, text=True, timeout=30, check=True)  # fmt: skip
    body, _, status = proc.stdout.rpartition("\n")
    try:
        return int(status), json.loads(body)
    except json.JSONDecodeError:
        return int(status), body


def test_client_credentials_with_curl(oauth: OAuthStack, apps: dict[str, RegisteredClient]) -> None:
    batch = apps["batch"]
    user = f"{batch.client_id}:{batch.secret}"
    status, token = curl("-u", user, "-d", "grant_type=client_credentials", "-d", "scope=read",
                         oauth.url(TOKEN))  # fmt: skip
    assert status == 200, token
    oauth.remember(token.get("access_token"))
    assert tokens.has_token_shape(token["access_token"], tokens.PREFIX)
    assert token["token_type"].lower() == "bearer" and token["scope"] == "read"
    assert "refresh_token" not in token  # RFC 6749 §4.4.3
    status, echoed = curl("-H", f"Authorization: Bearer {token['access_token']}",
                          "-H", "Accept: application/json", oauth.url("/reports"))  # fmt: skip
    assert status == 200, echoed
    claims = echoed["jwt"]["claims"]
    assert claims["sub"] == f"client:{batch.client_id}"
    assert claims["client_id"] == batch.client_id
    assert claims["scope"] == "read" and claims["auth_method"] == "oauth"

    # a scope the client may never have, a wrong secret, no secret
    status, body = curl("-u", user, "-d", "grant_type=client_credentials", "-d", "scope=write",
                        oauth.url(TOKEN))  # fmt: skip
    assert (status, body["error"]) == (400, "invalid_scope")
    status, body = curl("-u", f"{batch.client_id}:wrong-secret",
                        "-d", "grant_type=client_credentials", oauth.url(TOKEN))  # fmt: skip
    assert (status, body["error"]) == (401, "invalid_client")
    # a public client has no secret and cannot use client credentials
    public_id = apps["public"].client_id
    status, body = curl("-d", "grant_type=client_credentials", "-d", f"client_id={public_id}",
                        oauth.url(TOKEN))  # fmt: skip
    assert status in (400, 401) and body["error"] in ("invalid_client", "unauthorized_client")


def test_a_client_secret_in_the_query_string_is_refused(
    oauth: OAuthStack, apps: dict[str, RegisteredClient]
) -> None:
    batch = apps["batch"]
    assert batch.secret is not None
    query = f"client_id={batch.client_id}&client_secret={batch.secret}"
    status, body = curl("-d", "grant_type=client_credentials", f"{oauth.url(TOKEN)}?{query}")
    assert status in (400, 401), body
    assert "access_token" not in body and body["error"] in ("invalid_request", "invalid_client")
    # nor at the revocation and introspection endpoints
    for endpoint in (REVOKE, INTROSPECT):
        status, body = curl("-d", f"token={tokens.mint_token()}", f"{oauth.url(endpoint)}?{query}")
        assert (status, body["error"]) == (400, "invalid_request"), (endpoint, body)
    # also with the secret correctly in the header as well: the query still has it
    status, body = curl("-u", f"{batch.client_id}:{batch.secret}",
                        "-d", "grant_type=client_credentials",
                        f"{oauth.url(TOKEN)}?client_secret={batch.secret}")  # fmt: skip
    assert status == 400 and "access_token" not in body, body


# -- refresh tokens: rotation, reuse detection -----------------------------------------------------


def test_refresh_rotates_and_reuse_of_a_rotated_token_revokes_the_family(
    oauth: OAuthStack, apps: dict[str, RegisteredClient]
) -> None:
    app = app_session(oauth, apps["printer"])
    first = code_flow_token(oauth, app)
    # refreshed through the other node: the records are shared
    second = dict(app.refresh_token(oauth.url(TOKEN, 1), refresh_token=first["refresh_token"]))
    oauth.remember(second.get("access_token"), second.get("refresh_token"))
    assert tokens.has_token_shape(second["refresh_token"], tokens.REFRESH_TOKEN_PREFIX)
    assert second["refresh_token"] != first["refresh_token"]
    assert second["access_token"] != first["access_token"]
    claims = claims_upstream(oauth, second["access_token"])
    assert (claims["sub"], claims["scope"]) == ("alice", "read")
    # a refresh never widens the grant
    with refused() as wider:
        app.refresh_token(oauth.url(TOKEN), refresh_token=second["refresh_token"],
                          scope="read write")  # fmt: skip
    assert wider.value.error == "invalid_scope"

    # both access tokens in use on both nodes (their session caches warm)
    for access in (first["access_token"], second["access_token"]):
        for node in (0, 1, 0, 1):
            assert call(oauth, access, node=node).status_code == 200

    # the rotated token presented again: refused, and the whole family is revoked
    with refused() as reuse:
        app.refresh_token(oauth.url(TOKEN), refresh_token=first["refresh_token"])
    assert reuse.value.error == "invalid_grant"
    for which, access in enumerate((first["access_token"], second["access_token"])):
        for node in (0, 1):
            assert call(oauth, access, node=node).status_code == 401, (which, node)
    with refused() as family:
        app.refresh_token(oauth.url(TOKEN), refresh_token=second["refresh_token"])
    assert family.value.error == "invalid_grant"


def test_a_refresh_token_is_not_an_access_token(
    oauth: OAuthStack, apps: dict[str, RegisteredClient]
) -> None:
    app = app_session(oauth, apps["printer"])
    token = code_flow_token(oauth, app)
    assert call(oauth, token["refresh_token"]).status_code == 401
    # and only the client it was issued to may use it
    other = app_session(oauth, apps["other"])
    with refused() as stolen:
        other.refresh_token(oauth.url(TOKEN), refresh_token=token["refresh_token"])
    assert stolen.value.error == "invalid_grant"


# -- revocation (RFC 7009) and introspection (RFC 7662) --------------------------------------------


def client_credentials(oauth: OAuthStack, client: RegisteredClient) -> str:
    app = app_session(oauth, client)
    token = app.fetch_token(oauth.url(TOKEN), grant_type="client_credentials")
    oauth.remember(token["access_token"])
    return str(token["access_token"])


def test_revocation_is_a_401_at_the_next_request_on_every_node(
    oauth: OAuthStack, apps: dict[str, RegisteredClient]
) -> None:
    access = client_credentials(oauth, apps["batch"])
    run = secrets.token_hex(4)
    # warm both nodes' session caches: the second request of each is answered from the cache
    for node, envoy in enumerate(n.envoy for n in oauth.nodes):
        for i in (1, 2):
            assert call(oauth, access, f"/warm/{run}/{i}", node).status_code == 200
        second = f"/warm/{run}/2"
        entries: list[dict[str, Any]] = []
        deadline = time.monotonic() + 5
        while not entries and time.monotonic() < deadline:  # the log is flushed every 100 ms
            entries = [e for e in envoy.access_log() if e.get("path") == second]
            time.sleep(0.05)
        assert [e["session_cache"] for e in entries] == ["hit"], entries

    app = app_session(oauth, apps["batch"])
    resp = app.revoke_token(oauth.url(REVOKE), token=access, token_type_hint="access_token")
    assert resp.status_code == 200, resp.text
    for node in range(len(oauth.nodes)):
        after = call(oauth, access, f"/after/{run}", node)
        assert after.status_code == 401, (node, after.text)
        assert 'error="invalid_token"' in after.headers["www-authenticate"]
    # revoking again, or a token that never existed: 200 all the same (RFC 7009 §2.2)
    assert app.revoke_token(oauth.url(REVOKE), token=access).status_code == 200
    assert app.revoke_token(oauth.url(REVOKE), token=tokens.mint_token()).status_code == 200


def test_a_client_cannot_revoke_another_clients_token(
    oauth: OAuthStack, apps: dict[str, RegisteredClient]
) -> None:
    access = client_credentials(oauth, apps["batch"])
    other = app_session(oauth, apps["other"])
    other.revoke_token(oauth.url(REVOKE), token=access, token_type_hint="access_token")
    assert call(oauth, access).status_code == 200
    # nor without authenticating itself
    anonymous = requests.post(oauth.url(REVOKE), data={"token": access}, timeout=10)
    assert anonymous.status_code == 401 and anonymous.json()["error"] == "invalid_client"
    assert call(oauth, access).status_code == 200


def test_revoking_a_refresh_token_ends_the_refreshes(
    oauth: OAuthStack, apps: dict[str, RegisteredClient]
) -> None:
    app = app_session(oauth, apps["printer"])
    token = code_flow_token(oauth, app)
    resp = app.revoke_token(oauth.url(REVOKE), token=token["refresh_token"],
                            token_type_hint="refresh_token")  # fmt: skip
    assert resp.status_code == 200, resp.text
    with refused() as dead:
        app.refresh_token(oauth.url(TOKEN), refresh_token=token["refresh_token"])
    assert dead.value.error == "invalid_grant"


def test_introspection_active_inactive_and_as_a_jwt(
    oauth: OAuthStack, apps: dict[str, RegisteredClient]
) -> None:
    printer = apps["printer"]
    app = app_session(oauth, printer)
    token = code_flow_token(oauth, app)
    access = token["access_token"]

    resp = app.introspect_token(oauth.url(INTROSPECT), token=access)
    assert resp.status_code == 200, resp.text
    info = resp.json()
    assert info["active"] is True
    assert (info["sub"], info["client_id"], info["scope"]) == ("alice", printer.client_id, "read")
    assert info["exp"] > time.time()

    as_jwt = app.introspect_token(oauth.url(INTROSPECT), token=access,
                                  headers={"Accept": "application/jwt"})  # fmt: skip
    assert as_jwt.status_code == 200, as_jwt.text
    assert as_jwt.headers["content-type"].split(";")[0] == "application/jwt"
    signed = as_jwt.text.strip()
    key = jwt.PyJWKClient(oauth.url("/.well-known/jwks.json")).get_signing_key_from_jwt(signed)
    claims = jwt.decode(signed, key.key, algorithms=["ES256", "EdDSA", "RS256"],
                        audience=AUDIENCE, issuer=ISSUER)  # fmt: skip
    assert (claims["sub"], claims["client_id"], claims["scope"]) == (
        "alice", printer.client_id, "read")  # fmt: skip
    assert claims["auth_method"] == "oauth"

    app.revoke_token(oauth.url(REVOKE), token=access, token_type_hint="access_token")
    for candidate in (access, tokens.mint_token(), "not-a-token"):
        gone = app.introspect_token(oauth.url(INTROSPECT), token=candidate)
        assert gone.status_code == 200 and gone.json() == {"active": False}, gone.text
    # and no JWT for a token that is not active
    gone_jwt = app.introspect_token(oauth.url(INTROSPECT), token=access,
                                    headers={"Accept": "application/jwt"})  # fmt: skip
    assert gone_jwt.status_code == 200 and gone_jwt.json() == {"active": False}
    # introspection needs an authenticated client
    anonymous = requests.post(oauth.url(INTROSPECT), data={"token": access}, timeout=10)
    assert anonymous.status_code == 401


# -- refusals --------------------------------------------------------------------------------------


def _altered_redirect_uris(cb: str) -> dict[str, str]:
    port = int(urlsplit(cb).port or 0)
    host = f"127.0.0.1:{port}"
    return {
        "unregistered": f"http://{host}/other",
        "suffix": cb + "x",
        "subpath": cb + "/x",
        "query": cb + "?next=/admin",
        "fragment": cb + "#x",
        "userinfo": f"http://evil.example@{host}/callback",
        "at-host": f"http://{host}@evil.example/callback",
        "backslash": f"http://{host}\\@evil.example/callback",
        "backslash-path": f"http://{host}\\callback",
        "scheme-relative": f"//{host}/callback",
        "other-port": f"http://127.0.0.1:{port + 1}/callback",
        "https": f"https://{host}/callback",
        "localhost": f"http://localhost:{port}/callback",
        "upper-case": cb.upper(),
        "trailing-dot": f"http://127.0.0.1.:{port}/callback",
    }


REDIRECT_CASES = list(_altered_redirect_uris("http://127.0.0.1:1/callback"))


@pytest.mark.parametrize("case", REDIRECT_CASES)
def test_an_altered_redirect_uri_is_refused_without_a_redirect(
    oauth: OAuthStack, apps: dict[str, RegisteredClient], case: str
) -> None:
    bad = _altered_redirect_uris(oauth.callback.redirect_uri)[case]
    app = app_session(oauth, apps["printer"])
    url, _ = app.create_authorization_url(oauth.url(AUTHORIZE), code_verifier=generate_token(48),
                                          redirect_uri=bad)  # fmt: skip
    parts = urlsplit(url)
    before = len(oauth.callback.requests)
    # signed in, or not yet (then too, before any login page: nothing to come back to)
    for agent in (signed_in(oauth, "alice"), oauth.client()):
        resp = agent.request("GET", f"{parts.path}?{parts.query}",
                             headers={"Accept": "text/html"})  # fmt: skip
        assert resp.status == 400, (resp.status, resp.header("location"))
        assert resp.header("location") is None
        assert "code=" not in resp.text
    assert len(oauth.callback.requests) == before


def test_the_token_request_must_name_the_same_redirect_uri(
    oauth: OAuthStack, apps: dict[str, RegisteredClient]
) -> None:
    app = app_session(oauth, apps["printer"])
    location, verifier, state = authorize(oauth, app)
    elsewhere = oauth.callback.redirect_uri + "x"
    with refused() as wrong:
        app.fetch_token(oauth.url(TOKEN), authorization_response=location, state=state,
                        code_verifier=verifier, redirect_uri=elsewhere)  # fmt: skip
    assert wrong.value.error == "invalid_grant"


@pytest.mark.parametrize("challenge", ["missing", "plain"])
def test_an_authorization_request_without_s256_gets_no_code(
    oauth: OAuthStack, apps: dict[str, RegisteredClient], challenge: str
) -> None:
    client = apps["printer"]
    # without code_challenge_method="S256" the library sends no challenge of its own
    app = OAuth2Session(client.client_id, client.secret, scope="read",
                        redirect_uri=oauth.callback.redirect_uri)  # fmt: skip
    verifier = generate_token(48)
    plain = {"code_challenge": verifier, "code_challenge_method": "plain"}
    extra = plain if challenge == "plain" else {}
    url, state = app.create_authorization_url(oauth.url(AUTHORIZE), **extra)
    assert ("code_challenge=" in url) == (challenge == "plain")
    answer = decide(oauth, signed_in(oauth, "alice"), url, "allow")
    location = answer.header("location")
    if location is None:  # refused on the page
        assert answer.status == 400, answer.text
        return
    # or sent back to the (registered, exactly matching) redirect_uri with an error (§4.1.2.1)
    assert location.startswith(oauth.callback.redirect_uri + "?"), location
    params = query_of(location)
    oauth.remember(params.get("code"))
    assert "code" not in params, "a code was issued without PKCE S256"
    assert params["error"] == "invalid_request" and params["state"] == state


def test_the_code_verifier_is_required_and_checked(
    oauth: OAuthStack, apps: dict[str, RegisteredClient]
) -> None:
    app = app_session(oauth, apps["printer"])
    location, verifier, state = authorize(oauth, app)
    with refused() as missing_verifier:
        app.fetch_token(oauth.url(TOKEN), authorization_response=location, state=state)
    assert missing_verifier.value.error in ("invalid_request", "invalid_grant")
    location, verifier, state = authorize(oauth, app)
    with refused() as wrong_verifier:
        app.fetch_token(oauth.url(TOKEN), authorization_response=location, state=state,
                        code_verifier=generate_token(48))  # fmt: skip
    assert wrong_verifier.value.error == "invalid_grant"


def test_a_code_used_twice_is_refused_and_revokes_what_it_issued(
    oauth: OAuthStack, apps: dict[str, RegisteredClient]
) -> None:
    app = app_session(oauth, apps["printer"])
    location, verifier, state = authorize(oauth, app)
    first = fetch(oauth, app, location, verifier, state)
    assert call(oauth, first["access_token"]).status_code == 200
    with refused() as again:
        app.fetch_token(oauth.url(TOKEN), authorization_response=location, state=state,
                        code_verifier=verifier)  # fmt: skip
    assert again.value.error == "invalid_grant"
    assert call(oauth, first["access_token"]).status_code == 401  # RFC 6749 §4.1.2
    with refused() as family:
        app.refresh_token(oauth.url(TOKEN), refresh_token=first["refresh_token"])
    assert family.value.error == "invalid_grant"


# -- last: what the processes wrote ----------------------------------------------------------------


def test_no_log_line_of_any_process_holds_a_credential(oauth: OAuthStack) -> None:
    """Runs last in this module (file order): every token, code and secret the tests saw."""
    time.sleep(0.3)  # Envoy flushes its access log every 100 ms
    assert oauth.secrets, "the tests above noted no credential"
    for proc in oauth.processes():
        for path in (proc.stdout_path, proc.stderr_path):
            text = Path(path).read_text(errors="replace") if Path(path).exists() else ""
            for number, line in enumerate(text.splitlines(), 1):
                leaked = [s for s in oauth.secrets if s in line]
                assert not leaked, f"{path}:{number} holds a credential"
                shaped = [
                    t for t in TOKEN_IN_TEXT.findall(line)
                    if len(t) in (tokens.TOKEN_LENGTH, tokens.TAGGED_TOKEN_LENGTH)
                ]
                assert not shaped, f"{path}:{number} holds a token"


def test_redis_holds_no_credential_in_the_clear(oauth: OAuthStack) -> None:
    """Sessions, codes, refresh tokens and client secrets are stored as hashes: no key and no
    value in Redis holds one of the credentials the tests saw."""
    import redis

    def text(value: object) -> str:
        return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)

    assert oauth.secrets
    seen = 0
    with redis.Redis(port=oauth.redis.port) as r:
        for key in r.scan_iter(count=500):
            kind = text(r.type(key))
            values: list[object] = [key]
            if kind == "string":
                values.append(r.get(key))
            elif kind == "hash":
                values += [k + b"=" + v for k, v in r.hgetall(key).items()]
            elif kind == "set":
                values += list(r.smembers(key))
            elif kind == "zset":
                values += list(r.zrange(key, 0, -1))
            elif kind == "list":
                values += list(r.lrange(key, 0, -1))
            seen += 1
            for value in map(text, values):
                leaked = [secret for secret in oauth.secrets if secret in value]
                assert not leaked, f"redis key {text(key)} ({kind}) holds a credential"
    assert seen > 0
