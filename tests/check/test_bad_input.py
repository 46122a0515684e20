"""Bad input never raises and never allows: every case gets its documented denial
(RFC 6750 §3.1 challenge, 302 for browser navigations), built from JSON CheckRequests and
run through the servicer's ``Check`` without a socket."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qs, urlsplit

import pytest
from envoy.service.auth.v3.external_auth_pb2 import CheckRequest, CheckResponse
from google.rpc import code_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from extauthz.check.credentials import iter_cookies
from extauthz.server.grpc_server import AuthorizationServicer
from extauthz.store.memory import MemorySessionStore
from extauthz.store.model import Session
from extauthz.tokens import mint_token
from tests.fixtures.core import (
    COOKIE,
    LOGIN_URL,
    REALM,
    FakeClock,
    FakeServicerContext,
    Harness,
    build_harness,
    http_request,
    load_check_request,
    metadata,
    ok_headers,
    response_headers,
)

CLEAR_COOKIE = f"{COOKIE}=; Max-Age=0; Path=/; HttpOnly; SameSite=Lax; Secure"
NO_CREDENTIAL = f'Bearer realm="{REALM}"'


def invalid_token(description: str) -> str:
    return f'Bearer realm="{REALM}", error="invalid_token", error_description="{description}"'


class CountingStore(MemorySessionStore):
    """The in-memory store, counting lookups (to show a shape check spared the store)."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__(clock)
        self.gets = 0

    async def get(self, token_hash: str) -> Session | None:
        self.gets += 1
        return await super().get(token_hash)


@pytest.fixture
def h(tmp_path: Path) -> Harness:
    clock = FakeClock()
    return build_harness(tmp_path, store=CountingStore(clock), clock=clock)


async def check(h: Harness, request: CheckRequest) -> CheckResponse:
    return await AuthorizationServicer(h.authorizer).Check(request, FakeServicerContext())


def gets(h: Harness) -> int:
    assert isinstance(h.store, CountingStore)
    return h.store.gets


def api_401(headers: list[tuple[str, str]], challenge: str, cleared: bool) -> None:
    expected = [("cache-control", "no-store")]
    if cleared:
        expected.append(("set-cookie", CLEAR_COOKIE))
    expected += [("www-authenticate", challenge), ("content-type", "application/json")]
    assert headers == expected


async def denied_401(
    h: Harness, request: CheckRequest, challenge: str, *, cleared: bool = False, reason: str
) -> CheckResponse:
    response = await check(h, request)
    assert not response.HasField("ok_response")
    assert response.denied_response.status.code == 401
    assert response.status.code == code_pb2.UNAUTHENTICATED
    api_401(response_headers(response), challenge, cleared)
    assert json.loads(response.denied_response.body)["reason"] == reason
    assert metadata(response)["reason"] == reason
    return response


# -- cookies -----------------------------------------------------------------------------------


async def test_junk_cookies_around_an_unknown_session_cookie(h: Harness) -> None:
    request = load_check_request("junk_cookies", TOKEN=mint_token())
    await denied_401(
        h,
        request,
        invalid_token("unknown or revoked session"),
        cleared=True,
        reason="unknown_session",
    )


async def test_junk_cookies_around_a_live_session_cookie_allow(h: Harness) -> None:
    token, _ = await h.login()
    response = await check(h, load_check_request("junk_cookies", TOKEN=token))
    assert response.status.code == code_pb2.OK


async def test_junk_cookies_without_a_session_cookie_are_no_credential(h: Harness) -> None:
    request = http_request({"cookie": 'a={"x":[1,2]}; ;  =v; b="q;"; c=d=e; [x]'})
    await denied_401(h, request, NO_CREDENTIAL, reason="no_credential")


@pytest.mark.parametrize(
    "value",
    ["", '""', " ", "[]", "{}", "null", "xat_", "x y", "é" * 53, '"xat_' + "a" * 49 + '"'],
)
async def test_session_cookie_with_a_junk_value(h: Harness, value: str) -> None:
    request = http_request({"cookie": f"a=1; {COOKIE}={value}; b=2"})
    await denied_401(
        h,
        request,
        invalid_token("not an access token"),
        cleared=True,
        reason="malformed_credential",
    )
    assert gets(h) == 0


async def test_non_ascii_header_values(h: Harness) -> None:
    token, sid = await h.login()
    allowed = await check(
        h, http_request({"authorization": f"Bearer {token}", "x-name": "Grüße 🙂", "cookie": "n=é"})
    )
    assert allowed.status.code == code_pb2.OK and metadata(allowed)["sid"] == sid
    await denied_401(
        h,
        http_request({"authorization": "Bearer tökén"}),
        invalid_token("bearer token has invalid syntax"),
        reason="malformed_credential",
    )
    await denied_401(
        h,
        http_request({"cookie": f"{COOKIE}={token[:-1]}é"}),
        invalid_token("not an access token"),
        cleared=True,
        reason="malformed_credential",
    )


def big_cookie_header(session_value: str, size: int) -> str:
    filler = []
    length = 0
    i = 0
    while length < size:
        piece = f"c{i}={'v' * 40}"
        filler.append(piece)
        length += len(piece) + 2
        i += 1
    return "; ".join(
        [*filler[: len(filler) // 2], f"{COOKIE}={session_value}", *filler[len(filler) // 2 :]]
    )


async def test_a_60kb_cookie_header(h: Harness) -> None:
    token, _ = await h.login()
    header = big_cookie_header(token, 60_000)
    assert 60_000 <= len(header) < 61_000
    response = await check(h, http_request({"cookie": header}))
    assert response.status.code == code_pb2.OK
    rewritten = [v for k, v, _ in ok_headers(response) if k == "cookie"]
    assert rewritten == [header.replace(f"; {COOKIE}={token}", "")]
    await denied_401(
        h,
        http_request({"cookie": big_cookie_header(mint_token(), 60_000)}),
        invalid_token("unknown or revoked session"),
        cleared=True,
        reason="unknown_session",
    )


async def test_a_cookie_header_over_the_limit_is_refused_before_parsing(h: Harness) -> None:
    token, _ = await h.login()
    await denied_401(
        h,
        http_request({"cookie": big_cookie_header(token, 70_000)}),
        invalid_token("cookie header too large"),
        cleared=True,
        reason="malformed_credential",
    )
    assert gets(h) == 0


# -- tokens of the wrong shape ---------------------------------------------------------------------


async def test_a_token_with_a_wrong_checksum_never_reaches_the_store(h: Harness) -> None:
    token, _ = await h.login()
    broken = token[:-1] + ("A" if token[-1] != "A" else "B")
    await denied_401(
        h,
        http_request({"authorization": f"Bearer {broken}"}),
        invalid_token("not an access token"),
        reason="malformed_credential",
    )
    assert gets(h) == 0


@pytest.mark.parametrize("value", ["Bearer", "Bearer ", "bearer    "])
async def test_an_empty_bearer(h: Harness, value: str) -> None:
    await denied_401(
        h,
        http_request({"authorization": value}),
        invalid_token("empty bearer token"),
        reason="malformed_credential",
    )


async def test_a_jwt_presented_as_the_opaque_token(h: Harness) -> None:
    token, _ = await h.login()
    allowed = await check(h, http_request({"authorization": f"Bearer {token}"}))
    minted = ok_headers(allowed)[0][1].removeprefix("Bearer ")
    before = gets(h)
    for request in (
        http_request({"authorization": f"Bearer {minted}"}),
        http_request({"cookie": f"{COOKIE}={minted}"}),
    ):
        response = await check(h, request)
        assert response.denied_response.status.code == 401
        assert metadata(response)["reason"] == "malformed_credential"
    assert gets(h) == before


async def test_two_authorization_values_comma_joined(h: Harness) -> None:
    token, _ = await h.login()
    await denied_401(
        h,
        load_check_request("two_authorization", TOKEN=token, OTHER=token),
        invalid_token("more than one Authorization header value"),
        reason="ambiguous_credential",
    )


async def test_two_authorization_headers_differing_in_case(h: Harness) -> None:
    alice, _ = await h.login("alice")
    bob, _ = await h.login("bob")
    request = http_request({"Authorization": f"Bearer {alice}", "authorization": f"Bearer {bob}"})
    await denied_401(
        h,
        request,
        invalid_token("more than one Authorization header value"),
        reason="ambiguous_credential",
    )


async def test_mixed_case_header_names(h: Harness) -> None:
    token, _ = await h.login()
    response = await check(h, load_check_request("mixed_case_headers", TOKEN=token))
    assert response.status.code == code_pb2.OK
    await denied_401(
        h,
        load_check_request("mixed_case_headers", TOKEN=mint_token()),
        invalid_token("unknown or revoked session"),
        reason="unknown_session",
    )


@pytest.mark.parametrize(
    "value", ["Basic dXNlcjpwYXNz", 'Digest username="a", realm="b"', "Token x"]
)
async def test_other_authorization_schemes_are_no_credential(h: Harness, value: str) -> None:
    await denied_401(
        h, http_request({"authorization": value}), NO_CREDENTIAL, reason="no_credential"
    )


async def test_bearer_in_the_query_string_is_not_used(h: Harness) -> None:
    token, _ = await h.login()
    response = await denied_401(
        h, load_check_request("query_token", TOKEN=token), NO_CREDENTIAL, reason="no_credential"
    )
    assert gets(h) == 0
    assert token not in response.SerializeToString().decode("latin-1")


async def test_browser_navigation_with_bad_input_is_redirected(h: Harness) -> None:
    request = http_request(
        {"accept": "text/html", "authorization": "Basic x", "cookie": "a=[1]"},
        path="/app/page?x=1",
    )
    response = await check(h, request)
    assert response.denied_response.status.code == 302
    assert response_headers(response) == [
        ("cache-control", "no-store"),
        ("location", f"{LOGIN_URL}?return_to=%2Fapp%2Fpage%3Fx%3D1"),
    ]


# -- property: arbitrary headers never raise and never allow without a live token ------------------

_SURROGATES: tuple[Literal["Cs"]] = ("Cs",)  # unencodable as UTF-8: no header carries them
_TEXT = st.text(
    alphabet=st.characters(exclude_categories=_SURROGATES, max_codepoint=0x1F700), max_size=40
)
_NAMES = st.sampled_from(
    ["authorization", "Authorization", "AUTHORIZATION", "cookie", "Cookie", "accept", "x-other"]
) | _TEXT.filter(bool)
_SEPARATORS = st.sampled_from([";", "; ", ",", " ; ", ";;", ", "])


def _cookie_piece(tokens: dict[str, str]) -> st.SearchStrategy[str]:
    token = st.sampled_from(sorted(tokens.values())) | _TEXT
    name = st.sampled_from([COOKIE, COOKIE.upper(), "a", ""]) | _TEXT
    return st.builds(
        lambda n, sep, v: f"{n}{sep}{v}", name, st.sampled_from(["=", " = ", "", '="']), token
    )


def _cookie_header(tokens: dict[str, str]) -> st.SearchStrategy[str]:
    return st.builds(
        lambda pieces, sep: sep.join(pieces),
        st.lists(_cookie_piece(tokens), max_size=6),
        _SEPARATORS,
    )


def _authorization(tokens: dict[str, str]) -> st.SearchStrategy[str]:
    token = st.sampled_from(sorted(tokens.values())) | _TEXT
    scheme = st.sampled_from(["Bearer", "bearer", "Basic", "", "Bearer  "]) | _TEXT
    return st.builds(lambda s, t: f"{s} {t}", scheme, token)


def _headers(tokens: dict[str, str]) -> st.SearchStrategy[dict[str, str]]:
    structured = st.fixed_dictionaries(
        {},
        optional={
            "cookie": _cookie_header(tokens),
            "authorization": _authorization(tokens),
            "Authorization": _authorization(tokens),
            "accept": st.sampled_from(["text/html", "application/json", "*/*"]),
        },
    )
    return st.builds(
        lambda a, b: {**b, **a}, structured, st.dictionaries(_NAMES, _TEXT, max_size=4)
    )


def _ok_header_value(value: str) -> bool:
    return not any(ord(c) < 0x20 and c != "\t" or ord(c) == 0x7F for c in value)


def _assert_sound(response: CheckResponse, headers: dict[str, str], live: list[str]) -> None:
    if response.HasField("ok_response"):
        assert response.status.code == code_pb2.OK
        assert any(t in v for t in live for v in headers.values()), headers
        # the credential is gone from what goes upstream (a copy that the client put into
        # some other header or cookie name is the client's business)
        sent = {k: v for k, v, _ in ok_headers(response)}
        assert sent["authorization"].startswith("Bearer ey")
        removed = set(response.ok_response.headers_to_remove)
        cookie = sent.get("cookie", "" if "cookie" in removed else headers.get("cookie", ""))
        assert not [v for n, v in iter_cookies(cookie) if n == COOKIE]
        return
    raw = response.SerializeToString().decode("latin-1")
    for token in live:
        assert token not in raw
    denied = response.denied_response
    assert response.status.code != code_pb2.OK
    assert denied.status.code in (302, 400, 401, 403)
    pairs = response_headers(response)
    assert all(_ok_header_value(v) for _, v in pairs)
    if denied.status.code == 302:
        (location,) = [v for k, v in pairs if k == "location"]
        assert location.startswith(f"{LOGIN_URL}?return_to=")
        (target,) = parse_qs(urlsplit(location).query)["return_to"]
        assert target.startswith("/") and not target.startswith("//") and "\\" not in target
    if denied.status.code == 401:
        (challenge,) = [v for k, v in pairs if k == "www-authenticate"]
        assert challenge.startswith(f'Bearer realm="{REALM}"')


def test_property_arbitrary_headers_never_raise_and_never_allow_without_a_live_token(
    tmp_path: Path,
) -> None:
    h = build_harness(tmp_path)
    live_token, _ = asyncio.run(h.login("alice"))
    dead_token, _ = asyncio.run(h.login("bob"))
    asyncio.run(h.sessions.revoke_token(dead_token))
    tokens = {"live": live_token, "dead": dead_token, "random": mint_token()}
    servicer = AuthorizationServicer(h.authorizer)

    @settings(
        max_examples=300,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(
        headers=_headers(tokens),
        method=st.sampled_from(["GET", "HEAD", "POST", "get", "DELETE"]),
        path=st.builds(lambda p: "/" + p, _TEXT),
        extensions=st.dictionaries(
            st.sampled_from(["client", "required_scopes", "required_roles", "x"]), _TEXT, max_size=2
        ),
    )
    def run(headers: dict[str, str], method: str, path: str, extensions: dict[str, str]) -> None:
        request = http_request(headers, method=method, path=path, context_extensions=extensions)
        response: Any = asyncio.run(servicer.Check(request, FakeServicerContext()))
        _assert_sound(response, headers, [live_token])
        if live_token not in "".join(headers.values()):
            assert not response.HasField("ok_response")

    run()
