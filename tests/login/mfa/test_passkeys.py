"""Passkeys through the /auth/* adapter with a software authenticator (real ES256
attestations and assertions, verified by py_webauthn): registration from a fresh session,
sign-in with a passkey alone and as the second step, and the refusals: wrong origin, wrong rp
id, a replayed challenge, a counter that does not grow, an unknown credential; removal; what
the pages allow and what is logged."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio

from extauthz.login.mfa.factors import Factor, FactorRejected
from extauthz.login.mfa.kinds import Attempt
from extauthz.login.mfa.steps import VERIFY_PATH
from extauthz.login.mfa.webauthn_kind import RelyingParty, WebAuthnKind, read_answer
from tests.login.mfa.harness import COOKIE, PENDING, Mfa, cookie_of, mfa_harness
from tests.login.mfa.soft_authenticator import UP, SoftAuthenticator
from tests.support import RedisServer

RP_ID = "login.example"
ORIGIN = "https://login.example"
RP = RelyingParty(RP_ID, "Example", (ORIGIN,))


async def options(h: Mfa, path: str, **cookies: str) -> dict[str, Any]:
    got = await h.post(path, {}, **cookies)
    assert got.status == 200, await got.text()
    body: dict[str, Any] = await got.json()
    return body


async def register(h: Mfa, token: str, key: SoftAuthenticator, name: str = "laptop",
                   **wrong: Any) -> tuple[int, str]:
    """(status, the session's token afterwards)."""
    created = key.create(await options(h, "/auth/passkeys/register/options", session=token),
                         **wrong)
    done = await h.post("/auth/passkeys/register", {"credential": created, "name": name},
                        session=token)
    return done.status, cookie_of(done, COOKIE) or token


async def enrolled(h: Mfa, user: str = "alice", **options: Any
                   ) -> tuple[SoftAuthenticator, str]:
    """A passkey registered from a new password session of ``user``: the authenticator and
    the session's token."""
    key = SoftAuthenticator(RP_ID, ORIGIN, **options)
    status, token = await register(h, await h.login(user), key)
    assert status == 200
    return key, token


async def sign_in(h: Mfa, key: SoftAuthenticator, **wrong: Any) -> tuple[int, dict[str, Any]]:
    asserted = key.get(await options(h, "/auth/passkeys/sign-in/options"), **wrong)
    done = await h.post("/auth/passkeys/sign-in", {"credential": asserted, "return_to": "/x"})
    return done.status, await done.json()


async def passkey_session(h: Mfa, key: SoftAuthenticator) -> str:
    asserted = key.get(await options(h, "/auth/passkeys/sign-in/options"))
    done = await h.post("/auth/passkeys/sign-in", {"credential": asserted})
    assert done.status == 200
    return cookie_of(done, COOKIE) or ""


async def test_register_then_sign_in_alone_and_as_the_second_step(tmp_path: Path) -> None:
    async with mfa_harness(tmp_path, rp=RP) as h:
        other = await h.login("alice")
        token = await h.login("alice")
        key = SoftAuthenticator(RP_ID, ORIGIN)
        status, token = await register(h, token, key)
        assert status == 200
        gone = await h.client.get("/auth/session", headers=h.headers(session=other))
        assert gone.status == 401  # adding a passkey is a factor change
        listed = await h.client.get("/auth/passkeys", headers=h.headers(session=token))
        body = await listed.json()
        assert [(p["name"], p["amr"]) for p in body["passkeys"]] == [("laptop", ["swk"])]
        assert key.id not in json.dumps(body)  # never the credential id

        status, alone = await sign_in(h, key)
        assert status == 200 and alone["amr"] == ["swk", "mfa"] and alone["sub"] == "alice"
        assert alone["location"] == "/x"

        step = await h.password("alice")
        assert (await step.json())["location"] == VERIFY_PATH
        pending = cookie_of(step, PENDING)
        assert pending
        got = await h.client.get("/auth/passkeys/verify/options",
                                 headers=h.headers(pending=pending))
        request = await got.json()
        assert [c["id"] for c in request["allowCredentials"]] == [key.id]
        assert request["userVerification"] == "required"
        answer = json.dumps(key.get(request))
        done = await h.post(VERIFY_PATH, {"kind": "webauthn", "response": answer},
                            pending=pending)
        assert done.status == 200, await done.text()
        assert (await done.json())["amr"] == ["pwd", "swk", "mfa"]
        session = await h.sessions.lookup(cookie_of(done, COOKIE) or "")
        assert session.amr == ("pwd", "swk", "mfa")


async def test_the_first_passkey_comes_with_recovery_codes(tmp_path: Path) -> None:
    async with mfa_harness(tmp_path, rp=RP) as h:
        token = await h.login("alice")
        key = SoftAuthenticator(RP_ID, ORIGIN)
        created = key.create(await options(h, "/auth/passkeys/register/options", session=token))
        first = await h.post("/auth/passkeys/register", {"credential": created}, session=token)
        codes = (await first.json())["recovery_codes"]
        assert len(codes) == 10
        token = cookie_of(first, COOKIE) or ""
        second = SoftAuthenticator(RP_ID, ORIGIN).create(
            await options(h, "/auth/passkeys/register/options", session=token))
        again = await h.post("/auth/passkeys/register", {"credential": second}, session=token)
        assert again.status == 200 and "recovery_codes" not in await again.json()
        pending = cookie_of(await h.password("alice"), PENDING)
        used = await h.post(VERIFY_PATH, {"kind": "recovery", "response": codes[0]},
                            pending=pending)
        assert used.status == 200 and (await used.json())["amr"] == ["pwd", "otp", "mfa"]


async def test_registration_options_ask_for_a_discoverable_verified_credential(
    tmp_path: Path,
) -> None:
    async with mfa_harness(tmp_path, rp=RP) as h:
        _, token = await enrolled(h)
        token = (await register(h, token, SoftAuthenticator(RP_ID, ORIGIN)))[1]
        created = await options(h, "/auth/passkeys/register/options", session=token)
        selection = created["authenticatorSelection"]
        assert selection["residentKey"] == "required"
        assert selection["userVerification"] == "required"
        assert created["rp"] == {"id": RP_ID, "name": "Example"}
        assert len(created["excludeCredentials"]) == 2
        request = await options(h, "/auth/passkeys/sign-in/options")
        assert request["userVerification"] == "required" and not request.get("allowCredentials")


@pytest.mark.parametrize("wrong", [{"origin": "https://evil.example"},
                                   {"origin": "https://login.example:8443"},
                                   {"rp_id": "evil.example"}])
async def test_wrong_origin_or_rp_id_is_refused(tmp_path: Path, wrong: dict[str, str]) -> None:
    async with mfa_harness(tmp_path, rp=RP) as h:
        token = await h.login("alice")
        assert (await register(h, token, SoftAuthenticator(RP_ID, ORIGIN), **wrong))[0] == 400
        key = SoftAuthenticator(RP_ID, ORIGIN)
        assert (await register(h, token, key))[0] == 200
        status, body = await sign_in(h, key, **wrong)
        assert status == 400 and body["error"] == "invalid_passkey"
        assert (await sign_in(h, key))[0] == 200


async def test_a_replayed_challenge_is_refused(tmp_path: Path) -> None:
    async with mfa_harness(tmp_path, rp=RP) as h:
        token = await h.login("alice")
        key = SoftAuthenticator(RP_ID, ORIGIN)
        created = key.create(await options(h, "/auth/passkeys/register/options", session=token))
        first = await h.post("/auth/passkeys/register", {"credential": created}, session=token)
        assert first.status == 200
        token = cookie_of(first, COOKIE) or token
        again = await h.post("/auth/passkeys/register", {"credential": created}, session=token)
        assert again.status == 400

        request = await options(h, "/auth/passkeys/sign-in/options")
        asserted = key.get(request)
        done = await h.post("/auth/passkeys/sign-in", {"credential": asserted})
        assert done.status == 200
        replay = await h.post("/auth/passkeys/sign-in", {"credential": asserted})
        assert replay.status == 400
        # a fresh signature over the used challenge, counter grown: still refused
        fresh = await h.post("/auth/passkeys/sign-in", {"credential": key.get(request)})
        assert fresh.status == 400
        # a challenge that expired unused
        late = await options(h, "/auth/passkeys/sign-in/options")
        h.clock.advance(121)
        expired = await h.post("/auth/passkeys/sign-in", {"credential": key.get(late)})
        assert expired.status == 400


async def test_a_counter_that_does_not_grow_is_refused_unless_both_are_zero(
    tmp_path: Path,
) -> None:
    async with mfa_harness(tmp_path, rp=RP) as h:
        key, _ = await enrolled(h)
        assert (await sign_in(h, key))[0] == 200  # counter 1
        assert (await sign_in(h, key, counter=1))[0] == 400  # the same
        assert (await sign_in(h, key, counter=0))[0] == 400  # lower
        assert (await sign_in(h, key))[0] == 200  # 2

        no_counter, _ = await enrolled(h, "bob", counter_step=0)
        for _ in range(2):  # an authenticator without a counter: 0 and 0
            assert (await sign_in(h, no_counter))[0] == 200


async def test_an_unknown_credential_or_user_is_refused(tmp_path: Path) -> None:
    async with mfa_harness(tmp_path, rp=RP) as h:
        key, _ = await enrolled(h)
        stranger = SoftAuthenticator(RP_ID, ORIGIN)
        stranger.user_handle = b"alice"  # claims alice, holds a key never registered
        assert (await sign_in(h, stranger))[0] == 400
        stranger.user_handle = b"nobody"
        assert (await sign_in(h, stranger))[0] == 400
        key.user_handle = b"bob"  # alice's passkey presented as bob's
        assert (await sign_in(h, key))[0] == 400
        # user presence without verification is not a passkey sign-in
        key.user_handle = b"alice"
        assert (await sign_in(h, key, flags=UP))[0] == 400


async def test_a_roaming_authenticator_earns_hwk(tmp_path: Path) -> None:
    async with mfa_harness(tmp_path, rp=RP) as h:
        key, _ = await enrolled(h, attachment="cross-platform")
        status, body = await sign_in(h, key)
        assert status == 200 and body["amr"] == ["hwk", "mfa"]


async def test_registration_and_removal_need_a_fresh_session_and_revoke_the_others(
    tmp_path: Path,
) -> None:
    async with mfa_harness(tmp_path, rp=RP) as h:
        key, token = await enrolled(h)
        h.clock.advance(601)
        stale = await h.post("/auth/passkeys/register/options", {}, session=token)
        assert stale.status == 401
        assert (await stale.json())["location"].startswith("/auth/mfa/step-up")
        listed = await (await h.client.get("/auth/passkeys",
                                           headers=h.headers(session=token))).json()
        factor_id = listed["passkeys"][0]["id"]
        refused = await h.post("/auth/passkeys/remove", {"factor_id": factor_id}, session=token)
        assert refused.status == 401

        other = await passkey_session(h, key)
        current = await passkey_session(h, key)  # a passkey sign-in is fresh
        removed = await h.post("/auth/passkeys/remove", {"factor_id": factor_id},
                               session=current)
        assert removed.status == 200 and (await removed.json())["revoked"] >= 1
        assert cookie_of(removed, COOKIE)  # this session kept, with a new token
        gone = await h.client.get("/auth/session", headers=h.headers(session=other))
        assert gone.status == 401
        assert (await sign_in(h, key))[0] == 400  # a removed passkey signs nobody in
        missing = await h.post("/auth/passkeys/remove", {"factor_id": factor_id},
                               session=cookie_of(removed, COOKIE))
        assert missing.status == 404


async def test_step_up_with_a_passkey_refreshes_this_session(tmp_path: Path) -> None:
    async with mfa_harness(tmp_path, rp=RP) as h:
        key, _ = await enrolled(h)
        other = await passkey_session(h, key)
        token = await passkey_session(h, key)
        h.clock.advance(601)
        page = await h.client.get("/auth/mfa/step-up?return_to=/admin",
                                  headers=h.headers(session=token, Accept="text/html"))
        assert 'href="/auth/passkeys/step-up?return_to=%2Fadmin"' in await page.text()
        # a challenge bound to another session does not step this one up
        foreign = key.get(await options(h, "/auth/passkeys/step-up/options", session=other))
        refused = await h.post("/auth/passkeys/step-up", {"credential": foreign},
                               session=token)
        assert refused.status == 400
        asserted = key.get(await options(h, "/auth/passkeys/step-up/options", session=token))
        done = await h.post("/auth/passkeys/step-up", {"credential": asserted,
                                                       "return_to": "/admin"}, session=token)
        assert done.status == 200, await done.text()
        body = await done.json()
        assert body["amr"] == ["swk", "mfa"] and body["location"] == "/admin"
        assert body["auth_time"] == int(h.clock())
        new = cookie_of(done, COOKIE)
        assert new and new != token
        assert (await h.sessions.lookup(new)).auth_time == h.clock()
        replay = await h.post("/auth/passkeys/step-up", {"credential": asserted}, session=new)
        assert replay.status == 400
        # now fresh: registration is allowed again
        assert (await h.post("/auth/passkeys/register/options", {}, session=new)).status == 200


async def test_cross_site_passkey_requests_are_refused(tmp_path: Path) -> None:
    async with mfa_harness(tmp_path, rp=RP) as h:
        evil = {"Origin": "https://evil.example", "Accept": "application/json"}
        for path in ("/auth/passkeys/sign-in/options", "/auth/passkeys/sign-in",
                     "/auth/passkeys/register/options", "/auth/passkeys/step-up/options",
                     "/auth/passkeys/step-up", "/auth/passkeys/remove"):
            refused = await h.client.post(path, json={}, headers=evil)
            assert refused.status == 403, path


async def test_the_passkey_pages_load_one_script_from_the_service(tmp_path: Path) -> None:
    async with mfa_harness(tmp_path, rp=RP) as h:
        page = await h.client.get("/auth/passkeys/sign-in?return_to=/x",
                                  headers={"Accept": "text/html"})
        text = await page.text()
        csp = page.headers["Content-Security-Policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp.split("style-src")[0]
        assert text.count("<script") == 1 and '<script src="/auth/static/passkeys.js">' in text
        script = await h.client.get("/auth/static/passkeys.js")
        assert script.status == 200 and script.content_type == "text/javascript"
        assert "navigator.credentials.get" in await script.text()
        login = await h.client.get("/auth/login", headers={"Accept": "text/html"})
        assert "script-src" not in login.headers["Content-Security-Policy"]
        assert 'href="/auth/passkeys/sign-in?return_to=%2F"' in await login.text()


async def test_no_challenge_credential_id_or_key_is_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with mfa_harness(tmp_path, rp=RP) as h:
        token = await h.login("alice")
        key = SoftAuthenticator(RP_ID, ORIGIN)
        created_options = await options(h, "/auth/passkeys/register/options", session=token)
        created = key.create(created_options)
        done = await h.post("/auth/passkeys/register", {"credential": created}, session=token)
        assert done.status == 200
        request = await options(h, "/auth/passkeys/sign-in/options")
        asserted = key.get(request)
        assert (await h.post("/auth/passkeys/sign-in", {"credential": asserted})).status == 200
        assert (await h.post("/auth/passkeys/sign-in", {"credential": asserted})).status == 400
        token = cookie_of(done, COOKIE) or ""
        step_up = await options(h, "/auth/passkeys/step-up/options", session=token)
        stepped = await h.post("/auth/passkeys/step-up", {"credential": key.get(step_up)},
                               session=token)
        assert stepped.status == 200
        (factor,) = [f for f in await h.factors.factors("alice") if f.kind == "webauthn"]
    secrets = [created_options["challenge"], request["challenge"], step_up["challenge"], key.id,
               factor.data["public_key"], asserted["response"]["signature"]]
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "factor enrolled" in logged and "step-up sub=alice" in logged
    for secret in secrets:
        assert secret not in logged


@pytest.mark.e2e
async def test_passkeys_and_their_challenges_in_redis(
    tmp_path: Path, redis_process: RedisServer
) -> None:
    client = redis.asyncio.Redis(host="127.0.0.1", port=redis_process.port)
    await client.flushdb()
    try:
        async with mfa_harness(tmp_path, rp=RP, redis_client=client) as h:
            key, _ = await enrolled(h)
            assert await client.hlen("mfa-test:mfa:alice") == 2  # the passkey, recovery codes
            request = await options(h, "/auth/passkeys/sign-in/options")
            stored = await client.keys("mfa-test:webauthn:*")
            assert len(stored) == 1 and request["challenge"].encode() not in stored[0]
            assert 0 < await client.ttl(stored[0]) <= 120
            asserted = key.get(request)
            assert (await h.post("/auth/passkeys/sign-in", {"credential": asserted})).status == 200
            assert not await client.keys("mfa-test:webauthn:*")  # taken
            assert (await h.post("/auth/passkeys/sign-in", {"credential": asserted})).status == 400
    finally:
        await client.aclose()


def test_the_kind_refuses_an_assertion_without_a_challenge() -> None:
    key = SoftAuthenticator(RP_ID, ORIGIN)
    kind = WebAuthnKind(RP)
    challenge = "Y2hhbGxlbmdlLWZvci10ZXN0cy0xMjM0NTY3ODkwMTI"
    factor = kind.register("factor-1234", key.create(
        kind.registration_options("alice", challenge, [])), challenge, "k", 0.0)
    assertion = json.dumps(key.get({"challenge": challenge}))
    with pytest.raises(FactorRejected):
        kind.verify(factor, Attempt("alice", assertion, 1.0, ""))
    used = kind.verify(factor, Attempt("alice", assertion, 1.0, challenge))
    assert used.data["sign_count"] == 1 and used.last_used_at == 1.0
    with pytest.raises(FactorRejected):  # the stored count is 1 now: the same one again
        kind.verify(used, Attempt("alice", assertion, 2.0, challenge))
    other = Factor("factor-5678", "webauthn", 0.0, True, {**factor.data, "credential_id": "AA"})
    with pytest.raises(FactorRejected):
        kind.verify(other, Attempt("alice", assertion, 1.0, challenge))


def test_advisory_a_credential_nested_past_the_stack_reads_as_malformed() -> None:
    """json.loads raises RecursionError for JSON nested 10,000 deep: an anonymous passkey
    sign-in carrying one (as the credential, or as its clientDataJSON) escaped as a 500."""
    import base64

    deep = "[" * 10_000
    client_data = base64.urlsafe_b64encode(deep.encode()).decode().rstrip("=")
    assert read_answer(deep) is None
    assert read_answer({"id": "x", "response": {"clientDataJSON": client_data}}) is None
