"""The session cookie's ``Set-Cookie`` values (extauthz.login.cookies)."""

from __future__ import annotations

import pytest

from extauthz.login.cookies import SessionCookie


def test_session_cookie_attributes() -> None:
    cookie = SessionCookie("__Host-sid", secure=False, domain="")
    value = cookie.set("xat_abc", 3599.2)
    assert value == "__Host-sid=xat_abc; Max-Age=3600; Path=/; HttpOnly; SameSite=Lax; Secure"
    assert cookie.clearing() == (
        "__Host-sid=; Max-Age=0; Path=/; HttpOnly; SameSite=Lax; Secure",
    )
    plain = SessionCookie("sid", secure=False, domain="example.com")
    assert plain.set("t", 10) == (
        "sid=t; Max-Age=10; Path=/; HttpOnly; SameSite=Lax; Domain=example.com"
    )
    with pytest.raises(ValueError):
        plain.set("a;b", 10)


def test_a_host_prefixed_cookie_never_carries_a_domain() -> None:
    """RFC 6265bis §4.1.3.2: a browser refuses a ``__Host-`` cookie with a ``Domain``, the
    clearing one included (it would never be cleared)."""
    cookie = SessionCookie("__Host-sid", secure=True, domain="example.com")
    assert "Domain" not in cookie.set("t", 10)
    assert cookie.clearing() == (
        "__Host-sid=; Max-Age=0; Path=/; HttpOnly; SameSite=Lax; Secure",
    )
    secure_prefixed = SessionCookie("__Secure-sid", secure=False, domain="example.com")
    assert secure_prefixed.clearing()[-1].endswith("; Secure; Domain=example.com")
