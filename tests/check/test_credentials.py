"""Credential extraction: RFC 6265 cookies, RFC 6750 bearer tokens (extauthz.check.credentials)."""

from __future__ import annotations

import time

import pytest

from extauthz.check.context import RequestContext
from extauthz.check.credentials import (
    MAX_HEADER_LENGTH,
    BearerExtractor,
    CookieExtractor,
    extract_credentials,
    iter_cookies,
    strip_cookie,
)
from extauthz.errors import Reason, Unauthenticated
from extauthz.tokens import mint_token

COOKIE = "extauthz_session"


def ctx(**headers: str) -> RequestContext:
    return RequestContext(method="GET", scheme="https", host="app.test", path="/", headers=headers)


# -- iter_cookies ----------------------------------------------------------------------------


def test_iter_cookies_tolerates_junk_around_the_session_cookie() -> None:
    header = (
        'prefs={"a":1,"b":[1,2]}; ;  spaced = x y ; quoted="q;"; br=[x]; eq=a=b==c; '
        "=novalue; noequals; extauthz_session=TOK; ;tail=1,other=2"
    )
    pairs = list(iter_cookies(header))
    assert ("extauthz_session", "TOK") in pairs
    assert ("eq", "a=b==c") in pairs  # only the first '=' separates name and value
    assert ("spaced", "x y") in pairs
    assert ("tail", "1") in pairs and ("other", "2") in pairs  # comma-joined Cookie headers
    assert all(name for name, _ in pairs)


def test_iter_cookies_unquotes_one_pair_of_double_quotes() -> None:
    assert list(iter_cookies('a="v"; b=""; c="')) == [("a", "v"), ("b", ""), ("c", '"')]


def test_cookie_names_are_case_sensitive() -> None:
    assert CookieExtractor(COOKIE).extract(ctx(cookie="EXTAUTHZ_SESSION=x")) is None


# -- strip_cookie ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("a=1; extauthz_session=T; b=2", "a=1; b=2"),
        ("extauthz_session=T; a=1", "a=1"),
        ("a=1; extauthz_session=T", "a=1"),
        ("a=1;extauthz_session=T;b=2", "a=1;b=2"),  # separators kept as sent
        ('q="x;y"; extauthz_session=T; j={"k":[1,2]}', 'q="x;y"; j={"k":[1,2]}'),
        # Cookie lines that Envoy joined with ",": rebuilt with the cookie separator "; "
        ("a=1; extauthz_session=T, b=2", "a=1; b=2"),
        ("a=1; extauthz_session=T,b=2,c=3", "a=1; b=2; c=3"),
        ("a=1,extauthz_session=T;b=2", "a=1;b=2"),
        ("a=x,y; extauthz_session=T", "a=x,y"),  # a comma inside a value stays
        ("extauthz_session=S; a=1; extauthz_session=T; b=2", "a=1; b=2"),
        ("a=x=y==; extauthz_session=T", "a=x=y=="),
        ("extauthz_sessionX=1; extauthz_session=T", "extauthz_sessionX=1"),
    ],
)
def test_strip_cookie_keeps_every_other_byte_in_order(header: str, expected: str) -> None:
    assert strip_cookie(header, COOKIE) == expected


@pytest.mark.parametrize(
    "header",
    ["extauthz_session=T", " extauthz_session=T ", "extauthz_session=S; extauthz_session=T"],
)
def test_strip_cookie_returns_none_when_only_the_session_cookie_was_there(header: str) -> None:
    assert strip_cookie(header, COOKIE) is None


def test_strip_cookie_without_the_session_cookie_returns_the_header_unchanged() -> None:
    header = 'a=1;b=2;  c="x; y"'
    assert strip_cookie(header, COOKIE) == header


def test_strip_cookie_removes_every_pair_the_extractor_reads() -> None:
    token = mint_token()
    for header in (
        f"a=1; {COOKIE}={token}",
        f'a=1; {COOKIE}="{token}"',
        f"a=1,{COOKIE}={token}",
        f"a=1; {COOKIE} = {token} ; b=2",
    ):
        assert CookieExtractor(COOKIE).extract(ctx(cookie=header)) == (token,)
        stripped = strip_cookie(header, COOKIE)
        assert stripped is not None and token not in stripped, header


# -- CookieExtractor -----------------------------------------------------------------------------


def test_cookie_extractor_not_mine_without_a_session_cookie() -> None:
    extractor = CookieExtractor(COOKIE)
    assert extractor.extract(ctx()) is None
    assert extractor.extract(ctx(cookie="")) is None
    assert extractor.extract(ctx(cookie="a=1; b=2")) is None


def test_cookie_extractor_returns_every_copy_in_order_deduplicated() -> None:
    header = f"{COOKIE}=one; x=1; {COOKIE}=two; {COOKIE}=one"
    assert CookieExtractor(COOKIE).extract(ctx(cookie=header)) == ("one", "two")


def test_cookie_extractor_refuses_too_many_copies() -> None:
    header = "; ".join(f"{COOKIE}=v{i}" for i in range(5))
    with pytest.raises(Unauthenticated) as caught:
        CookieExtractor(COOKIE, max_candidates=4).extract(ctx(cookie=header))
    assert caught.value.reason is Reason.AMBIGUOUS_CREDENTIAL


def test_cookie_extractor_refuses_an_oversized_header() -> None:
    header = "a=" + "x" * MAX_HEADER_LENGTH + f"; {COOKIE}=t"
    with pytest.raises(Unauthenticated) as caught:
        CookieExtractor(COOKIE).extract(ctx(cookie=header))
    assert caught.value.reason is Reason.MALFORMED_CREDENTIAL


def test_cookie_extractor_reads_a_60kb_header() -> None:
    junk = "; ".join(f"c{i}={'v' * 50}" for i in range(1100))
    header = f"{junk}; {COOKIE}=tok; z=1"
    assert 55_000 < len(header) < MAX_HEADER_LENGTH
    assert CookieExtractor(COOKIE).extract(ctx(cookie=header)) == ("tok",)


# -- BearerExtractor -----------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER", "bEaReR"])
def test_bearer_scheme_is_case_insensitive(scheme: str) -> None:
    assert BearerExtractor().extract(ctx(authorization=f"{scheme} abc")) == ("abc",)


@pytest.mark.parametrize(
    "value", ["Basic dXNlcjpwYXNz", "Token abc", "Digest username=\"a\", realm=\"b\"", "Bearerabc"]
)
def test_other_schemes_are_not_mine(value: str) -> None:
    assert BearerExtractor().extract(ctx(authorization=value)) is None


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("Bearer", Reason.MALFORMED_CREDENTIAL),
        ("Bearer ", Reason.MALFORMED_CREDENTIAL),
        ("Bearer    ", Reason.MALFORMED_CREDENTIAL),
        ("Bearer a b", Reason.MALFORMED_CREDENTIAL),
        ("Bearer a=b", Reason.MALFORMED_CREDENTIAL),
        ("Bearer tök", Reason.MALFORMED_CREDENTIAL),
        ("Bearer a, Bearer b", Reason.AMBIGUOUS_CREDENTIAL),
        ("Bearer a,Bearer a", Reason.AMBIGUOUS_CREDENTIAL),
        ("Basic eA==, Bearer b", Reason.AMBIGUOUS_CREDENTIAL),
    ],
)
def test_bearer_mine_but_invalid(value: str, reason: Reason) -> None:
    with pytest.raises(Unauthenticated) as caught:
        BearerExtractor().extract(ctx(authorization=value))
    assert caught.value.reason is reason


def test_bearer_accepts_b64token_padding() -> None:
    assert BearerExtractor().extract(ctx(authorization="Bearer ab+/c==")) == ("ab+/c==",)


# -- extract_credentials ------------------------------------------------------------------------


def test_extract_credentials_none_when_nothing_is_there() -> None:
    found = extract_credentials(ctx(accept="*/*"), CookieExtractor(COOKIE), BearerExtractor())
    assert found is None


def test_extract_credentials_bearer_and_matching_cookie() -> None:
    found = extract_credentials(
        ctx(authorization="Bearer t1", cookie=f"{COOKIE}=t1"),
        CookieExtractor(COOKIE),
        BearerExtractor(),
    )
    assert found is not None and (found.source, found.tokens) == ("bearer", ("t1",))


def test_extract_credentials_cookie_and_different_bearer_disagree() -> None:
    with pytest.raises(Unauthenticated) as caught:
        extract_credentials(
            ctx(authorization="Bearer t2", cookie=f"{COOKIE}=t1"),
            CookieExtractor(COOKIE),
            BearerExtractor(),
        )
    assert caught.value.reason is Reason.AMBIGUOUS_CREDENTIAL


def test_extract_credentials_ignores_the_query_string() -> None:
    request = RequestContext(
        method="GET", scheme="https", host="h", path="/", query=f"access_token=t&{COOKIE}=t"
    )
    assert extract_credentials(request, CookieExtractor(COOKIE), BearerExtractor()) is None


def test_a_header_full_of_session_cookies_is_refused_without_comparing_them_all() -> None:
    """Some 12,000 distinct cookies of a short session cookie name fit in the largest header
    taken (MAX_HEADER_LENGTH); each was compared with every one before it, over a second of a
    blocked event loop per request, for a refusal that the fifth one already decides."""
    header = ";".join(f"s={i}" for i in range(20_000))[:MAX_HEADER_LENGTH]
    started = time.monotonic()
    with pytest.raises(Unauthenticated) as refused:
        CookieExtractor("s", max_candidates=4).extract(ctx(cookie=header))
    assert time.monotonic() - started < 0.2
    assert refused.value.reason is Reason.AMBIGUOUS_CREDENTIAL
