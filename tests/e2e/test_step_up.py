"""Step-up through the real stack: Envoy running the repository's front proxy with one more
route whose ``context_extensions`` ask for ``required_amr: mfa`` and ``max_auth_age``,
extauthz as a process, the echo upstream verifying the JWT. A password-only session is sent to
the step-up page (browser) or gets the RFC 9470 challenge (API); after enrolling a one-time
code factor through Envoy, the same browser is let in with a rotated token."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pyotp
import pytest
import yaml
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

from harness.extauthz import add_user
from harness.stack import FRONT_PROXY, start_stack
from tests.support.auth_stack import COOKIE_NAME, USERS, Client
from tests.support.browser import chromium

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
    for name in ("alice", "bob"):
        password, roles, scopes = USERS[name]
        add_user(users, name, password, roles, scopes)
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


@pytest.fixture
def browser(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[WebDriver]:
    with chromium(tmp_path, monkeypatch) as driver:
        yield driver


def test_a_browser_steps_up_enrols_and_signs_in_with_a_recovery_code(
    stack: Client, browser: WebDriver
) -> None:
    """Plain forms under the strict CSP, in Chromium: the QR code is drawn (inline SVG), the
    pending login's cookie carries the second step, no script anywhere."""
    driver, base = browser, f"http://127.0.0.1:{stack.port}"
    wait = WebDriverWait(driver, 10)

    def path() -> str:
        parts = urlsplit(driver.current_url)
        return parts.path + (f"?{parts.query}" if parts.query else "")

    def sign_in() -> None:
        wait.until(ec.presence_of_element_located((By.ID, "login")))
        driver.find_element(By.ID, "username").send_keys("bob")
        driver.find_element(By.ID, "password").send_keys(USERS["bob"][0])
        driver.find_element(By.ID, "submit").click()

    driver.get(f"{base}/admin/users")
    sign_in()
    wait.until(ec.presence_of_element_located((By.ID, "password-form")))
    assert path() == "/auth/mfa/step-up?return_to=%2Fadmin%2Fusers"  # the password is not enough
    driver.find_element(By.ID, "enrol").click()
    wait.until(ec.presence_of_element_located((By.ID, "qr")))
    qr = driver.find_element(By.CSS_SELECTOR, "#qr svg")
    assert qr.size["width"] >= 100 and qr.size["height"] >= 100  # drawn, not blocked
    assert "<script" not in driver.page_source
    secret = driver.find_element(By.ID, "secret").text.replace(" ", "")
    driver.find_element(By.ID, "totp-response").send_keys(pyotp.TOTP(secret).now())
    driver.find_element(By.ID, "totp-submit").click()
    wait.until(ec.presence_of_element_located((By.ID, "recovery-codes")))
    codes = [li.text for li in driver.find_elements(By.CSS_SELECTOR, "#recovery-codes li")]
    assert len(codes) == 10

    driver.get(f"{base}/admin/users")
    wait.until(ec.presence_of_element_located((By.TAG_NAME, "body")))
    assert "Signed in as bob" in driver.find_element(By.TAG_NAME, "body").text

    # a new sign-in: the password, then the second step on the pending login's cookie
    driver.delete_all_cookies()
    driver.get(f"{base}/admin/users")
    sign_in()
    wait.until(ec.presence_of_element_located((By.ID, "recovery-form")))
    assert path() == "/auth/mfa/verify"
    assert {c["name"] for c in driver.get_cookies()} == {f"{COOKIE_NAME}-mfa"}
    driver.find_element(By.ID, "recovery-response").send_keys(codes[0])
    driver.find_element(By.ID, "recovery-submit").click()
    wait.until(ec.url_contains("/admin/users"))
    assert "Signed in as bob" in driver.find_element(By.TAG_NAME, "body").text
    assert {c["name"] for c in driver.get_cookies()} == {COOKIE_NAME}
