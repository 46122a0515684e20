"""Second factors through the /auth/* adapter: enrolment from one's session, the second step
of a sign-in, recovery codes, replayed and wrong codes, fresh-authentication rules, policy
modes, rate limits, cross-site refusals, and what is logged."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest
import redis.asyncio

from extauthz import tokens
from extauthz.login.mfa.steps import SETUP_PATH, VERIFY_PATH
from tests.login.mfa.harness import COOKIE, PENDING, cookie_of, mfa_harness
from tests.support import RedisServer


async def test_enrolment_then_sign_in_with_a_code_and_a_replay_is_refused(
    tmp_path: Path,
) -> None:
    async with mfa_harness(tmp_path) as h:
        other = await h.login("alice")  # another browser of alice's
        token = await h.login("alice")
        secret, codes, token = await h.enrol("alice", token)
        assert len(codes) == 10
        me = await h.client.get("/auth/session", headers=h.headers(session=token))
        assert me.status == 200
        assert (await me.json())["amr"] == ["pwd", "otp", "mfa"]
        gone = await h.client.get("/auth/session", headers=h.headers(session=other))
        assert gone.status == 401  # a change of factors ends the other sessions
        session = await h.sessions.lookup(token)
        assert session.amr == ("pwd", "otp", "mfa") and session.auth_time == h.clock()

        h.clock.advance(30)  # a fresh time-step: the enrolment used the last one
        step = await h.password("alice")
        assert step.status == 200 and cookie_of(step, COOKIE) is None  # no session yet
        assert (await step.json()) == {"second_step": "login", "location": VERIFY_PATH}
        pending = cookie_of(step, PENDING)
        assert pending and tokens.has_token_shape(pending, tokens.PENDING_LOGIN_PREFIX)
        # the pending login's token is no session, in either cookie
        for cookies in ({"session": pending}, {"pending": pending}):
            assert (await h.client.get("/auth/session", headers=h.headers(**cookies))).status == 401

        code = h.code(secret)
        wrong = f"{(int(code) + 1) % 1_000_000:06d}"
        refused = await h.post(VERIFY_PATH, {"kind": "totp", "response": wrong}, pending=pending)
        assert refused.status == 401 and cookie_of(refused, COOKIE) is None
        done = await h.post(VERIFY_PATH, {"kind": "totp", "response": code}, pending=pending)
        assert done.status == 200, await done.text()
        assert (await done.json())["amr"] == ["pwd", "otp", "mfa"]
        assert cookie_of(done, PENDING) == ""  # the pending cookie is cleared
        new = cookie_of(done, COOKIE)
        assert new and (await h.sessions.lookup(new)).amr == ("pwd", "otp", "mfa")
        # the pending login served one sign-in
        again = await h.post(VERIFY_PATH, {"kind": "totp", "response": code}, pending=pending)
        assert again.status == 401 and (await again.json())["error"] == "login_expired"

        # the same code, within its window, on a new sign-in: refused (replay)
        replay_step = cookie_of(await h.password("alice"), PENDING)
        replayed = await h.post(VERIFY_PATH, {"kind": "totp", "response": code},
                                pending=replay_step)
        assert replayed.status == 401 and (await replayed.json())["error"] == "invalid_code"
        h.clock.advance(30)
        later = await h.post(VERIFY_PATH, {"kind": "totp", "response": h.code(secret)},
                             pending=replay_step)
        assert later.status == 200


@pytest.mark.e2e
async def test_enrolment_and_second_step_with_factors_and_pending_logins_in_redis(
    tmp_path: Path, redis_process: RedisServer
) -> None:
    client = redis.asyncio.Redis(host="127.0.0.1", port=redis_process.port)
    await client.flushdb()
    try:
        async with mfa_harness(tmp_path, redis_client=client) as h:
            secret, codes, _ = await h.enrol("alice", await h.login("alice"))
            assert await client.hlen("mfa-test:mfa:alice") == 2
            h.clock.advance(30)
            pending = cookie_of(await h.password("alice"), PENDING)
            assert pending and await client.exists(
                "mfa-test:pending:" + tokens.token_hash(pending))
            code = h.code(secret)
            done = await h.post(VERIFY_PATH, {"kind": "totp", "response": code}, pending=pending)
            assert done.status == 200 and cookie_of(done, COOKIE)
            assert not await client.exists("mfa-test:pending:" + tokens.token_hash(pending))
            again = cookie_of(await h.password("alice"), PENDING)
            replayed = await h.post(VERIFY_PATH, {"kind": "totp", "response": code},
                                    pending=again)
            assert replayed.status == 401
            used = await h.post(VERIFY_PATH, {"kind": "recovery", "response": codes[0]},
                                pending=again)
            assert used.status == 200
    finally:
        await client.aclose()


async def test_a_recovery_code_works_once(tmp_path: Path) -> None:
    async with mfa_harness(tmp_path) as h:
        _, codes, _ = await h.enrol("alice", await h.login("alice"))
        first = cookie_of(await h.password("alice"), PENDING)
        used = await h.post(VERIFY_PATH, {"kind": "recovery", "response": codes[0]},
                            pending=first)
        assert used.status == 200 and cookie_of(used, COOKIE)
        second = cookie_of(await h.password("alice"), PENDING)
        again = await h.post(VERIFY_PATH, {"kind": "recovery", "response": codes[0]},
                             pending=second)
        assert again.status == 401
        other = await h.post(VERIFY_PATH, {"kind": "recovery", "response": codes[1]},
                             pending=second)
        assert other.status == 200


async def test_the_verify_page_is_a_plain_form_without_script(tmp_path: Path) -> None:
    async with mfa_harness(tmp_path) as h:
        await h.enrol("alice", await h.login("alice"))
        pending = cookie_of(await h.password("alice"), PENDING)
        page = await h.client.get(VERIFY_PATH, headers=h.headers(pending=pending,
                                                                 Accept="text/html"))
        text = await page.text()
        assert page.status == 200 and 'id="totp-form"' in text and 'id="recovery-form"' in text
        assert "<script" not in text and "script-src" not in page.headers["Content-Security-Policy"]
        no_pending = await h.client.get(VERIFY_PATH, headers={"Accept": "text/html"},
                                        allow_redirects=False)
        assert no_pending.status == 303 and no_pending.headers["Location"] == "/auth/login"


async def test_enrolment_needs_a_fresh_sign_in_and_step_up_with_the_password_gives_it(
    tmp_path: Path,
) -> None:
    async with mfa_harness(tmp_path) as h:
        token = await h.login("bob")
        h.clock.advance(601)
        stale = await h.client.get("/auth/mfa/enrol", headers=h.headers(session=token))
        assert stale.status == 401
        assert (await stale.json())["error"] == "insufficient_user_authentication"
        browser = await h.client.get("/auth/mfa/enrol", headers=h.headers(
            session=token, Accept="text/html"), allow_redirects=False)
        assert browser.headers["Location"] == "/auth/mfa/step-up?return_to=%2Fauth%2Fmfa%2Fenrol"
        page = await h.client.get("/auth/mfa/step-up", params={"return_to": "/auth/mfa/enrol"},
                                  headers=h.headers(session=token, Accept="text/html"))
        text = await page.text()
        assert 'id="password-form"' in text  # bob has no factor: his password
        assert 'id="enrol" href="/auth/mfa/enrol"' in text  # and the way to get one
        wrong = await h.post("/auth/mfa/step-up", {"kind": "password", "response": "nope"},
                             session=token)
        assert wrong.status == 401
        stepped = await h.post("/auth/mfa/step-up", {"kind": "password", "response": "hunter2",
                                                     "return_to": "/auth/mfa/enrol"},
                               session=token)
        assert stepped.status == 200
        token = cookie_of(stepped, COOKIE) or ""
        assert token and (await h.sessions.lookup(token)).auth_time == h.clock()
        await h.enrol("bob", token)


async def test_a_user_with_a_factor_cannot_step_up_with_the_password_alone(
    tmp_path: Path,
) -> None:
    async with mfa_harness(tmp_path) as h:
        _, _, token = await h.enrol("alice", await h.login("alice"))
        refused = await h.post("/auth/mfa/step-up", {"kind": "password",
                                                     "response": "correct horse"}, session=token)
        assert refused.status == 401 and cookie_of(refused, COOKIE) is None


@pytest.mark.parametrize(("mode", "roles", "must_enrol"), [
    ("optional", frozenset(), {"alice": False, "bob": False}),
    ("required", frozenset(), {"alice": True, "bob": True}),
    ("roles", frozenset({"admin"}), {"alice": True, "bob": False}),
])
async def test_policy_modes(
    tmp_path: Path, mode: str, roles: frozenset[str], must_enrol: dict[str, bool]
) -> None:
    async with mfa_harness(tmp_path, mode=mode, required_roles=roles) as h:
        for user, enrol in must_enrol.items():
            response = await h.password(user)
            assert response.status == 200
            if not enrol:
                assert cookie_of(response, COOKIE)
                continue
            assert cookie_of(response, COOKIE) is None
            assert (await response.json())["second_step"] == "enrol"
            pending = cookie_of(response, PENDING)
            page = await h.client.get(SETUP_PATH, headers=h.headers(pending=pending,
                                                                    Accept="text/html"))
            text = await page.text()
            assert "<svg" in text and "<script" not in text
            secret = re.search(r'id="secret">([A-Z2-7 ]+)<', text)
            factor = re.search(r'name="factor_id" value="([^"]+)"', text)
            assert secret and factor
            code = h.code(secret.group(1).replace(" ", ""))
            done = await h.post(SETUP_PATH, {"kind": "totp", "response": code}, pending=pending)
            assert done.status == 200, await done.text()
            body = await done.json()
            assert len(body["recovery_codes"]) == 10 and body["amr"] == ["pwd", "otp", "mfa"]
            assert cookie_of(done, COOKIE)


async def test_second_factor_guessing_hits_the_rate_limit_and_a_password_does_not_reset_it(
    tmp_path: Path,
) -> None:
    async with mfa_harness(tmp_path, user_limit=3) as h:
        secret, _, _ = await h.enrol("alice", await h.login("alice"))
        h.clock.advance(30)
        statuses = []
        for _ in range(6):
            pending = cookie_of(await h.password("alice"), PENDING)  # the password is right
            guess = await h.post(VERIFY_PATH, {"kind": "totp", "response": "000000"},
                                 pending=pending)
            statuses.append(guess.status)
        assert statuses[:3] == [401, 401, 401] and set(statuses[3:]) == {429}
        pending = cookie_of(await h.password("alice"), PENDING)
        right = await h.post(VERIFY_PATH, {"kind": "totp", "response": h.code(secret)},
                             pending=pending)
        assert right.status == 429 and "Retry-After" in right.headers


async def test_second_factor_guessing_from_one_address_across_users_hits_its_limit(
    tmp_path: Path,
) -> None:
    async with mfa_harness(tmp_path, addr_limit=4) as h:
        await h.enrol("alice", await h.login("alice"))
        bob_secret, _, _ = await h.enrol("bob", await h.login("bob"))
        h.clock.advance(30)
        statuses = []
        for user in ("alice", "bob", "alice", "bob"):
            pending = cookie_of(await h.password(user), PENDING)
            guess = await h.post(VERIFY_PATH, {"kind": "recovery", "response": "0" * 16},
                                 pending=pending)
            statuses.append(guess.status)
        assert statuses == [401, 401, 401, 401]
        pending = cookie_of(await h.password("bob"), PENDING)
        right = await h.post(VERIFY_PATH, {"kind": "totp", "response": h.code(bob_secret)},
                             pending=pending)
        assert right.status == 429  # the address's budget of codes is spent, whoever it is


async def test_a_cross_site_second_step_is_refused(tmp_path: Path) -> None:
    async with mfa_harness(tmp_path) as h:
        secret, _, _ = await h.enrol("alice", await h.login("alice"))
        h.clock.advance(30)
        pending = cookie_of(await h.password("alice"), PENDING)
        headers = h.headers(pending=pending, Origin="https://evil.example")
        refused = await h.client.post(VERIFY_PATH, headers=headers,
                                      data={"kind": "totp", "response": h.code(secret)})
        assert refused.status == 403


async def test_no_secret_code_or_recovery_code_is_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with mfa_harness(tmp_path) as h:
        secret, codes, token = await h.enrol("alice", await h.login("alice"))
        h.clock.advance(30)
        code = h.code(secret)
        pending = cookie_of(await h.password("alice"), PENDING)
        await h.post(VERIFY_PATH, {"kind": "totp", "response": "999999"}, pending=pending)
        await h.post(VERIFY_PATH, {"kind": "totp", "response": code}, pending=pending)
        pending = cookie_of(await h.password("alice"), PENDING)
        await h.post(VERIFY_PATH, {"kind": "recovery", "response": codes[0]}, pending=pending)
        await h.post("/auth/mfa/step-up", {"kind": "totp", "response": code}, session=token)
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "second step failed" in text and "factor enrolled" in text  # the logs were captured
    for secret_value in (secret, code, "999999", *codes, *(c.replace("-", "") for c in codes)):
        assert secret_value not in text
    assert token not in text and pending and pending not in text


async def test_admin_reset_removes_the_factors_and_revokes_every_session(tmp_path: Path) -> None:
    async with mfa_harness(tmp_path) as h:
        _, _, token = await h.enrol("alice", await h.login("alice"))
        other = await h.login("bob")
        listed = await h.admin.list("alice")
        assert sorted(f.kind for f in listed) == ["recovery", "totp"]
        assert await h.admin.reset("alice") == (2, 1)
        assert await h.admin.list("alice") == []
        assert (await h.client.get("/auth/session", headers=h.headers(session=token))).status == 401
        assert (await h.client.get("/auth/session", headers=h.headers(session=other))).status == 200
        assert cookie_of(await h.password("alice"), COOKIE)  # the password alone again
