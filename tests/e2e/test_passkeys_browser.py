"""Passkeys in a real browser through the real stack: headless Chromium with a WebDriver
virtual authenticator (CTAP2, internal transport, resident keys, user verification) on
``http://localhost:<port>`` (a secure context; an IP address cannot be a WebAuthn rp id),
Envoy, extauthz and the echo upstream. A password sign-in registers a passkey and steps up
with it on a route needing ``mfa``; after logging out the passkey alone signs in (``amr`` =
``swk mfa`` in the session and in the JWT the upstream received), then the password plus the
passkey as second step (``pwd swk mfa``)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.common.virtual_authenticator import (
    Protocol,
    Transport,
    VirtualAuthenticatorOptions,
)
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

from harness.extauthz import add_user
from harness.stack import StackPorts, start_stack
from tests.e2e.test_browser import assert_no_jwt, path_of
from tests.e2e.test_step_up import front_proxy_with_a_step_up_route
from tests.support.auth_stack import COOKIE_NAME, USERS, Client
from tests.support.browser import chromium

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def base_url(envoy_binary: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    work = tmp_path_factory.mktemp("passkeys")
    users = work / "users.json"
    password, roles, scopes = USERS["alice"]
    add_user(users, "alice", password, roles, scopes)
    ports = StackPorts.allocate()
    origin = f"http://localhost:{ports.listener}"
    env = {"EXTAUTHZ_USERS_FILE": str(users), "EXTAUTHZ_MFA_FILE": str(work / "factors.json"),
           "EXTAUTHZ_MFA_RP_ID": "localhost", "EXTAUTHZ_MFA_ORIGINS": origin}
    running = start_stack(envoy_binary, work, env=env, ports=ports,
                          envoy_routes=front_proxy_with_a_step_up_route(work))
    try:
        yield origin
    finally:
        running.stop()


@pytest.fixture
def browser(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[WebDriver]:
    with chromium(tmp_path, monkeypatch) as driver:
        yield driver


def session_amr(driver: WebDriver, port: int) -> list[str]:
    """The amr of the browser's session, from ``/auth/session`` as JSON."""
    token = {c["name"]: c["value"] for c in driver.get_cookies()}[COOKIE_NAME]
    answer = Client(port).request("GET", "/auth/session", headers={
        "Accept": "application/json", "Cookie": f"{COOKIE_NAME}={token}"})
    assert answer.status == 200
    amr: list[str] = answer.json()["amr"]
    return amr


def jwt_amr(driver: WebDriver, base: str, wait: WebDriverWait[WebDriver]) -> str:
    """The amr claim the upstream received in the JWT, as the echo page shows it."""
    driver.get(f"{base}/account")
    wait.until(ec.presence_of_element_located((By.TAG_NAME, "strong")))
    text = re.sub(r"\s+", " ", driver.find_element(By.TAG_NAME, "body").text)
    found = re.search(r'"amr": \[([^\]]*)\]', text)
    assert found, text
    return found.group(1).replace('"', "").replace(",", "").strip()


def log_out(driver: WebDriver, base: str, wait: WebDriverWait[WebDriver]) -> None:
    driver.get(f"{base}/auth/logout")
    wait.until(ec.element_to_be_clickable((By.ID, "logout"))).click()
    wait.until(ec.presence_of_element_located((By.ID, "notice")))
    assert COOKIE_NAME not in {c["name"] for c in driver.get_cookies()}


def test_register_a_passkey_then_sign_in_with_it_alone_and_after_the_password(
    base_url: str, browser: WebDriver
) -> None:
    driver, base = browser, base_url
    port = int(base.rsplit(":", 1)[1])
    wait: WebDriverWait[WebDriver] = WebDriverWait(driver, 15)
    driver.get(f"{base}/auth/login?return_to=%2Fauth%2Fpasskeys")
    driver.add_virtual_authenticator(VirtualAuthenticatorOptions(
        protocol=Protocol.CTAP2, transport=Transport.INTERNAL, has_resident_key=True,
        has_user_verification=True, is_user_verified=True))

    # 1. a password sign-in (fresh), then a passkey added from the account area
    driver.find_element(By.ID, "username").send_keys("alice")
    driver.find_element(By.ID, "password").send_keys(USERS["alice"][0])
    driver.find_element(By.ID, "submit").click()
    wait.until(ec.presence_of_element_located((By.ID, "passkey-name"))).send_keys("laptop")
    assert "script-src 'self'" not in driver.page_source  # the policy is a header, not inline
    driver.find_element(By.ID, "passkey-button").click()
    codes = wait.until(ec.presence_of_element_located((By.ID, "recovery-codes")))
    assert len(codes.find_elements(By.TAG_NAME, "li")) == 10  # the first factor's, once
    driver.find_element(By.ID, "continue").click()
    wait.until(ec.url_contains("done=added"))
    rows = driver.find_elements(By.CSS_SELECTOR, "#passkeys tr[data-passkey]")
    assert len(rows) == 1 and "laptop" in rows[0].text and "swk" in rows[0].text
    credentials = driver.get_credentials()
    assert len(credentials) == 1 and credentials[0].is_resident_credential
    assert session_amr(driver, port) == ["pwd"]  # registering is no authentication

    # 2. a route that needs mfa: the step-up page, answered with the passkey
    driver.get(f"{base}/admin/users")
    wait.until(ec.element_to_be_clickable((By.ID, "webauthn-link"))).click()
    wait.until(ec.element_to_be_clickable((By.ID, "passkey-button"))).click()
    wait.until(ec.url_contains("/admin/users"))
    wait.until(ec.presence_of_element_located((By.TAG_NAME, "strong")))
    assert session_amr(driver, port) == ["swk", "mfa"]
    log_out(driver, base, wait)

    # 3. the passkey alone
    driver.get(f"{base}/auth/passkeys/sign-in?return_to=%2Fauth%2Fsession")
    wait.until(ec.element_to_be_clickable((By.ID, "passkey-button"))).click()
    wait.until(ec.presence_of_element_located((By.ID, "user")))
    assert path_of(driver) == "/auth/session"
    assert session_amr(driver, port) == ["swk", "mfa"]
    assert jwt_amr(driver, base, wait) == "swk mfa"
    assert_no_jwt(driver)
    log_out(driver, base, wait)

    # 4. the password, then the passkey as the second step
    driver.get(f"{base}/auth/login?return_to=%2Fauth%2Fsession")
    driver.find_element(By.ID, "username").send_keys("alice")
    driver.find_element(By.ID, "password").send_keys(USERS["alice"][0])
    driver.find_element(By.ID, "submit").click()
    wait.until(ec.element_to_be_clickable((By.ID, "webauthn-link"))).click()
    wait.until(ec.element_to_be_clickable((By.ID, "passkey-button"))).click()
    wait.until(ec.presence_of_element_located((By.ID, "user")))
    assert path_of(driver) == "/auth/session"
    assert session_amr(driver, port) == ["pwd", "swk", "mfa"]
    assert jwt_amr(driver, base, wait) == "pwd swk mfa"
    assert driver.get_credentials()[0].sign_count >= 2
