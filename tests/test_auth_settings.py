"""Settings of the authentication service: [auth], [users], [ratelimit] and the cookie rules."""

from __future__ import annotations

import pytest

from extauthz.errors import SettingsError
from extauthz.settings import load_settings


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
    ],
)
def test_bad_values_name_the_key(environ: dict[str, str], key: str) -> None:
    with pytest.raises(SettingsError, match=key.replace(".", r"\.")):
        load_settings(environ=environ)


def test_plain_http_cookie_on_loopback_is_allowed() -> None:
    s = load_settings(environ={"EXTAUTHZ_SESSION_COOKIE_SECURE": "false"})
    assert s.session.cookie_secure is False
