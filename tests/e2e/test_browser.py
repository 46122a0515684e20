"""A real browser through the real stack: headless Chromium (Debian's ``chromium`` and
``chromedriver``, installed by ``make browser``) driven by Selenium, talking only to Envoy on
127.0.0.1.

Protected page → login form → submit → back on the page, which shows the user → log out →
the protected page sends the browser to the login form again. At no point does the browser
hold a JWT: neither in a cookie nor in a page.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

from extauthz import tokens
from tests.support.auth_stack import COOKIE_NAME, USERS, AuthStack
from tests.support.browser import chromium

pytestmark = pytest.mark.e2e

# a JWS compact serialisation: three base64url parts, the header starting with '{"' (eyJ)
JWT_PATTERN = re.compile(r"eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")


@pytest.fixture
def browser(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[WebDriver]:
    with chromium(tmp_path, monkeypatch) as driver:
        yield driver


def assert_no_jwt(driver: WebDriver) -> None:
    """Neither a cookie nor the page the browser holds contains a JWT."""
    for cookie in driver.get_cookies():
        assert not JWT_PATTERN.search(cookie["value"]), f"cookie {cookie['name']} holds a JWT"
    assert not JWT_PATTERN.search(driver.page_source)


def path_of(driver: WebDriver) -> str:
    url = urlsplit(driver.current_url)
    return url.path + (f"?{url.query}" if url.query else "")


def test_browser_signs_in_sees_the_page_and_signs_out(
    auth_stack: AuthStack, browser: WebDriver
) -> None:
    driver = browser
    wait = WebDriverWait(driver, 10)
    base = auth_stack.base_url

    # 1. a protected page sends the unauthenticated browser to the login form
    driver.get(f"{base}/account?tab=1")
    wait.until(ec.presence_of_element_located((By.ID, "login")))
    assert path_of(driver) == "/auth/login?return_to=%2Faccount%3Ftab%3D1"
    assert_no_jwt(driver)

    # 2. the user enters credentials once
    driver.find_element(By.ID, "username").send_keys("alice")
    driver.find_element(By.ID, "password").send_keys(USERS["alice"][0])
    driver.find_element(By.ID, "submit").click()

    # 3. back on the page, which shows the user from the JWT the upstream received
    wait.until(ec.url_contains("/account"))
    wait.until(ec.presence_of_element_located((By.TAG_NAME, "strong")))
    assert path_of(driver) == "/account?tab=1"
    assert "Signed in as alice" in driver.find_element(By.TAG_NAME, "body").text
    assert '"sub": "alice"' in driver.page_source
    cookies = {c["name"]: c for c in driver.get_cookies()}
    assert set(cookies) == {COOKIE_NAME}
    session_cookie = cookies[COOKIE_NAME]
    assert tokens.has_token_shape(session_cookie["value"])  # the opaque token, nothing else
    assert session_cookie["httpOnly"] is True
    assert session_cookie["sameSite"] == "Lax"
    assert session_cookie["path"] == "/"
    assert_no_jwt(driver)

    # the session page shows the user's own session, never the token
    driver.get(f"{base}/auth/session")
    wait.until(ec.presence_of_element_located((By.ID, "user")))
    assert driver.find_element(By.ID, "user").text == "alice"
    assert session_cookie["value"] not in driver.page_source

    # 4. log out (a same-site form post)
    driver.find_element(By.ID, "logout").click()
    wait.until(ec.presence_of_element_located((By.ID, "notice")))
    assert path_of(driver) == "/auth/login?logged_out=1"
    assert COOKIE_NAME not in {c["name"] for c in driver.get_cookies()}

    # 5. the protected page sends the browser to the login form again
    driver.get(f"{base}/account?tab=1")
    wait.until(ec.presence_of_element_located((By.ID, "login")))
    assert path_of(driver).startswith("/auth/login?return_to=")
    assert_no_jwt(driver)

    # and the old token is dead on the server, not only forgotten by the browser
    client = auth_stack.client()
    old_cookie = f"{COOKIE_NAME}={session_cookie['value']}"
    stale = client.request(
        "GET", "/account", headers={"Accept": "application/json", "Cookie": old_cookie}
    )
    assert stale.status == 401
