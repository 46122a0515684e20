"""Validating settings: the authentication service ([auth], [users], [ratelimit]), the cookie
rules, and unsafe values that look harmless."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from extauthz.errors import SettingsError
from extauthz.settings import load_settings
from tests.support import REPO_ROOT


def test_defaults_and_environment_overrides() -> None:
    s = load_settings(environ={
        "EXTAUTHZ_RATELIMIT_LOGIN_USER_LIMIT": "3",
        "EXTAUTHZ_AUTH_TRUSTED_PROXIES": "10.0.0.0/8, ::1",
        "EXTAUTHZ_USERS_FILE": "/etc/extauthz/users.json",
    })  # fmt: skip
    assert s.ratelimit.login_user_limit == 3
    assert s.auth.trusted_proxies == ("10.0.0.0/8", "::1")
    assert s.users.backend == "file" and s.users.file == "/etc/extauthz/users.json"
    assert s.session.cookie_secure is True


@pytest.mark.parametrize(
    ("environ", "key"),
    [
        # Secure may be off only for plain-HTTP local use
        ({"EXTAUTHZ_SESSION_COOKIE_SECURE": "false",
          "EXTAUTHZ_SERVER_HTTP_LISTEN": "0.0.0.0:9002"}, "session.cookie_secure"),
        ({"EXTAUTHZ_SESSION_COOKIE_SECURE": "false",
          "EXTAUTHZ_SESSION_COOKIE_NAME": "__Host-sid"}, "session.cookie_secure"),
        ({"EXTAUTHZ_SESSION_COOKIE_NAME": "__Host-sid",
          "EXTAUTHZ_SESSION_COOKIE_DOMAIN": "example.com"}, "session.cookie_domain"),
        ({"EXTAUTHZ_USERS_BACKEND": "redis"}, "users.backend"),
        ({"EXTAUTHZ_USERS_BACKEND": "ldap"}, "users.backend"),
        ({"EXTAUTHZ_RATELIMIT_CHECK_ADDR_LIMIT": "0"}, "ratelimit.check_addr_limit"),
        ({"EXTAUTHZ_AUTH_TRUSTED_PROXIES": "envoy"}, "auth.trusted_proxies"),
        ({"EXTAUTHZ_AUTH_ALLOWED_ORIGINS": "https://a.example/path"}, "auth.allowed_origins"),
        ({"EXTAUTHZ_AUTH_DEFAULT_RETURN_TO": "//evil.example"}, "auth.default_return_to"),
        ({"EXTAUTHZ_STORE_KEY_PREFIX": "app{1}:"}, "store.key_prefix"),  # hash tags are ours
    ],
)
def test_bad_values_name_the_key(environ: dict[str, str], key: str) -> None:
    with pytest.raises(SettingsError, match=key.replace(".", r"\.")):
        load_settings(environ=environ)


def test_plain_http_cookie_on_loopback_is_allowed() -> None:
    s = load_settings(environ={"EXTAUTHZ_SESSION_COOKIE_SECURE": "false"})
    assert s.session.cookie_secure is False


# -- unsafe values that look harmless (each one a reviewer's finding) ------------------------


@pytest.mark.parametrize(
    "url",
    ["//evil.example/login", "httpjunk", "https:///login", "/login\r\nx: y", "/a\\b", "auth/login"],
)
def test_login_url_must_be_a_path_or_an_absolute_http_url(url: str) -> None:
    with pytest.raises(SettingsError, match=r"^deny\.login_url: "):
        load_settings(environ={"EXTAUTHZ_DENY_LOGIN_URL": url})


@pytest.mark.parametrize("url", ["/auth/login", "/login?next=1", "https://login.example.com/auth"])
def test_login_url_accepts_paths_and_absolute_urls(url: str) -> None:
    assert load_settings(environ={"EXTAUTHZ_DENY_LOGIN_URL": url}).deny.login_url == url


@pytest.mark.parametrize(
    "domain", ["example.com; SameSite=None", "exa mple.com", "example.com\n", "-bad.com", "a..b"]
)
def test_cookie_domain_cannot_inject_cookie_attributes(domain: str) -> None:
    with pytest.raises(SettingsError, match=r"^session\.cookie_domain: "):
        load_settings(environ={"EXTAUTHZ_SESSION_COOKIE_DOMAIN": domain})


@pytest.mark.parametrize("domain", ["example.com", ".example.com", "auth.example-1.co.uk"])
def test_cookie_domain_accepts_domain_names(domain: str) -> None:
    settings = load_settings(environ={"EXTAUTHZ_SESSION_COOKIE_DOMAIN": domain})
    assert settings.session.cookie_domain == domain


@pytest.mark.parametrize(
    "header", ["host", "cookie", "x-forwarded-for", "x-envoy-original-path", "te"]
)
def test_jwt_header_cannot_be_a_header_with_a_meaning_of_its_own(header: str) -> None:
    with pytest.raises(SettingsError, match=r"^jwt\.header: "):
        load_settings(environ={"EXTAUTHZ_JWT_HEADER": header})


@pytest.mark.parametrize("network", ["0.0.0.0/0", "::/0"])
def test_trusted_proxies_cannot_trust_everyone(network: str) -> None:
    with pytest.raises(SettingsError, match=r"^auth\.trusted_proxies: "):
        load_settings(environ={"EXTAUTHZ_AUTH_TRUSTED_PROXIES": network})


@pytest.mark.parametrize("key", ["EXTAUTHZ_JWT_AUDIENCE", "EXTAUTHZ_JWT_ISSUER"])
def test_blank_issuer_or_audience_is_refused(key: str) -> None:
    with pytest.raises(SettingsError, match=r"^jwt\.issuer and jwt\.audience"):
        load_settings(environ={key: "   "})


@pytest.mark.parametrize(
    ("key", "value"),
    [("EXTAUTHZ_JWT_HEADER", "x-jwt\n"), ("EXTAUTHZ_SESSION_COOKIE_NAME", "sid\n")],
)
def test_a_trailing_newline_is_not_a_valid_name(key: str, value: str) -> None:
    with pytest.raises(SettingsError):
        load_settings(environ={key: value})


# -- the store's budget for one Check and Envoy's ext_authz timeout ----------------------------


def _ext_authz_timeouts(node: Any) -> Iterator[float]:
    """``grpc_service.timeout`` (seconds) of every ext_authz filter in a parsed Envoy config."""
    if isinstance(node, dict):
        if node.get("name") == "envoy.filters.http.ext_authz":
            yield float(str(node["typed_config"]["grpc_service"]["timeout"]).removesuffix("s"))
        for value in node.values():
            yield from _ext_authz_timeouts(value)
    elif isinstance(node, list):
        for value in node:
            yield from _ext_authz_timeouts(value)


def test_the_reference_envoy_configs_give_ext_authz_the_timeout_the_defaults_assume() -> None:
    timeouts = {
        path.name: list(_ext_authz_timeouts(yaml.safe_load(path.read_text())))
        for path in sorted((REPO_ROOT / "envoy").glob("*.yaml"))
    }
    assert any(timeouts.values())
    server = load_settings(environ={}).server
    for name, found in timeouts.items():
        assert all(t * 1000 == server.ext_authz_timeout_ms for t in found), (name, found)


@pytest.mark.parametrize(
    ("environ", "fits"),
    [
        ({}, True),  # 400 ms of 500 ms
        ({"EXTAUTHZ_STORE_CHECK_BUDGET_MS": "450"}, False),  # Envoy would time out first
        ({"EXTAUTHZ_STORE_CHECK_BUDGET_MS": "500"}, False),
        ({"EXTAUTHZ_STORE_CHECK_BUDGET_MS": "900",
          "EXTAUTHZ_SERVER_EXT_AUTHZ_TIMEOUT_MS": "1000"}, True),
        ({"EXTAUTHZ_SERVER_EXT_AUTHZ_TIMEOUT_MS": "450"}, False),
        ({"EXTAUTHZ_STORE_CHECK_BUDGET_MS": "0"}, False),
    ],
)  # fmt: skip
def test_a_check_budget_that_does_not_end_before_envoys_timeout_is_refused(
    environ: dict[str, str], fits: bool
) -> None:
    if fits:
        load_settings(environ=environ)
        return
    with pytest.raises(SettingsError, match=r"^store\.check_budget_ms: .*ext_authz_timeout_ms"):
        load_settings(environ=environ)


@pytest.mark.parametrize("size", ["0", "10001"])
def test_pool_size_is_bounded(size: str) -> None:
    with pytest.raises(SettingsError, match=r"^store\.pool_size: "):
        load_settings(environ={"EXTAUTHZ_STORE_POOL_SIZE": size})


# -- token rotation --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("environ", "key"),
    [
        ({"EXTAUTHZ_SESSION_ROTATE_AFTER_SECONDS": "-1"}, "session.rotate_after_seconds"),
        ({"EXTAUTHZ_SESSION_ROTATE_AFTER_SECONDS": "50000"}, "session.rotate_after_seconds"),
        ({"EXTAUTHZ_SESSION_ROTATION_GRACE_SECONDS": "0"}, "session.rotation_grace_seconds"),
        ({"EXTAUTHZ_SESSION_ROTATION_GRACE_SECONDS": "301"}, "session.rotation_grace_seconds"),
        # the grace must end before the next rotation is due
        ({"EXTAUTHZ_SESSION_ROTATE_AFTER_SECONDS": "10",
          "EXTAUTHZ_SESSION_ROTATION_GRACE_SECONDS": "10"}, "session.rotation_grace_seconds"),
        # ... and outlast another node's cache answering for the old token
        ({"EXTAUTHZ_STORE_BACKEND": "redis", "EXTAUTHZ_STORE_STRATEGY": "central",
          "EXTAUTHZ_SESSION_ROTATION_GRACE_SECONDS": "0.4"}, "session.rotation_grace_seconds"),
    ],
)  # fmt: skip
def test_bad_rotation_settings_name_the_key(environ: dict[str, str], key: str) -> None:
    with pytest.raises(SettingsError, match=key.replace(".", r"\.")):
        load_settings(environ=environ)


def test_rotation_is_off_by_default_and_short_settings_fit_a_memory_store() -> None:
    assert load_settings(environ={}).session.rotate_after_seconds == 0
    s = load_settings(environ={
        "EXTAUTHZ_SESSION_ROTATE_AFTER_SECONDS": "1",
        "EXTAUTHZ_SESSION_ROTATION_GRACE_SECONDS": "0.4",
    })  # fmt: skip
    assert (s.session.rotate_after_seconds, s.session.rotation_grace_seconds) == (1, 0.4)
    # with Redis and its cache the same grace is accepted once the trust window is shorter
    s = load_settings(environ={
        "EXTAUTHZ_STORE_BACKEND": "redis", "EXTAUTHZ_STORE_STRATEGY": "central",
        "EXTAUTHZ_CACHE_TRUST_WINDOW_MS": "100", "EXTAUTHZ_SESSION_ROTATION_GRACE_SECONDS": "0.4",
    })  # fmt: skip
    assert s.session.rotation_grace_seconds == 0.4


def test_the_settings_know_the_cache_barriers_margin() -> None:
    from extauthz.settings.validation import CACHE_BARRIER_MARGIN_MS
    from extauthz.store.redis.invalidation import BARRIER_MARGIN_SECONDS

    assert round(BARRIER_MARGIN_SECONDS * 1000) == CACHE_BARRIER_MARGIN_MS


def test_session_update_settings() -> None:
    s = load_settings(environ={
        "EXTAUTHZ_SESSION_UPDATES_ALLOWED_KEYS": "shop=cart, shop=theme",
        "EXTAUTHZ_SESSION_UPDATES_HEADER": "x-shop-session",
    })  # fmt: skip
    assert s.session_updates.allowed_keys == ("shop=cart", "shop=theme")
    assert s.session_updates.header == "x-shop-session"
    assert s.session_updates.enabled is True and s.session_updates.budget_ms == 800


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("ALLOWED_KEYS", "shop=roles"),  # never writable
        ("ALLOWED_KEYS", "shop"),
        ("ALLOWED_KEYS", "=cart"),
        ("HEADER", "X-Upper"),
        ("HEADER", "set-cookie"),
        ("HEADER", "authorization"),  # the JWT header
        ("HEADER", "x-envoy-update"),
        ("MAX_PATCH_BYTES", "8192"),
        ("ATTEMPTS", "0"),
        ("BUDGET_MS", "10"),
    ],
)
def test_bad_session_update_settings_name_the_key(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=f"session_updates.{name.lower()}"):
        load_settings(environ={f"EXTAUTHZ_SESSION_UPDATES_{name}": value})


@pytest.mark.parametrize(
    "target",
    ["/\\evil.example", "/\tx", "/a b", "/x\r\nSet-Cookie: a=b", "/\u2028x", "/caf\u00e9", ""],
)
def test_default_return_to_is_refused_where_a_client_return_to_would_be(target: str) -> None:
    """The fallback target goes into Location as it is: what safe_return_to refuses in a
    client's return_to (a backslash, which browsers read as "//", white space, controls,
    unencoded non-ASCII) is refused in the setting too."""
    with pytest.raises(SettingsError, match="auth.default_return_to"):
        load_settings(environ={"EXTAUTHZ_AUTH_DEFAULT_RETURN_TO": target})


@pytest.mark.parametrize("target", ["/", "/app?tab=1", "/caf%C3%A9"])
def test_default_return_to_accepts_paths(target: str) -> None:
    settings = load_settings(environ={"EXTAUTHZ_AUTH_DEFAULT_RETURN_TO": target})
    assert settings.auth.default_return_to == target
