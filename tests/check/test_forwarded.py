"""Reading a forward-auth request (extauthz.check.forwarded): the original method, target, host
and scheme from the forwarding headers, the per-route policy headers, and the answer built from
the pipeline's decision. Missing, repeated, forged or malformed forwarding headers raise
BadRequest: never a crash, never a context that could be allowed."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from extauthz.check.context import RequestContext
from extauthz.check.decisions import Allow, Deny
from extauthz.check.forwarded import (
    COOKIE_FOR_UPSTREAM,
    forwarded_request,
    verify_answer,
    wants_redirect_as_401,
)
from extauthz.check.policy import Policy
from extauthz.errors import BadRequest

NGINX = [
    ("Host", "extauthz"),
    ("X-Original-Method", "get"),
    ("X-Original-URI", "/reports/2026?page=2"),
    ("X-Forwarded-Host", "app.example:8443"),
    ("X-Forwarded-Proto", "https"),
    ("Cookie", "theme=dark; extauthz_session=xst_abc"),
    ("Accept", "text/html"),
]
TRAEFIK = [
    ("Host", "auth.internal:9002"),
    ("X-Forwarded-Method", "POST"),
    ("X-Forwarded-Uri", "/api/items"),
    ("X-Forwarded-Host", "app.example"),
    ("X-Forwarded-Proto", "http"),
    ("Authorization", "Bearer xat_abc"),
]


def read(lines: list[tuple[str, str]], scheme: str = "http") -> RequestContext:
    return forwarded_request(lines, scheme=scheme, peer_address="192.0.2.7")


def test_nginx_request() -> None:
    ctx = read(NGINX)
    assert (ctx.method, ctx.scheme, ctx.host) == ("GET", "https", "app.example:8443")
    assert (ctx.path, ctx.query) == ("/reports/2026", "page=2")
    assert ctx.peer_address == "192.0.2.7"
    assert ctx.header("cookie") == "theme=dark; extauthz_session=xst_abc"
    assert ctx.header("accept") == "text/html"
    # the forwarding headers are read, not passed on as the original request's
    assert ctx.header("x-original-uri") is None and ctx.header("x-forwarded-host") is None
    assert ctx.context_extensions == {}


def test_traefik_request() -> None:
    ctx = read(TRAEFIK)
    assert (ctx.method, ctx.scheme, ctx.host) == ("POST", "http", "app.example")
    assert ctx.path == "/api/items"
    assert ctx.header("authorization") == "Bearer xat_abc"


def test_host_and_scheme_fall_back_to_the_connection() -> None:
    lines = [("Host", "app.example"), ("X-Original-Method", "GET"), ("X-Original-URI", "/")]
    ctx = read(lines, scheme="https")
    assert (ctx.host, ctx.scheme) == ("app.example", "https")


def test_policy_headers_become_context_extensions() -> None:
    ctx = read([*NGINX, ("X-Extauthz-Scopes", "read write"), ("X-Extauthz-Client", "api"),
                ("X-Extauthz-Credentials", "session"), ("X-Extauthz-Roles", "admin"),
                ("X-Extauthz-Same-Site", "required")])  # fmt: skip
    assert ctx.context_extensions == {
        "required_scopes": "read write",
        "client": "api",
        "credentials": "session",
        "required_roles": "admin",
        "same_site": "required",
    }
    policy = Policy.from_context_extensions(ctx.context_extensions)
    assert policy.required_scopes == {"read", "write"} and policy.client == "api"
    assert ctx.header("x-extauthz-scopes") is None


def test_both_families_agreeing_are_accepted() -> None:
    ctx = read([*NGINX, ("X-Forwarded-Method", "GET"), ("X-Forwarded-Uri", "/reports/2026?page=2")])
    assert ctx.path == "/reports/2026"


def _without(lines: list[tuple[str, str]], name: str) -> list[tuple[str, str]]:
    return [(k, v) for k, v in lines if k.lower() != name.lower()]


@pytest.mark.parametrize(
    ("lines", "why"),
    [
        (_without(NGINX, "X-Original-URI"), "uri missing"),
        (_without(NGINX, "X-Original-Method"), "method missing"),
        (_without(_without(NGINX, "X-Forwarded-Host"), "Host"), "host missing"),
        # a client-sent copy the proxy did not overwrite cannot stand in for the proxy's own
        ([*NGINX, ("X-Forwarded-Uri", "/auth/login")], "families disagree on the uri"),
        ([*NGINX, ("X-Forwarded-Method", "POST")], "families disagree on the method"),
        ([*NGINX, ("X-Original-URI", "/other")], "uri repeated"),
        ([*NGINX, ("x-original-uri", "/reports/2026?page=2")], "uri repeated, other case"),
        ([*NGINX, ("X-Extauthz-Scopes", "a"), ("X-Extauthz-Scopes", "b")], "policy repeated"),
        ([*NGINX, ("X-Forwarded-Host", "evil.example")], "host repeated"),
        ([*_without(NGINX, "X-Original-URI"), ("X-Original-URI", "https://evil.example/")],
         "absolute-form uri"),
        ([*_without(NGINX, "X-Original-URI"), ("X-Original-URI", "*")], "asterisk-form"),
        ([*_without(NGINX, "X-Original-URI"), ("X-Original-URI", "/a b")], "space in uri"),
        ([*_without(NGINX, "X-Original-URI"), ("X-Original-URI", "/a\x00b")], "NUL in uri"),
        ([*_without(NGINX, "X-Original-URI"), ("X-Original-URI", "/caf\u00e9")], "non-ASCII"),
        ([*_without(NGINX, "X-Original-URI"), ("X-Original-URI", "/a#frag")], "fragment"),
        ([*_without(NGINX, "X-Original-URI"), ("X-Original-URI", "/" + "a" * 9000)], "too long"),
        ([*_without(NGINX, "X-Original-Method"), ("X-Original-Method", "GE T")], "bad method"),
        ([*_without(NGINX, "X-Original-Method"), ("X-Original-Method", "")], "empty method"),
        ([*_without(NGINX, "X-Forwarded-Host"), ("X-Forwarded-Host", "a/b")], "slash in host"),
        ([*_without(NGINX, "X-Forwarded-Host"), ("X-Forwarded-Host", "a b")], "space in host"),
        ([*_without(NGINX, "X-Forwarded-Proto"), ("X-Forwarded-Proto", "ftp")], "bad scheme"),
        ([*NGINX, ("X-Extauthz-Scopes", "read\x7fwrite")], "control in policy"),
    ],  # fmt: skip
)
def test_malformed_forwarding_is_refused(lines: list[tuple[str, str]], why: str) -> None:
    with pytest.raises(BadRequest):
        read(lines)


_NAMES = st.sampled_from(
    ["x-original-method", "x-original-uri", "x-forwarded-method", "x-forwarded-uri",
     "x-forwarded-host", "x-forwarded-proto", "host", "x-extauthz-scopes", "x-extauthz-client",
     "x-extauthz-redirect", "cookie", "authorization", "accept"]  # fmt: skip
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(_NAMES, st.text(max_size=40)), max_size=12))
def test_any_header_lines_give_a_context_or_bad_request(lines: list[tuple[str, str]]) -> None:
    """Whatever a client or a broken proxy sends: a well-formed context or BadRequest."""
    try:
        ctx = read(lines)
    except BadRequest:
        return
    assert ctx.path.startswith("/") and ctx.scheme in ("http", "https")
    assert ctx.method.isascii() and ctx.method == ctx.method.upper()
    assert all(0x20 < ord(c) < 0x7F for c in ctx.path + ctx.query)


def test_redirect_as_401_is_asked_by_header() -> None:
    assert wants_redirect_as_401([("X-Extauthz-Redirect", " 401 ")])
    assert not wants_redirect_as_401([("X-Extauthz-Redirect", "302")])
    assert not wants_redirect_as_401([])


CTX = RequestContext(
    method="GET", scheme="https", host="app.example", path="/", headers={"cookie": "a=1; s=x"}
)


def test_allow_answer_carries_the_jwt_and_the_cookie_for_upstream() -> None:
    allow = Allow(
        headers_to_set=(("authorization", "Bearer J"), ("cookie", "a=1")),
        response_headers_to_add=(("set-cookie", "s=new"),),
    )
    answer = verify_answer(CTX, allow)
    assert answer.status == 200
    assert ("authorization", "Bearer J") in answer.headers
    assert (COOKIE_FOR_UPSTREAM, "a=1") in answer.headers
    assert ("set-cookie", "s=new") in answer.headers


def test_allow_answer_keeps_a_cookie_header_without_session_cookie() -> None:
    answer = verify_answer(CTX, Allow(headers_to_set=(("authorization", "Bearer J"),)))
    assert (COOKIE_FOR_UPSTREAM, "a=1; s=x") in answer.headers


def test_allow_answer_empties_a_cookie_header_of_only_the_session_cookie() -> None:
    allow = Allow(headers_to_set=(("authorization", "Bearer J"),), headers_to_remove=("cookie",))
    assert (COOKIE_FOR_UPSTREAM, "") in verify_answer(CTX, allow).headers


def test_login_redirect_as_401_keeps_location() -> None:
    deny = Deny(302, (("location", "/auth/login?return_to=%2F"),))
    assert verify_answer(CTX, deny).status == 302
    answer = verify_answer(CTX, deny, redirect_as_401=True)
    assert answer.status == 401 and ("location", "/auth/login?return_to=%2F") in answer.headers
    assert verify_answer(CTX, Deny(403), redirect_as_401=True).status == 403
