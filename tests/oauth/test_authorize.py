"""The authorization code flow with PKCE and consent (RFC 6749 §4.1, RFC 7636) through the
real aiohttp app: redirect URI rules, PKCE rules, consent (CSRF, deny, remembered, re-asked),
single-use codes, and the issued token through the Check."""

from __future__ import annotations

from urllib.parse import quote, urlsplit

import pytest
from aiohttp import ClientResponse

from extauthz import tokens
from extauthz.check.context import RequestContext
from extauthz.check.decisions import Allow
from tests.oauth.harness import APP_CB, Harness, pkce, query_of


async def get_authorize(
    h: Harness, params: dict[str, str], login: str | None
) -> ClientResponse:
    headers = h.cookie(login) if login else {}
    return await h.client.get(
        "/auth/oauth/authorize", params=params, headers=headers, allow_redirects=False
    )


async def test_the_code_flow_issues_tokens_that_the_check_accepts(h: Harness) -> None:
    code, verifier = await h.code_for(scope="read")
    answer = await h.exchange(code, verifier)
    body = await answer.json()
    assert answer.status == 200, body
    assert body["scope"] == "read"
    assert body["expires_in"] == 600
    assert tokens.has_token_shape(body["refresh_token"], tokens.REFRESH_TOKEN_PREFIX)
    session = await h.sessions.lookup(body["access_token"])
    assert (session.sub, session.kind, session.client_id) == (
        "alice", "oauth", h.confidential.client_id
    )
    # the user's session had read and write; the token has only what was granted
    assert session.scopes == ("read",)
    ctx = RequestContext(
        method="GET", scheme="https", host="api.example", path="/r",
        headers={"authorization": f"Bearer {body['access_token']}"}, peer_address="192.0.2.1",
    )
    decision = await h.authorizer.authorize(ctx)
    assert isinstance(decision, Allow)
    # a refresh token is never a session: the Check refuses it
    ctx2 = RequestContext(
        method="GET", scheme="https", host="api.example", path="/r",
        headers={"authorization": f"Bearer {body['refresh_token']}"}, peer_address="192.0.2.1",
    )
    assert not isinstance(await h.authorizer.authorize(ctx2), Allow)


async def test_a_public_client_uses_pkce_without_a_secret(h: Harness) -> None:
    code, verifier = await h.code_for(h.public)
    answer = await h.exchange(code, verifier, h.public)
    body = await answer.json()
    assert answer.status == 200, body
    assert (await h.sessions.lookup(body["access_token"])).client_id == h.public.client_id


async def test_without_a_login_session_the_user_is_sent_to_login_and_back(h: Harness) -> None:
    _, challenge = pkce()
    params = h.authorize_params(code_challenge=challenge)
    answer = await get_authorize(h, params, None)
    assert answer.status == 303
    location = answer.headers["Location"]
    assert location.startswith("/auth/login?return_to=" + quote("/auth/oauth/authorize?", safe=""))
    back = query_of(location)["return_to"]
    assert query_of(back)["client_id"] == h.confidential.client_id
    # the login page carries the return as it is (the login service's own validation)
    page = await h.client.get(location)
    assert quote("/auth/oauth/authorize", safe="/") in await page.text()


@pytest.mark.parametrize(
    "redirect_uri",
    [
        "https://evil.example/cb",
        APP_CB + "/extra",
        APP_CB + "?x=1",
        "https://app.example@evil.example/cb",
        "https://app.example\\@evil.example/cb",
        "https:\\\\evil.example/cb",
        "//evil.example/cb",
        "https://app.example:8443/cb",
        "http://app.example/cb",
        "HTTPS://APP.EXAMPLE/cb",
        "",
    ],
)
async def test_a_redirect_uri_that_is_not_registered_is_refused_without_a_redirect(
    h: Harness, redirect_uri: str
) -> None:
    _, challenge = pkce()
    params = h.authorize_params(code_challenge=challenge, redirect_uri=redirect_uri)
    login = await h.login()
    answer = await get_authorize(h, params, login)
    assert answer.status == 400
    assert "Location" not in answer.headers
    assert answer.headers["X-Frame-Options"] == "DENY"


async def test_two_redirect_uris_are_refused(h: Harness) -> None:
    _, challenge = pkce()
    params = list(h.authorize_params(code_challenge=challenge).items())
    params.append(("redirect_uri", "https://evil.example/cb"))
    answer = await h.client.get("/auth/oauth/authorize", params=params,
                                headers=h.cookie(await h.login()), allow_redirects=False)
    assert answer.status == 400
    assert "Location" not in answer.headers


async def test_an_unknown_client_is_refused_without_a_redirect(h: Harness) -> None:
    _, challenge = pkce()
    params = h.authorize_params(code_challenge=challenge, client_id="nobody")
    answer = await get_authorize(h, params, await h.login())
    assert answer.status == 400
    assert "Location" not in answer.headers


@pytest.mark.parametrize(
    "change",
    [
        {"code_challenge": None, "code_challenge_method": None},  # no PKCE
        {"code_challenge_method": "plain"},
        {"code_challenge_method": None},  # the default would be plain
        {"code_challenge": "short"},
    ],
)
async def test_pkce_s256_is_required_at_the_authorization_endpoint(
    h: Harness, change: dict[str, str | None]
) -> None:
    _, challenge = pkce()
    params = h.authorize_params(code_challenge=challenge)
    for key, value in change.items():
        if value is None:
            params.pop(key, None)
        else:
            params[key] = value
    for client in (h.confidential, h.public):
        params.update(client_id=client.client_id, redirect_uri=client.redirect_uris[0])
        answer = await get_authorize(h, params, await h.login())
        assert answer.status == 302
        location = answer.headers["Location"]
        assert location.startswith(client.redirect_uris[0] + "?")
        found = query_of(location)
        assert found["error"] == "invalid_request"
        assert found["state"] == "st-123"


@pytest.mark.parametrize("verifier", ["wrong", None, "x" * 43])
async def test_a_wrong_or_missing_verifier_is_refused(h: Harness, verifier: str | None) -> None:
    code, _ = await h.code_for()
    data = {"grant_type": "authorization_code", "code": code, "redirect_uri": APP_CB}
    if verifier is not None:
        data["code_verifier"] = verifier
    answer = await h.token(data, h.basic())
    assert answer.status == 400
    assert (await answer.json())["error"] in ("invalid_grant", "invalid_request")


async def test_the_redirect_uri_must_match_at_the_token_endpoint(h: Harness) -> None:
    code, verifier = await h.code_for()
    answer = await h.token({"grant_type": "authorization_code", "code": code,
                            "redirect_uri": APP_CB + "x", "code_verifier": verifier}, h.basic())
    assert answer.status == 400
    assert (await answer.json())["error"] == "invalid_grant"


async def test_a_code_is_bound_to_its_client(h: Harness) -> None:
    code, verifier = await h.code_for(h.public)
    answer = await h.exchange(code, verifier, h.confidential)
    assert answer.status == 400
    assert (await answer.json())["error"] == "invalid_grant"


async def test_a_code_used_twice_is_refused_and_revokes_what_the_first_use_issued(
    h: Harness,
) -> None:
    code, verifier = await h.code_for()
    first = await (await h.exchange(code, verifier)).json()
    assert await h.sessions.lookup(first["access_token"])
    second = await h.exchange(code, verifier)
    assert second.status == 400
    assert (await second.json())["error"] == "invalid_grant"
    assert await h.sessions.was_revoked(first["access_token"])
    refreshed = await h.token(
        {"grant_type": "refresh_token", "refresh_token": first["refresh_token"]}, h.basic()
    )
    assert refreshed.status == 400


async def test_the_consent_page_names_the_client_the_scopes_and_the_host(h: Harness) -> None:
    _, challenge = pkce()
    params = h.authorize_params(scope="read write", code_challenge=challenge)
    answer = await get_authorize(h, params, await h.login())
    assert answer.status == 200
    page = await answer.text()
    assert "Reporting" in page
    assert "Read your reports" in page and "Change your reports" in page
    assert 'id="redirect-host">app.example<' in page
    headers = answer.headers
    assert headers["X-Frame-Options"] == "DENY"
    assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]
    # the form's answer redirects to the application: form-action must allow its origin
    # (a browser held Allow and Deny back under form-action 'self' alone)
    assert "form-action 'self' https://app.example;" in headers["Content-Security-Policy"]
    assert 'name="csrf_token"' in page and 'value="allow"' in page and 'value="deny"' in page


async def test_deny_sends_access_denied_with_the_state(h: Harness) -> None:
    _, challenge = pkce()
    login = await h.login()
    fields = await h.consent_form(login, h.authorize_params(code_challenge=challenge))
    answer = await h.decide(login, fields, "deny")
    assert answer.status == 302
    found = query_of(answer.headers["Location"])
    assert (found["error"], found["state"]) == ("access_denied", "st-123")
    assert "code" not in found


async def test_the_consent_form_needs_its_csrf_token_and_the_same_site(h: Harness) -> None:
    _, challenge = pkce()
    login = await h.login()
    fields = await h.consent_form(login, h.authorize_params(code_challenge=challenge))
    for forged in ({**fields, "csrf_token": "0" * 64}, {k: v for k, v in fields.items()
                                                         if k != "csrf_token"}):
        answer = await h.decide(login, forged, "allow")
        assert answer.status == 403
        assert "Location" not in answer.headers
    # another user's page does not work for this user
    other = await h.login("bob")
    assert (await h.decide(other, fields, "allow")).status == 403
    cross = await h.client.post(
        "/auth/oauth/authorize", data={**fields, "decision": "allow"},
        headers={**h.cookie(login), "Origin": "https://evil.example"}, allow_redirects=False,
    )
    assert cross.status == 403


async def test_consent_is_remembered_for_a_confidential_client_and_asked_again_for_more(
    h: Harness,
) -> None:
    login = await h.login()
    await h.code_for(scope="read", login=login)
    _, challenge = pkce()
    again = await get_authorize(h, h.authorize_params(code_challenge=challenge), login)
    assert again.status == 302
    assert "code" in query_of(again.headers["Location"])
    more = await get_authorize(
        h, h.authorize_params(scope="read write", code_challenge=challenge), login
    )
    assert more.status == 200


async def test_a_public_client_is_always_asked(h: Harness) -> None:
    login = await h.login()
    await h.code_for(h.public, login=login)
    _, challenge = pkce()
    again = await get_authorize(h, h.authorize_params(h.public, code_challenge=challenge), login)
    assert again.status == 200


async def test_the_redirect_keeps_the_registered_uri_exactly(h: Harness) -> None:
    code, _ = await h.code_for()
    assert code
    _, challenge = pkce()
    # alice approved before: remembered, straight back to the client
    answer = await get_authorize(h, h.authorize_params(code_challenge=challenge), await h.login())
    location = urlsplit(answer.headers["Location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == APP_CB


async def test_through_the_login_form_and_back_to_the_consent_page(h: Harness) -> None:
    verifier, challenge = pkce()
    params = h.authorize_params(code_challenge=challenge)
    to_login = await get_authorize(h, params, None)
    assert to_login.status == 303
    return_to = query_of(to_login.headers["Location"])["return_to"]
    signed_in = await h.client.post(
        "/auth/login", data={"username": "carol", "password": "s3cret pass",
                             "return_to": return_to},
        headers={"Origin": h.origin}, allow_redirects=False,
    )
    assert signed_in.status == 303, await signed_in.text()
    assert signed_in.headers["Location"] == return_to
    cookie = signed_in.cookies["sid"].value
    fields = await h.consent_form(cookie, params)
    answer = await h.decide(cookie, fields, "allow")
    code = query_of(answer.headers["Location"])["code"]
    body = await (await h.exchange(code, verifier)).json()
    assert (await h.sessions.lookup(body["access_token"])).sub == "carol"


@pytest.mark.parametrize(
    "redirect_uri",
    ["https://a.example;script-src *", "https://a.example 'unsafe-inline'", "https://u@a.example",
     "javascript://a.example", "https://a.example\nX: y"],
)
def test_the_consent_policy_never_takes_more_than_a_plain_origin(redirect_uri: str) -> None:
    from extauthz.oauth.consent import HTML_HEADERS, consent_headers

    policy = consent_headers(redirect_uri)["Content-Security-Policy"]
    assert policy == HTML_HEADERS["Content-Security-Policy"]
