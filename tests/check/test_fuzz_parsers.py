"""Property tests of the parsers that read what a client sends: cookies (and their rewrite),
``return_to``, the same-site evidence, repeated header lines, and a whole Check over raw
``header_map`` lines.

The default suite runs each property on Hypothesis's default number of examples (seconds);
``make fuzz`` runs them with the ``fuzz`` profile (tests/conftest.py) for a long run. The
invariants: nothing raises, and nothing is allowed without a live session.
"""

from __future__ import annotations

import asyncio
import re
import string
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from envoy.config.core.v3.base_pb2 import HeaderMap, HeaderValue
from envoy.service.auth.v3.external_auth_pb2 import CheckRequest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from extauthz.check.context import join_headers
from extauthz.check.credentials import iter_cookies, strip_cookie
from extauthz.check.decisions import Allow
from extauthz.check.denials import _has_jws, safe_return_to
from extauthz.check.envoy_adapter import to_request_context
from extauthz.login.csrf import SameSiteCheck
from extauthz.tokens import mint_token
from tests.fixtures.core import COOKIE, Harness, build_harness

_SURROGATES: tuple[Literal["Cs"]] = ("Cs",)
_TEXT = st.text(alphabet=st.characters(exclude_categories=_SURROGATES), max_size=30)
_ANY_TEXT = st.text(max_size=30)  # lone surrogates included: text no header can carry
_COOKIE_TEXT = st.text(alphabet=string.printable + "\u00e9\u2028\x00\x7f", max_size=12)
_FUZZ = settings(deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])


def _cookie_header() -> st.SearchStrategy[str]:
    name = st.sampled_from([COOKIE, f" {COOKIE} ", "a", "b", ""]) | _COOKIE_TEXT
    piece = st.builds(
        lambda n, eq, v: f"{n}{eq}{v}", name, st.sampled_from(["=", " = ", ""]), _COOKIE_TEXT
    )
    separator = st.sampled_from([";", "; ", ",", ", ", " ; ", ";;"])
    return st.builds(
        lambda pieces, seps: "".join(p + s for p, s in zip(pieces, seps, strict=False))
        + (pieces[-1] if len(pieces) > len(seps) else ""),
        st.lists(piece, max_size=6),
        st.lists(separator, max_size=5),
    )


def _pairs_after_commas(header: str) -> list[str]:
    """The ``name=value`` pieces that follow a ``,`` (pieces split as iter_cookies splits)."""
    parts = re.split(r"([;,])", header)
    return [
        piece
        for separator, piece in zip(parts[1::2], parts[2::2], strict=True)
        if separator == "," and piece.partition("=")[1] and piece.partition("=")[0].strip()
    ]


@_FUZZ
@given(header=_cookie_header())
def test_strip_cookie_removes_the_session_cookie_and_keeps_every_other_one(header: str) -> None:
    rest = strip_cookie(header, COOKIE)
    others = [pair for pair in iter_cookies(header) if pair[0] != COOKIE]
    if rest is None:
        assert others == []
        return
    assert list(iter_cookies(rest)) == others
    if rest != header:  # a rewrite: never a comma between two cookies
        assert _pairs_after_commas(rest) == []


@_FUZZ
@given(candidate=_ANY_TEXT | st.builds(lambda t: "/" + t, _ANY_TEXT))
def test_return_to_is_a_printable_same_host_path(candidate: str) -> None:
    target = safe_return_to(candidate)
    assert target.startswith("/") and not target.startswith("//")
    assert target.isascii() and target.isprintable() and " " not in target
    assert "\\" not in target and not urlsplit(target).netloc and not urlsplit(target).scheme
    plain = candidate.isascii() and candidate.isprintable() and " " not in candidate
    if plain and candidate.startswith("/") and target == "/":
        assert candidate == "/" or candidate.startswith("//") or "\\" in candidate


_ORIGINISH = st.builds(
    lambda scheme, host, rest: f"{scheme}{host}{rest}",
    st.sampled_from(["https://", "http://", "HTTPS://", " https://", ""]),
    st.sampled_from(["app.test", "App.test", "partner.test", "evil@app.test", "app.test.evil"]),
    st.sampled_from(["", ":8443", ":443", ":0443", "/", "/x?y", "@evil", " ", "\t", "#"]),
) | _TEXT


@_FUZZ
@given(
    evidence=st.dictionaries(
        st.sampled_from(["origin", "referer", "sec-fetch-site", "content-type"]),
        _ORIGINISH | st.sampled_from(["same-origin", "none", "null", "text/plain"]),
        max_size=3,
    ),
    host=st.sampled_from(["app.test", "App.Test:443", "app.test:0443", "evil.test", ""]),
)
def test_same_site_needs_an_exactly_serialized_origin(
    evidence: dict[str, str], host: str
) -> None:
    check = SameSiteCheck.with_origins(["https://partner.test:8443"])
    verdict = check.violation("https", host, evidence)
    if verdict is not None:
        return
    own = {
        "app.test": "https://app.test", "App.Test:443": "https://app.test",
        "app.test:0443": "https://app.test", "evil.test": "https://evil.test",
    }  # fmt: skip
    allowed = {"https://partner.test:8443", *([own[host]] if host else [])}
    if "origin" in evidence:
        assert evidence["origin"] in allowed
    elif "sec-fetch-site" in evidence:
        assert evidence["sec-fetch-site"] in ("same-origin", "none")
    elif "referer" in evidence:
        referer = evidence["referer"]
        assert any(
            referer == o or referer.startswith((o + "/", o + "?", o + "#")) for o in allowed
        ), referer


@_FUZZ
@given(lines=st.lists(st.tuples(st.sampled_from(["cookie", "Cookie", "a", "A"]), _TEXT)))
def test_repeated_lines_are_joined_in_order_with_their_own_separator(
    lines: list[tuple[str, str]],
) -> None:
    headers = join_headers(lines)
    for name, separator in (("cookie", "; "), ("a", ",")):
        values = [v for k, v in lines if k.lower() == name]
        assert headers.get(name) == (separator.join(values) if values else None)


async def _live_and_revoked(h: Harness) -> tuple[str, str]:
    """Two tokens of one user: a live one and a revoked one."""
    live, _ = await h.login("alice")
    revoked, _ = await h.login("alice")
    await h.sessions.revoke_token(revoked)
    return live, revoked


def test_a_check_over_raw_header_lines_never_raises_and_never_allows_without_a_live_session(
    tmp_path: Path,
) -> None:
    h = build_harness(tmp_path)
    live, revoked = asyncio.run(_live_and_revoked(h))
    token = st.sampled_from([live, revoked, mint_token(), "xat_" + "A" * 40]) | _COOKIE_TEXT
    pair = st.builds(lambda n, v: f"{n}={v}", st.sampled_from([COOKIE, "a", "b"]), token)
    line = st.builds(lambda pairs: "; ".join(pairs), st.lists(pair, min_size=1, max_size=3))
    other = st.tuples(st.sampled_from(["accept", "authorization", "x"]), _TEXT)

    @_FUZZ
    @given(
        cookies=st.lists(st.tuples(st.sampled_from(["cookie", "Cookie"]), line), max_size=3),
        others=st.lists(other, max_size=2),
        raw=st.booleans(),
    )
    def run(cookies: list[tuple[str, str]], others: list[tuple[str, str]], raw: bool) -> None:
        request = CheckRequest()
        http = request.attributes.request.http
        http.method, http.path, http.host, http.scheme = "GET", "/api", "app.test", "https"
        lines = cookies + others
        if raw:
            entries = [HeaderValue(key=k, raw_value=v.encode()) for k, v in lines]
            http.header_map.CopyFrom(HeaderMap(headers=entries))
        else:  # as Envoy sends `headers`: repeated lines joined with ","
            for key, value in lines:
                name = key.lower()
                joined = http.headers.get(name)
                http.headers[name] = value if joined is None else f"{joined},{value}"
        decision = asyncio.run(h.authorizer.authorize(to_request_context(request)))
        sent = "".join(v for _, v in lines)
        if not isinstance(decision, Allow):
            return
        assert live in sent
        upstream = dict(decision.headers_to_set)
        assert upstream["authorization"].startswith("Bearer ey")
        if "cookie" in upstream:
            assert not [v for n, v in iter_cookies(upstream["cookie"]) if n == COOKIE]
            assert _pairs_after_commas(upstream["cookie"]) == []

    run()


# the JWS search as it was written first (quadratic in a long base64url run); the linear one
# must find exactly what it found
_JWS_AS_WRITTEN = re.compile(r"eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
_JWS_PIECES = st.lists(
    st.sampled_from(["eyJ", "e", "yJ", "a", "-", "_", ".", "..", "&", "=", "%", " "])
)


@_FUZZ
@given(_JWS_PIECES.map("".join) | _TEXT)
def test_the_linear_jws_search_finds_what_the_regular_expression_finds(value: str) -> None:
    assert _has_jws(value) == bool(_JWS_AS_WRITTEN.search(value))
