"""The ``[api_keys]`` settings: defaults, environment overrides and the values refused."""

from __future__ import annotations

import pytest

from extauthz.errors import SettingsError
from extauthz.settings import load_settings


def test_defaults_and_overrides() -> None:
    keys = load_settings(environ={}).api_keys
    assert (keys.header, keys.default_lifetime_days, keys.max_lifetime_days) == (
        "x-api-key", 90, 365
    )  # fmt: skip
    assert keys.touch_interval_seconds == 300
    keys = load_settings(environ={
        "EXTAUTHZ_API_KEYS_HEADER": "x-service-key",
        "EXTAUTHZ_API_KEYS_MAX_LIFETIME_DAYS": "30",
        "EXTAUTHZ_API_KEYS_DEFAULT_LIFETIME_DAYS": "7",
    }).api_keys  # fmt: skip
    assert (keys.header, keys.default_lifetime_days, keys.max_lifetime_days) == (
        "x-service-key", 7, 30
    )  # fmt: skip


@pytest.mark.parametrize(
    ("environ", "key"),
    [
        ({"EXTAUTHZ_API_KEYS_HEADER": "X-Api-Key"}, "api_keys.header"),
        ({"EXTAUTHZ_API_KEYS_HEADER": "x api key"}, "api_keys.header"),
        ({"EXTAUTHZ_API_KEYS_HEADER": ""}, "api_keys.header"),
        ({"EXTAUTHZ_API_KEYS_HEADER": "authorization"}, "api_keys.header"),
        ({"EXTAUTHZ_API_KEYS_HEADER": "cookie"}, "api_keys.header"),
        ({"EXTAUTHZ_API_KEYS_HEADER": "x-forwarded-key"}, "api_keys.header"),
        ({"EXTAUTHZ_API_KEYS_HEADER": "x-jwt", "EXTAUTHZ_JWT_HEADER": "x-jwt"}, "api_keys.header"),
        ({"EXTAUTHZ_API_KEYS_HEADER": "x-extauthz-session-update"}, "api_keys.header"),
        ({"EXTAUTHZ_API_KEYS_MAX_LIFETIME_DAYS": "0"}, "api_keys.max_lifetime_days"),
        ({"EXTAUTHZ_API_KEYS_MAX_LIFETIME_DAYS": "3651"}, "api_keys.max_lifetime_days"),
        ({"EXTAUTHZ_API_KEYS_DEFAULT_LIFETIME_DAYS": "0"}, "api_keys.default_lifetime_days"),
        ({"EXTAUTHZ_API_KEYS_DEFAULT_LIFETIME_DAYS": "366"}, "api_keys.default_lifetime_days"),
        ({"EXTAUTHZ_API_KEYS_TOUCH_INTERVAL_SECONDS": "0"}, "api_keys.touch_interval_seconds"),
    ],
)
def test_bad_values_name_the_key(environ: dict[str, str], key: str) -> None:
    with pytest.raises(SettingsError, match=key.replace(".", r"\.")):
        load_settings(environ=environ)
