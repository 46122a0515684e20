"""The ``[mfa]`` settings: defaults, environment overrides, the values refused, and the
second-factor part of the composition root (file or Redis stores, a sealing key file)."""

from __future__ import annotations

from pathlib import Path

import pytest

from extauthz.errors import SettingsError
from extauthz.keys.keyring import generate_key
from extauthz.login.mfa.file_store import FileFactorStore
from extauthz.login.mfa.pending import MemoryPendingLogins
from extauthz.login.mfa.sealing import new_key
from extauthz.server.app import build_components
from extauthz.server.store_wiring import build_factor_store, build_pending_logins
from extauthz.settings import MfaMode, load_settings


def test_defaults_and_overrides() -> None:
    m = load_settings(environ={}).mfa
    assert (m.mode, m.required_roles, m.secret_key_file) == (MfaMode.OPTIONAL, (), "")
    assert (m.fresh_auth_seconds, m.pending_seconds, m.issuer) == (600, 300, "extauthz")
    m = load_settings(environ={
        "EXTAUTHZ_MFA_MODE": "roles",
        "EXTAUTHZ_MFA_REQUIRED_ROLES": "admin,ops",
        "EXTAUTHZ_MFA_FRESH_AUTH_SECONDS": "120",
    }).mfa  # fmt: skip
    assert (m.mode, m.required_roles, m.fresh_auth_seconds) == ("roles", ("admin", "ops"), 120)


@pytest.mark.parametrize(
    ("environ", "key"),
    [
        ({"EXTAUTHZ_MFA_MODE": "sometimes"}, "mfa.mode"),
        ({"EXTAUTHZ_MFA_MODE": "roles"}, "mfa.required_roles"),
        ({"EXTAUTHZ_MFA_REQUIRED_ROLES": "a b"}, "mfa.required_roles"),
        ({"EXTAUTHZ_MFA_FILE": ""}, "mfa.file"),
        ({"EXTAUTHZ_MFA_ISSUER": "a:b"}, "mfa.issuer"),
        ({"EXTAUTHZ_MFA_FRESH_AUTH_SECONDS": "59"}, "mfa.fresh_auth_seconds"),
        ({"EXTAUTHZ_MFA_PENDING_SECONDS": "3601"}, "mfa.pending_seconds"),
    ],
)
def test_bad_values_name_the_key(environ: dict[str, str], key: str) -> None:
    with pytest.raises(SettingsError, match=key.replace(".", r"\.")):
        load_settings(environ=environ)


def test_factors_live_beside_the_users(tmp_path: Path) -> None:
    settings = load_settings(environ={"EXTAUTHZ_MFA_FILE": str(tmp_path / "f.json")})
    store = build_factor_store(settings, None)
    assert isinstance(store, FileFactorStore) and store._file.path == tmp_path / "f.json"
    assert isinstance(build_pending_logins(settings, None), MemoryPendingLogins)


def test_a_bad_sealing_key_file_stops_the_start(tmp_path: Path) -> None:
    key = tmp_path / "mfa.key"
    key.write_text("not a key")
    environ = {"EXTAUTHZ_MFA_SECRET_KEY_FILE": str(key),
               "EXTAUTHZ_JWT_KEYS_DIR": str(tmp_path / "keys")}
    generate_key(tmp_path / "keys", "ES256")
    with pytest.raises(SettingsError, match=r"mfa\.secret_key_file: .*expected 32 bytes"):
        build_components(load_settings(environ=environ))
    key.write_text(new_key())
    components = build_components(load_settings(environ=environ))
    assert components.factors is not None
