"""The passkey settings (``mfa.rp_id``, ``mfa.rp_name``, ``mfa.origins``): off by default,
environment overrides, the values refused, and the routes the composition root mounts."""

from __future__ import annotations

from pathlib import Path

import pytest

from extauthz.errors import SettingsError
from extauthz.keys.keyring import generate_key
from extauthz.login.mfa.challenges import MemoryCeremonies
from extauthz.server.app import build_components
from extauthz.server.store_wiring import build_ceremonies
from extauthz.settings import load_settings

ON = {"EXTAUTHZ_MFA_RP_ID": "example.com",
      "EXTAUTHZ_MFA_ORIGINS": "https://example.com,https://login.example.com:8443"}


def test_off_by_default_and_overrides() -> None:
    m = load_settings(environ={}).mfa
    assert (m.rp_id, m.rp_name, m.origins) == ("", "extauthz", ())
    m = load_settings(environ={**ON, "EXTAUTHZ_MFA_RP_NAME": "Example"}).mfa
    assert (m.rp_id, m.rp_name) == ("example.com", "Example")
    assert m.origins == ("https://example.com", "https://login.example.com:8443")
    local = {"EXTAUTHZ_MFA_RP_ID": "localhost", "EXTAUTHZ_MFA_ORIGINS": "http://localhost:8080"}
    assert load_settings(environ=local).mfa.origins == ("http://localhost:8080",)


@pytest.mark.parametrize(
    ("environ", "key"),
    [
        ({"EXTAUTHZ_MFA_ORIGINS": "https://example.com"}, "mfa.origins"),  # without rp_id
        ({"EXTAUTHZ_MFA_RP_ID": "example.com"}, "mfa.origins"),  # without origins
        ({**ON, "EXTAUTHZ_MFA_RP_ID": "127.0.0.1"}, "mfa.rp_id"),
        ({**ON, "EXTAUTHZ_MFA_RP_ID": "Example.com"}, "mfa.rp_id"),
        ({**ON, "EXTAUTHZ_MFA_RP_ID": "https://example.com"}, "mfa.rp_id"),
        ({**ON, "EXTAUTHZ_MFA_RP_NAME": ""}, "mfa.rp_name"),
        ({**ON, "EXTAUTHZ_MFA_ORIGINS": "http://example.com"}, "mfa.origins"),
        ({**ON, "EXTAUTHZ_MFA_ORIGINS": "https://evil.com"}, "mfa.origins"),
        ({**ON, "EXTAUTHZ_MFA_ORIGINS": "https://notexample.com"}, "mfa.origins"),
        ({**ON, "EXTAUTHZ_MFA_ORIGINS": "https://example.com/"}, "mfa.origins"),
        ({**ON, "EXTAUTHZ_MFA_ORIGINS": "https://example.com:x"}, "mfa.origins"),
    ],
)
def test_bad_values_name_the_key(environ: dict[str, str], key: str) -> None:
    with pytest.raises(SettingsError, match=key.replace(".", r"\.")):
        load_settings(environ=environ)


@pytest.mark.parametrize("on", [False, True])
def test_the_passkey_routes_are_mounted_only_when_on(tmp_path: Path, on: bool) -> None:
    generate_key(tmp_path / "keys", "ES256")
    environ = {"EXTAUTHZ_JWT_KEYS_DIR": str(tmp_path / "keys"),
               "EXTAUTHZ_MFA_FILE": str(tmp_path / "factors.json"), **(ON if on else {})}
    settings = load_settings(environ=environ)
    components = build_components(settings)
    paths = {route.path for route in components.auth.routes()}
    assert ("/auth/passkeys/sign-in" in paths) is on
    assert ("/auth/static/passkeys.js" in paths) is on
    assert "/auth/mfa/verify" in paths
    assert isinstance(build_ceremonies(settings, None), MemoryCeremonies)
