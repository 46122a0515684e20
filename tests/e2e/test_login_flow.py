"""The login flow end to end, as curl-style and JSON clients see it: Envoy (the repository's
front proxy) → ext_authz → extauthz (Redis store, a user file) → the echo upstream."""

from __future__ import annotations

import secrets
import time
from pathlib import Path

import pytest

from extauthz import tokens
from tests.support.auth_stack import (
    COOKIE_NAME,
    AuthStack,
    Client,
    redis_config_set,
)

pytestmark = pytest.mark.e2e


API = {"Accept": "application/json"}


def test_json_client_signs_in_uses_the_session_and_signs_out(auth_stack: AuthStack) -> None:
    client = auth_stack.client()
    anonymous = client.request("GET", "/orders", headers=API)
    assert anonymous.status == 401
    assert anonymous.header("www-authenticate") == 'Bearer realm="extauthz-demo"'

    wrong = client.login("alice", "not her password")
    assert wrong.status == 401
    assert wrong.json()["error"] == "invalid_credentials"
    assert not client.cookies

    login = client.login("alice")
    assert login.status == 200
    assert login.json()["sub"] == "alice"
    set_cookie = login.set_cookies()[COOKIE_NAME]
    assert "HttpOnly" in set_cookie and "SameSite=Lax" in set_cookie and "Path=/" in set_cookie
    token = client.cookies[COOKIE_NAME]
    assert tokens.has_token_shape(token)
    assert token not in login.text

    echoed = client.request("GET", "/orders?page=1", headers=API)
    assert echoed.status == 200
    jwt = echoed.json()["jwt"]
    assert jwt["verified"], jwt["error"]
    assert jwt["claims"]["sub"] == "alice"
    assert jwt["claims"]["roles"] == ["admin"]
    assert jwt["claims"]["scope"] == "read write"
    upstream_headers = echoed.json()["headers"]
    assert token not in str(upstream_headers)  # the opaque token never reaches upstream
    assert echoed.header("authorization") is None  # nor does the JWT come back

    summary = client.request("GET", "/auth/session", headers=API)
    assert summary.status == 200 and summary.json()["sub"] == "alice"

    logout = client.request("POST", "/auth/logout", headers=API)
    assert logout.status == 200
    assert logout.json() == {"logged_out": True, "revoked": 1}
    assert "Max-Age=0" in logout.set_cookies()[COOKIE_NAME]
    assert not client.cookies

    stale = {**API, "Cookie": f"{COOKIE_NAME}={token}"}
    after = client.request("GET", "/orders", headers=stale)
    assert after.status == 401
    challenge = after.header("www-authenticate") or ""
    assert challenge.startswith('Bearer realm="extauthz-demo", error="invalid_token"')
    assert "Max-Age=0" in after.set_cookies()[COOKIE_NAME]  # the dead cookie is cleared
    gone = client.request("GET", "/auth/session", headers=stale)
    assert gone.status == 401
    assert 'error="invalid_token"' in (gone.header("www-authenticate") or "")


def test_bearer_clients_get_the_same_session(auth_stack: AuthStack) -> None:
    client = auth_stack.client()
    assert client.login("bob").status == 200
    token = client.cookies[COOKIE_NAME]
    bare = Client(client.port)
    echoed = bare.request("GET", "/x", headers={**API, "Authorization": f"Bearer {token}"})
    assert echoed.status == 200
    assert echoed.json()["jwt"]["claims"]["sub"] == "bob"


def test_a_browser_navigation_without_a_session_is_sent_to_the_login_page(
    auth_stack: AuthStack,
) -> None:
    client = auth_stack.client()
    resp = client.request("GET", "/reports?q=1", headers={"Accept": "text/html"})
    assert resp.status == 302
    assert resp.header("location") == "/auth/login?return_to=%2Freports%3Fq%3D1"
    form = client.request("GET", resp.header("location") or "")
    assert form.status == 200
    assert 'name="return_to" value="/reports?q=1"' in form.text
    done = client.request(
        "POST", "/auth/login", headers={"Origin": auth_stack.origin},
        form={"username": "carol", "password": "carol-password-3", "return_to": "/reports?q=1"},
    )
    assert done.status == 303
    assert done.header("location") == "/reports?q=1"
    page = client.request("GET", "/reports?q=1", headers={"Accept": "text/html"})
    assert page.status == 200
    assert "Signed in as <strong>carol</strong>" in page.text


def test_session_fixation_a_token_from_before_login_is_dead_after_it(
    auth_stack: AuthStack,
) -> None:
    planted = auth_stack.stack.create_session("dave")  # a token that existed before the login
    client = auth_stack.client()
    client.cookies[COOKIE_NAME] = planted
    assert client.request("GET", "/x", headers=API).status == 200
    assert client.login("dave").status == 200
    fresh = client.cookies[COOKIE_NAME]
    assert fresh != planted
    assert client.request("GET", "/x", headers=API).status == 200
    old = Client(client.port, cookies={COOKIE_NAME: planted})
    assert old.request("GET", "/x", headers=API).status == 401


def test_cross_site_form_posts_to_login_and_logout_are_rejected(auth_stack: AuthStack) -> None:
    client = auth_stack.client()
    evil = {"Origin": "https://evil.example", "Accept": "text/html"}
    form = {"username": "bob", "password": "bob-password-2"}
    assert client.request("POST", "/auth/login", headers=evil, form=form).status == 403
    assert not client.cookies

    same = {"Origin": auth_stack.origin, "Accept": "text/html"}
    assert client.request("POST", "/auth/login", headers=same, form=form).status == 303
    token = client.cookies[COOKIE_NAME]
    refused = client.request("POST", "/auth/logout", headers=evil, form={})
    assert refused.status == 403
    assert not refused.set_cookies()
    assert client.request("GET", "/x", headers=API).status == 200  # still signed in
    # a cookie-authenticated cross-site POST to a protected route (same_site: required)
    forged = client.request("POST", "/orders", headers=evil, form={"item": "1"})
    assert forged.status == 403
    assert forged.json()["reason"] == "cross_site_request"
    assert client.request("POST", "/orders", headers=same, form={"item": "1"}).status == 200

    out = client.request("POST", "/auth/logout", headers=same, form={})
    assert out.status == 303
    assert out.header("location") == "/auth/login?logged_out=1"
    assert Client(client.port, cookies={COOKIE_NAME: token}).request(
        "GET", "/x", headers=API).status == 401  # fmt: skip


def test_logout_everywhere_ends_every_session_of_the_user(auth_stack: AuthStack) -> None:
    laptop, phone, other = auth_stack.client(), auth_stack.client(), auth_stack.client()
    for c, name in ((laptop, "erin"), (phone, "erin"), (other, "bob")):
        assert c.login(name).status == 200
    resp = laptop.request("POST", "/auth/logout?everywhere=1", headers=API)
    assert resp.status == 200 and resp.json()["revoked"] >= 2
    assert phone.request("GET", "/x", headers=API).status == 401
    assert other.request("GET", "/x", headers=API).status == 200


def test_the_session_page_ends_the_other_browsers_session(auth_stack: AuthStack) -> None:
    """Two browsers of one user: the first sees the second on /auth/session (through Envoy)
    and ends it with the page's form; the second's next navigation goes to the login form."""
    laptop, phone = auth_stack.client(), auth_stack.client()
    assert laptop.login("dave").status == 200 and phone.login("dave").status == 200
    phone_sid = phone.request("GET", "/auth/session", headers=API).json()["sid"]
    html = {"Accept": "text/html"}
    page = laptop.request("GET", "/auth/session", headers=html)
    assert page.status == 200
    assert page.header("x-frame-options") == "DENY" and page.header("cache-control") == "no-store"
    assert f'<tr data-sid="{phone_sid}">' in page.text
    assert phone.cookies[COOKIE_NAME] not in page.text
    ended = laptop.request(
        "POST", "/auth/session/end", headers={**html, "Origin": auth_stack.origin},
        form={"sid": phone_sid},
    )  # fmt: skip
    assert ended.status == 303 and ended.header("location") == "/auth/session"
    assert phone_sid not in laptop.request("GET", "/auth/session", headers=html).text
    sent_back = phone.request("GET", "/reports", headers=html)
    assert sent_back.status == 302
    assert (sent_back.header("location") or "").startswith("/auth/login?return_to=")
    assert laptop.request("GET", "/x", headers=API).status == 200  # the laptop stays signed in


def test_a_logout_whose_revocation_cannot_be_written_is_an_error(auth_stack: AuthStack) -> None:
    client = auth_stack.client()
    assert client.login("bob").status == 200
    token = client.cookies[COOKIE_NAME]
    # Redis keeps answering reads but refuses every write (no replica to write to)
    redis_config_set(auth_stack.redis, "min-replicas-to-write", "1")
    try:
        forms: tuple[dict[str, str] | None, ...] = (None, {})
        for form in forms:
            headers = {**API, "Origin": auth_stack.origin}
            resp = client.request("POST", "/auth/logout", headers=headers, form=form)
            assert resp.status == 503, resp.text
            assert resp.json()["error"] == "temporarily_unavailable"
            assert not resp.set_cookies()  # the cookie stays in place
            assert client.cookies[COOKIE_NAME] == token
            assert client.request("GET", "/x", headers=API).status == 200  # still usable
    finally:
        redis_config_set(auth_stack.redis, "min-replicas-to-write", "0")
    resp = client.request("POST", "/auth/logout", headers=API)
    assert resp.status == 200
    assert Client(client.port, cookies={COOKIE_NAME: token}).request(
        "GET", "/x", headers=API).status == 401  # fmt: skip


def test_repeated_wrong_passwords_get_429_until_the_window_passes(
    auth_stack: AuthStack,
) -> None:
    client = auth_stack.client(source="127.0.0.21")
    for _ in range(3):
        assert client.login("carol", "guess").status == 401
    throttled = client.login("carol", "guess")
    assert throttled.status == 429
    retry_after = int(throttled.header("retry-after") or "0")
    assert 1 <= retry_after <= 3
    refused = client.login("carol")  # the right password, too early
    assert refused.status == 429
    assert not client.cookies
    time.sleep(retry_after + 0.2)
    assert client.login("carol").status == 200


def test_a_burst_of_random_tokens_from_one_address_is_throttled_at_check(
    auth_stack: AuthStack,
) -> None:
    guesser = auth_stack.client(source="127.0.0.31")
    statuses = []
    for _ in range(25):
        guess = tokens.mint_token()  # the right shape, but no such session
        resp = guesser.request("GET", "/x", headers={**API, "Authorization": f"Bearer {guess}"})
        statuses.append(resp.status)
        if resp.status == 429:
            assert int(resp.header("retry-after") or "0") >= 1
    assert statuses[:10] == [401] * 10
    assert set(statuses[10:]) == {429}
    junk = guesser.request(
        "GET", "/x", headers={**API, "Authorization": "Bearer " + secrets.token_hex(8)}
    )
    assert junk.status == 429

    honest = auth_stack.client()  # another address is not throttled
    assert honest.login("bob").status == 200
    assert honest.request("GET", "/x", headers=API).status == 200
    # and from the throttled address even a valid token is not looked up
    stolen = {**API, "Authorization": f"Bearer {honest.cookies[COOKIE_NAME]}"}
    assert guesser.request("GET", "/x", headers=stolen).status == 429


def test_parallel_wrong_passwords_cannot_outrun_the_login_limit(auth_stack: AuthStack) -> None:
    """H1 against the running stack (Redis counters, argon2 in worker threads): 12 parallel
    guesses at one user gave 12x401; now at most the limit (3) are checked."""
    from concurrent.futures import ThreadPoolExecutor

    def guess(i: int) -> tuple[int, str | None]:
        resp = auth_stack.client(source="127.0.0.51").login("dave", f"guess-{i}")
        return resp.status, resp.header("retry-after")

    with ThreadPoolExecutor(max_workers=12) as pool:
        answers = list(pool.map(guess, range(12)))
    statuses = [status for status, _ in answers]
    assert 1 <= statuses.count(401) <= 3, statuses
    assert statuses.count(429) == 12 - statuses.count(401), statuses
    retry_after = max(int(r or "0") for s, r in answers if s == 429)
    assert retry_after >= 1
    time.sleep(retry_after + 0.2)  # leave dave's budget as it was found
    assert auth_stack.client(source="127.0.0.51").login("dave").status == 200


def test_guessing_tokens_at_auth_session_is_throttled_like_check(auth_stack: AuthStack) -> None:
    """M3 against the running stack: /auth/session counts failed lookups in Check's budget."""
    guesser = auth_stack.client(source="127.0.0.61")
    statuses = []
    for _ in range(14):
        bearer = {**API, "Authorization": f"Bearer {tokens.mint_token()}"}
        statuses.append(guesser.request("GET", "/auth/session", headers=bearer).status)
    assert statuses[:10] == [401] * 10
    assert set(statuses[10:]) == {429}
    # the same budget: Check refuses that address too
    bearer = {**API, "Authorization": f"Bearer {tokens.mint_token()}"}
    assert guesser.request("GET", "/x", headers=bearer).status == 429


def test_demo_settings_warn_that_the_cookie_is_not_secure(auth_stack: AuthStack) -> None:
    log = Path(auth_stack.stack.extauthz.stderr_path).read_text()
    assert "session.cookie_secure = false" in log
    for line in log.splitlines():
        assert "xat_" not in line and "password-" not in line  # no token, no password in logs
