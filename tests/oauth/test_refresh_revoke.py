"""Refresh tokens (rotation, reuse detection, absolute lifetime), revocation (RFC 7009),
introspection (RFC 7662, also as ``application/jwt``), revoking a client's tokens, and a
store that cannot answer (503), through the real aiohttp app."""

from __future__ import annotations

from typing import Any

import jwt
import pytest

from extauthz.errors import StoreUnavailable
from extauthz.oauth.records import OAuthRecords, RefreshRecord
from tests.oauth.harness import Harness


async def tokens_for(h: Harness, scope: str = "read write") -> dict[str, Any]:
    code, verifier = await h.code_for(scope=scope)
    answer = await h.exchange(code, verifier)
    body: dict[str, Any] = await answer.json()
    assert answer.status == 200, body
    return body


async def refresh(h: Harness, token: str, **extra: str) -> Any:
    return await h.token({"grant_type": "refresh_token", "refresh_token": token, **extra},
                         h.basic())


async def introspect(h: Harness, token: str, headers: dict[str, str] | None = None) -> Any:
    return await h.client.post("/auth/oauth/introspect", data={"token": token},
                               headers={**h.basic(), **(headers or {})})


async def test_a_refresh_rotates_the_refresh_token(h: Harness) -> None:
    first = await tokens_for(h)
    answer = await refresh(h, first["refresh_token"])
    second = await answer.json()
    assert answer.status == 200, second
    assert second["refresh_token"] != first["refresh_token"]
    assert second["access_token"] != first["access_token"]
    assert set(second["scope"].split()) == {"read", "write"}
    session = await h.sessions.lookup(second["access_token"])
    assert (session.sub, session.kind) == ("alice", "oauth")
    # a narrower scope for the access token; the new refresh token keeps the whole grant
    narrow = await (await refresh(h, second["refresh_token"], scope="read")).json()
    assert narrow["scope"] == "read"
    assert (await h.sessions.lookup(narrow["access_token"])).scopes == ("read",)
    wider = await (await refresh(h, narrow["refresh_token"])).json()
    assert set(wider["scope"].split()) == {"read", "write"}


async def test_a_scope_beyond_the_grant_is_refused_without_using_the_token(h: Harness) -> None:
    first = await tokens_for(h, scope="read")
    answer = await refresh(h, first["refresh_token"], scope="read write")
    assert answer.status == 400
    assert (await answer.json())["error"] == "invalid_scope"
    assert (await refresh(h, first["refresh_token"])).status == 200


async def test_a_rotated_refresh_token_presented_again_revokes_the_family(h: Harness) -> None:
    first = await tokens_for(h)
    second = await (await refresh(h, first["refresh_token"])).json()
    replay = await refresh(h, first["refresh_token"])
    assert replay.status == 400
    assert (await replay.json())["error"] == "invalid_grant"
    for access in (first["access_token"], second["access_token"]):
        assert await h.sessions.was_revoked(access)
    assert (await refresh(h, second["refresh_token"])).status == 400


async def test_a_refresh_token_is_bound_to_its_client(h: Harness) -> None:
    first = await tokens_for(h)
    answer = await h.token({"grant_type": "refresh_token", "client_id": h.public.client_id,
                            "refresh_token": first["refresh_token"]})
    assert answer.status == 400
    # not used up by the other client's attempt
    assert (await refresh(h, first["refresh_token"])).status == 200


async def test_the_refresh_family_ends_at_its_absolute_lifetime(h: Harness) -> None:
    first = await tokens_for(h)
    seen = await h.issuer.peek_refresh(first["refresh_token"])
    assert seen is not None
    # the family's end never moves with rotations
    second = await (await refresh(h, first["refresh_token"])).json()
    again = await h.issuer.peek_refresh(second["refresh_token"])
    assert again is not None
    assert isinstance(again.record, RefreshRecord) and isinstance(seen.record, RefreshRecord)
    assert again.record.family_expires_at == seen.record.family_expires_at


async def test_revoking_an_access_token(h: Harness) -> None:
    first = await tokens_for(h)
    answer = await h.client.post("/auth/oauth/revoke", data={"token": first["access_token"]},
                                 headers=h.basic())
    assert answer.status == 200
    assert await h.sessions.was_revoked(first["access_token"])
    assert (await (await introspect(h, first["access_token"])).json()) == {"active": False}


async def test_revoking_a_refresh_token_revokes_its_grant(h: Harness) -> None:
    first = await tokens_for(h)
    answer = await h.client.post(
        "/auth/oauth/revoke",
        data={"token": first["refresh_token"], "token_type_hint": "refresh_token"},
        headers=h.basic(),
    )
    assert answer.status == 200
    assert await h.sessions.was_revoked(first["access_token"])
    assert (await refresh(h, first["refresh_token"])).status == 400


async def test_another_clients_token_or_garbage_is_answered_200_and_left_alone(
    h: Harness,
) -> None:
    first = await tokens_for(h)
    answer = await h.client.post(
        "/auth/oauth/revoke",
        data={"token": first["access_token"], "client_id": h.public.client_id},
    )
    assert answer.status == 200
    assert await h.sessions.lookup(first["access_token"])
    junk = await h.client.post("/auth/oauth/revoke", data={"token": "nonsense"},
                               headers=h.basic())
    assert junk.status == 200


async def test_introspection_active_and_inactive(h: Harness) -> None:
    first = await tokens_for(h, scope="read")
    body = await (await introspect(h, first["access_token"])).json()
    assert body["active"] is True
    assert (body["scope"], body["sub"], body["client_id"]) == (
        "read", "alice", h.confidential.client_id
    )
    assert body["exp"] - body["iat"] == 600
    rt = await (await introspect(h, first["refresh_token"])).json()
    assert rt["active"] is True and rt["token_type"] == "refresh_token"
    login = await h.login()  # a login session is never answered for
    assert (await (await introspect(h, login)).json()) == {"active": False}
    await refresh(h, first["refresh_token"])
    assert (await (await introspect(h, first["refresh_token"])).json()) == {"active": False}


async def test_introspection_needs_a_confidential_client(h: Harness) -> None:
    first = await tokens_for(h)
    answer = await h.client.post("/auth/oauth/introspect", data={
        "token": first["access_token"], "client_id": h.public.client_id})
    assert answer.status in (400, 401)
    assert (await answer.json())["error"] == "invalid_client"


async def test_introspection_as_application_jwt_is_the_session_jwt(h: Harness) -> None:
    first = await tokens_for(h, scope="read")
    answer = await introspect(h, first["access_token"],
                              {"Accept": "application/jwt;q=1, application/json;q=0.5"})
    assert answer.status == 200
    assert answer.headers["Content-Type"].startswith("application/jwt")
    raw = await answer.text()
    jwks = jwt.PyJWKSet.from_dict(h.keyring.jwks())
    key = next(k for k in jwks.keys if k.key_id == jwt.get_unverified_header(raw)["kid"])
    claims = jwt.decode(raw, key=key, audience="aud", algorithms=["ES256"])
    assert (claims["sub"], claims["client_id"], claims["scope"]) == (
        "alice", h.confidential.client_id, "read"
    )
    await h.sessions.revoke_token(first["access_token"])
    gone = await introspect(h, first["access_token"], {"Accept": "application/jwt"})
    assert (await gone.json()) == {"active": False}


async def test_revoke_client_tokens_revokes_every_token_of_the_client(h: Harness) -> None:
    grant = await tokens_for(h)
    cc = await (await h.token({"grant_type": "client_credentials"}, h.basic())).json()
    public = await (await h.exchange(*(await h.code_for(h.public)), h.public)).json()
    count = await h.issuer.revoke_client_tokens(h.confidential.client_id)
    assert count >= 3
    for token in (grant["access_token"], cc["access_token"]):
        assert await h.sessions.was_revoked(token)
    assert (await refresh(h, grant["refresh_token"])).status == 400
    assert await h.sessions.lookup(public["access_token"])  # another client's: untouched


async def test_revoke_grant_revokes_the_users_tokens_and_forgets_the_consent(
    h: Harness,
) -> None:
    grant = await tokens_for(h)
    assert await h.issuer.revoke_grant("alice", h.confidential.client_id) >= 2
    assert await h.sessions.was_revoked(grant["access_token"])
    assert not await h.issuer.approved("alice", h.confidential.client_id, frozenset({"read"}))


class DownRecords:
    """Records whose store does not answer."""

    def __getattr__(self, name: str) -> Any:
        async def down(*args: Any, **kwargs: Any) -> Any:
            raise StoreUnavailable("records down")
        return down


@pytest.mark.parametrize("records", ["memory"], indirect=True)
async def test_a_store_that_cannot_answer_gives_503(h: Harness, records: OAuthRecords) -> None:
    first = await tokens_for(h)
    h.issuer.records = DownRecords()
    answer = await refresh(h, first["refresh_token"])
    assert answer.status == 503
    assert (await answer.json())["error"] == "temporarily_unavailable"
    code_flow = await h.client.get(
        "/auth/oauth/authorize", params=h.authorize_params(code_challenge="x" * 43),
        headers=h.cookie(await h.login()), allow_redirects=False,
    )
    assert code_flow.status == 503
