"""Hostile values in every parameter of every OAuth endpoint: a refusal (4xx, or a
redirect with an error to a validated redirect URI), never a 500."""

from __future__ import annotations

import pytest

from tests.oauth.harness import Harness, pkce

BAD = ['a"b', "a\\b", "é", "a\nb", "", "x" * 5000, "%00", "a b"]
AUTHORIZE_KEYS = ("response_type", "scope", "state", "client_id", "redirect_uri",
                  "code_challenge", "code_challenge_method")


@pytest.mark.parametrize("records", ["memory"], indirect=True)
@pytest.mark.parametrize("bad", BAD)
async def test_hostile_values_are_refused_never_a_500(h: Harness, bad: str) -> None:
    sent = [
        await h.token({"grant_type": bad}, h.basic()),
        # (an empty scope is no scope: the client's scopes, RFC 6749 §3.3)
        await h.token({"grant_type": "client_credentials", "scope": bad or "-"}, h.basic()),
        await h.token({"grant_type": "authorization_code", "code": bad, "redirect_uri": bad,
                       "code_verifier": bad}, h.basic()),
        await h.token({"grant_type": "refresh_token", "refresh_token": bad, "scope": bad},
                      h.basic()),
        await h.token({"grant_type": "client_credentials", "client_id": bad,
                       "client_secret": bad}),
    ]
    if bad.isprintable():
        sent.append(await h.token({"grant_type": "client_credentials"},
                                  {"Authorization": "Basic " + bad}))
    for response in sent:
        assert 400 <= response.status < 500, (response.url, response.status)
    for path in ("/auth/oauth/revoke", "/auth/oauth/introspect"):
        # an unknown token is answered 200 (RFC 7009 §2.2) / inactive (RFC 7662 §2.2)
        answer = await h.client.post(path, data={"token": bad, "token_type_hint": bad},
                                     headers=h.basic())
        assert answer.status < 500
        if answer.status == 200 and path.endswith("introspect"):
            assert await answer.json() == {"active": False}
    _, challenge = pkce()
    login = await h.login()
    for key in AUTHORIZE_KEYS:
        params = h.authorize_params(code_challenge=challenge)
        params[key] = bad
        for method in ("get", "post"):
            if method == "get":
                answer = await h.client.get("/auth/oauth/authorize", params=params,
                                            headers=h.cookie(login), allow_redirects=False)
            else:
                answer = await h.client.post(
                    "/auth/oauth/authorize", data={**params, "decision": "allow",
                                                   "csrf_token": bad},
                    headers={**h.cookie(login), "Origin": h.origin}, allow_redirects=False,
                )
            assert answer.status < 500, (key, method, answer.status)
            if answer.status == 302:
                assert answer.headers["Location"].startswith(h.confidential.redirect_uris[0])
                assert "code=" not in answer.headers["Location"]


@pytest.mark.parametrize("path", ["/auth/oauth/token", "/auth/oauth/revoke",
                                  "/auth/oauth/introspect"])
async def test_advisory_a_form_body_that_is_not_utf8_is_a_400_never_a_500(
    h: Harness, path: str
) -> None:
    """aiohttp raises UnicodeDecodeError reading such a form: it was a 500 with a traceback."""
    answer = await h.client.post(
        path, data=b"grant_type=client_credentials&token=\xff",
        headers={**h.basic(), "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert answer.status == 400
    assert (await answer.json())["error"] == "invalid_request"
