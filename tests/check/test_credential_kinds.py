"""Credential kinds: the API-key header beside the cookie and ``Authorization: Bearer``
(extauthz.check.credentials), and a route's ``credentials`` key (extauthz.check.policy)."""

from __future__ import annotations

import logging

import pytest

from extauthz.check.context import RequestContext
from extauthz.check.credentials import (
    API_KEY_HEADER,
    BEARER,
    COOKIE,
    MAX_HEADER_LENGTH,
    ApiKeyHeaderExtractor,
    BearerExtractor,
    CookieExtractor,
    extract_credentials,
)
from extauthz.check.policy import ALL_KINDS, Policy, parse_credential_kinds
from extauthz.errors import Forbidden, Reason, Unauthenticated
from extauthz.store.model import Session
from extauthz.tokens import API_KEY_PREFIX, mint_token

COOKIE_NAME = "extauthz_session"


def ctx(headers: dict[str, str], extensions: dict[str, str] | None = None) -> RequestContext:
    return RequestContext(
        method="GET", scheme="https", host="app.test", path="/", headers=headers,
        context_extensions=extensions or {},
    )  # fmt: skip


def extract(headers: dict[str, str]) -> tuple[str, tuple[str, ...]] | None:
    found = extract_credentials(
        ctx(headers), CookieExtractor(COOKIE_NAME), BearerExtractor(), ApiKeyHeaderExtractor()
    )
    return None if found is None else (found.source, found.tokens)


# -- the API-key header ------------------------------------------------------------------------


def test_an_api_key_in_its_header_is_found() -> None:
    key = mint_token(API_KEY_PREFIX)
    assert extract({"x-api-key": key}) == (API_KEY_HEADER, (key,))
    assert extract({"x-api-key": f"  {key} "}) == (API_KEY_HEADER, (key,))


def test_an_api_key_as_a_bearer_token_is_a_bearer_credential() -> None:
    key = mint_token(API_KEY_PREFIX)
    assert extract({"authorization": f"Bearer {key}"}) == (BEARER, (key,))


def test_the_header_name_is_configurable() -> None:
    key = mint_token(API_KEY_PREFIX)
    extractor = ApiKeyHeaderExtractor("x-service-key")
    assert extractor.extract(ctx({"x-service-key": key})) == (key,)
    assert extractor.extract(ctx({"x-api-key": key})) is None  # not mine


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("", Reason.MALFORMED_CREDENTIAL),
        ("   ", Reason.MALFORMED_CREDENTIAL),
        (mint_token(), Reason.MALFORMED_CREDENTIAL),  # a login token is no API key
        ("Bearer " + mint_token(API_KEY_PREFIX), Reason.MALFORMED_CREDENTIAL),
        ("xak_" + "ä" * 49, Reason.MALFORMED_CREDENTIAL),
        ("xak_abc def", Reason.MALFORMED_CREDENTIAL),
        ("x" * (MAX_HEADER_LENGTH + 1), Reason.MALFORMED_CREDENTIAL),
        # Envoy joins two header lines with ","
        (f"{mint_token(API_KEY_PREFIX)},{mint_token(API_KEY_PREFIX)}", Reason.AMBIGUOUS_CREDENTIAL),
    ],
)
def test_a_bad_api_key_header_is_mine_but_invalid(value: str, reason: Reason) -> None:
    with pytest.raises(Unauthenticated) as refused:
        extract({"x-api-key": value})
    assert refused.value.reason is reason


def test_bearer_and_api_key_header_with_the_same_key_are_one_bearer_credential() -> None:
    key = mint_token(API_KEY_PREFIX)
    assert extract({"authorization": f"Bearer {key}", "x-api-key": key}) == (BEARER, (key,))


@pytest.mark.parametrize(
    "headers",
    [
        {"authorization": f"Bearer {mint_token(API_KEY_PREFIX)}",
         "x-api-key": mint_token(API_KEY_PREFIX)},
        {"authorization": f"Bearer {mint_token()}", "x-api-key": mint_token(API_KEY_PREFIX)},
        {"cookie": f"{COOKIE_NAME}={mint_token()}", "x-api-key": mint_token(API_KEY_PREFIX)},
    ],
)  # fmt: skip
def test_credentials_that_disagree_are_ambiguous(headers: dict[str, str]) -> None:
    with pytest.raises(Unauthenticated) as refused:
        extract(headers)
    assert refused.value.reason is Reason.AMBIGUOUS_CREDENTIAL


def test_an_api_key_in_the_cookie_is_a_cookie_credential_refused_later() -> None:
    """Extraction does not know kinds (an OAuth token has the login prefix): the resolver
    refuses a bearer-only session found through the cookie (test_api_keys.py)."""
    key = mint_token(API_KEY_PREFIX)
    assert extract({"cookie": f"{COOKIE_NAME}={key}"}) == (COOKIE, (key,))


def test_the_query_string_never_carries_an_api_key() -> None:
    key = mint_token(API_KEY_PREFIX)
    request = RequestContext(method="GET", scheme="https", host="h", path="/",
                             query=f"api_key={key}&x-api-key={key}")  # fmt: skip
    found = extract_credentials(
        request, CookieExtractor(COOKIE_NAME), BearerExtractor(), ApiKeyHeaderExtractor()
    )
    assert found is None


# -- a route's credentials ------------------------------------------------------------------------


def session(kind: str) -> Session:
    return Session(sid="s", sub="alice", created_at=0, last_seen=0, idle_timeout=60,
                   expires_at=60, kind=kind)  # fmt: skip


@pytest.mark.parametrize(
    ("value", "kinds"),
    [
        (None, ALL_KINDS),
        ("", ALL_KINDS),
        ("  ", ALL_KINDS),
        ("session oauth", frozenset({"session", "oauth"})),
        ("  api_key\tsession ", frozenset({"api_key", "session"})),
        ("api_key api_key", frozenset({"api_key"})),
        # anything else is invalid: the route refuses every request
        ("session,oauth", None),
        ("Session", None),
        ("api-key", None),
        ("session apikey", None),
        ("all", None),
        ("*", None),
        ("session\x00", None),
        ("s\u00e9ssion", None),
        ("session " * 10_000 + "bogus", None),
    ],
)
def test_parse_credential_kinds(value: str | None, kinds: frozenset[str] | None) -> None:
    assert parse_credential_kinds(value) == kinds


@pytest.mark.parametrize("kind", ["session", "oauth", "api_key"])
def test_a_route_without_credentials_accepts_every_kind(kind: str) -> None:
    Policy.from_context_extensions({}).check(session(kind))


def test_a_route_refuses_the_kinds_it_does_not_name() -> None:
    policy = Policy.from_context_extensions({"credentials": "session oauth"})
    policy.check(session("session"))
    policy.check(session("oauth"))
    with pytest.raises(Forbidden) as refused:
        policy.check(session("api_key"))
    assert refused.value.reason is Reason.CREDENTIAL_KIND_REFUSED
    assert "api_key" in refused.value.detail


def test_an_invalid_credentials_value_refuses_everything_and_is_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.ERROR, logger="extauthz.check.policy")
    for _ in range(3):
        policy = Policy.from_context_extensions({"credentials": "session bogus-kind-1"})
        for kind in ("session", "oauth", "api_key"):
            with pytest.raises(Forbidden) as refused:
                policy.check(session(kind))
            assert refused.value.reason is Reason.CREDENTIAL_KIND_REFUSED
    errors = [r for r in caplog.records if "bogus-kind-1" in r.getMessage()]
    assert len(errors) == 1
    assert "route configuration error" in errors[0].getMessage()


def test_the_kind_is_checked_before_the_scopes() -> None:
    policy = Policy.from_context_extensions({"credentials": "session", "required_scopes": "admin"})
    with pytest.raises(Forbidden) as refused:
        policy.check(session("api_key"))
    assert refused.value.reason is Reason.CREDENTIAL_KIND_REFUSED
