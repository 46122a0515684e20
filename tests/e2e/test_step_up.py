"""Step-up through the real stack: Envoy running the repository's front proxy with one more
route whose ``context_extensions`` ask for ``required_amr: mfa`` and ``max_auth_age``,
extauthz as a process, the echo upstream verifying the JWT. A password-only session is sent to
the step-up page (browser) or gets the RFC 9470 challenge (API); after enrolling a one-time
code factor through Envoy, the same browser is let in with a rotated token."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pyotp
import pytest
import yaml

from harness.extauthz import add_user
from harness.stack import FRONT_PROXY, start_stack
from tests.support.auth_stack import COOKIE_NAME, USERS, Client

pytestmark = pytest.mark.e2e

API = {"Accept": "application/json"}
BROWSER = {"Accept": "text/html"}


def front_proxy_with_a_step_up_route(work_dir: Path) -> Path:
    """The front proxy, plus ``/admin/`` (before the catch-all) needing ``mfa`` within 300 s."""
    doc = yaml.safe_load(FRONT_PROXY.read_text())
    for listener in doc["static_resources"]["listeners"]:
        for chain in listener["filter_chains"]:
            for f in chain["filters"]:
                config = f.get("typed_config", {})
                for host in config.get("route_config", {}).get("virtual_hosts", []):
                    catch_all = host["routes"][-1]
                    assert catch_all["match"] == {"prefix": "/"}
                    admin = yaml.safe_load(yaml.safe_dump(catch_all))
                    admin["match"] = {"prefix": "/admin/"}
                    per_route = admin["typed_per_filter_config"]["envoy.filters.http.ext_authz"]
                    per_route["check_settings"]["context_extensions"].update(
                        {"required_amr": "mfa", "max_auth_age": "300"}
                    )
                    host["routes"].insert(len(host["routes"]) - 1, admin)
    out = work_dir / "front-proxy-step-up.yaml"
    out.write_text(yaml.safe_dump(doc, sort_keys=False))
    return out


@pytest.fixture(scope="module")
def stack(envoy_binary: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Client]:
    work = tmp_path_factory.mktemp("step-up")
    users = work / "users.json"
    password, roles, scopes = USERS["alice"]
    add_user(users, "alice", password, roles, scopes)
    env = {"EXTAUTHZ_USERS_FILE": str(users), "EXTAUTHZ_MFA_FILE": str(work / "factors.json")}
    running = start_stack(envoy_binary, work, env=env,
                          envoy_source=front_proxy_with_a_step_up_route(work))
    try:
        yield Client(running.ports.listener)
    finally:
        running.stop()


def test_step_up_through_envoy(stack: Client) -> None:
    client = stack
    origin = {"Origin": f"http://127.0.0.1:{client.port}"}
    assert client.login("alice").status == 200
    token = client.cookies[COOKIE_NAME]
    assert client.request("GET", "/orders", headers=API).status == 200  # no step-up there

    browser = client.request("GET", "/admin/users", headers=BROWSER)
    assert browser.status == 302
    assert browser.header("location") == "/auth/mfa/step-up?return_to=%2Fadmin%2Fusers"
    api = client.request("GET", "/admin/users", send_cookies=False,
                         headers={"Authorization": f"Bearer {token}", **API})
    assert api.status == 401
    challenge = api.header("www-authenticate") or ""
    assert 'error="insufficient_user_authentication"' in challenge
    assert 'acr_values="mfa"' in challenge and 'max_age="300"' in challenge

    enrolment = client.request("GET", "/auth/mfa/enrol", headers=API)
    assert enrolment.status == 200, enrolment.text
    view = enrolment.json()
    done = client.request("POST", "/auth/mfa/enrol", headers={**API, **origin}, json_body={
        "kind": "totp", "factor_id": view["factor_id"],
        "response": pyotp.TOTP(view["secret"]).now(),
    })  # fmt: skip
    assert done.status == 200, done.text
    assert len(done.json()["recovery_codes"]) == 10
    new_token = client.cookies[COOKIE_NAME]
    assert new_token != token  # rotated

    allowed = client.request("GET", "/admin/users", headers=API)  # with the new cookie
    assert allowed.status == 200, allowed.text
    claims = allowed.json()["jwt"]["claims"]
    assert allowed.json()["jwt"]["verified"]
    assert claims["amr"] == ["pwd", "otp", "mfa"] and claims["sub"] == "alice"
