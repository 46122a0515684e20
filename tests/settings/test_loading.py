"""Loading settings: defaults, TOML, EXTAUTHZ_* overrides, and one-line errors naming the key."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from extauthz.errors import SettingsError
from extauthz.settings import Settings, load_settings


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "settings.toml"
    path.write_text(text)
    return path


def error_of(tmp_path: Path, text: str = "", environ: dict[str, str] | None = None) -> str:
    path = write(tmp_path, text)
    with pytest.raises(SettingsError) as caught:
        load_settings(path, environ=environ or {})
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_defaults_without_file_or_environment() -> None:
    settings = load_settings(None, environ={})
    assert settings == Settings()
    assert settings.store.strategy == "sticky"
    assert settings.server.grpc_listen == "127.0.0.1:9001"


def test_file_values_and_environment_overrides(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '[store]\nbackend = "redis"\nstrategy = "central"\nredis_url = "redis://127.0.0.1:6390/0"\n'
        "timeout_seconds = 1\n[session]\ncookie_secure = false\n",
    )
    settings = load_settings(
        path,
        environ={
            "EXTAUTHZ_STORE_TIMEOUT_SECONDS": "2.5",
            "EXTAUTHZ_SESSION_COOKIE_SECURE": "yes",
            "EXTAUTHZ_SERVER_NODE_ID": "n1",
            "UNRELATED": "x",
        },
    )
    assert settings.store.strategy == "central"
    assert settings.store.timeout_seconds == 2.5
    assert settings.session.cookie_secure is True
    assert settings.node_id == "n1"


def test_node_id_defaults_to_host_and_pid() -> None:
    assert load_settings(None, environ={}).node_id.endswith(f"-{os.getpid()}")


@pytest.mark.parametrize(
    ("text", "environ", "key"),
    [
        ('[store]\nstrategy = "roundrobin"\n', {}, "store.strategy"),
        ('[store]\nbackend = "etcd"\n', {}, "store.backend"),
        ('[store]\nstrategy = "central"\n', {}, "store.backend"),  # memory is node-local
        ('[server]\ngrpc_listen = "9001"\n', {}, "server.grpc_listen"),
        ('[server]\ngrpc_listen = "127.0.0.1:99999"\n', {}, "server.grpc_listen"),
        ('[server]\ngrpc_listen = 9001\n', {}, "server.grpc_listen"),
        ("", {"EXTAUTHZ_SERVER_GRPC_LISTEN": "127.0.0.1:"}, "server.grpc_listen"),
        ("", {"EXTAUTHZ_STORE_TIMEOUT_SECONDS": "abc"}, "store.timeout_seconds"),
        ("", {"EXTAUTHZ_STORE_TIMEOUT_SECONDS": "0"}, "store.timeout_seconds"),
        ("", {"EXTAUTHZ_SESSION_COOKIE_SECURE": "maybe"}, "session.cookie_secure"),
        ('[session]\nidle_timeout_seconds = "30"\n', {}, "session.idle_timeout_seconds"),
        ("[session]\nidle_timeout_seconds = true\n", {}, "session.idle_timeout_seconds"),
        (
            "[session]\nidle_timeout_seconds = 600\nabsolute_timeout_seconds = 60\n",
            {},
            "session.absolute_timeout_seconds",
        ),
        ('[session]\ncookie_name = "bad name"\n', {}, "session.cookie_name"),
        (
            '[session]\ncookie_name = "__Host-s"\ncookie_domain = "a.test"\n',
            {},
            "session.cookie_domain",
        ),
        ("[jwt]\nlifetime_seconds = 1\n", {}, "jwt.lifetime_seconds"),
        ('[jwt]\nheader = "X-JWT"\n', {}, "jwt.header"),
        ('[deny]\nrealm = "a\\"b"\n', {}, "deny.realm"),
        (
            '[store]\nbackend = "redis"\nstrategy = "central"\nredis_url = "http://x"\n',
            {},
            "store.redis_url",
        ),
        ("[store]\nstrategyy = \"sticky\"\n", {}, "store.strategyy"),
        ('[store]\nsession_index = "subject"\n', {}, "store.session_index"),
        ('[stores]\nstrategy = "sticky"\n', {}, "stores"),
        ('store = "sticky"\n', {}, "store"),
    ],
)
def test_bad_value_names_the_key(
    tmp_path: Path, text: str, environ: dict[str, str], key: str
) -> None:
    message = error_of(tmp_path, text, environ)
    assert message.startswith(f"{key}:") or message.startswith(f"{key} "), message


def test_unknown_key_and_table_say_so(tmp_path: Path) -> None:
    assert error_of(tmp_path, "[store]\nbogus = 1\n") == "store.bogus: unknown key"
    assert error_of(tmp_path, "[bogus]\n") == "bogus: unknown settings table"


def test_unreadable_and_invalid_files(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="settings file .*missing.toml"):
        load_settings(tmp_path / "missing.toml", environ={})
    message = error_of(tmp_path, "[store\n")
    assert message.startswith("settings file ") and "not valid TOML" in message


def _serve(tmp_path: Path, text: str, **env: str) -> subprocess.CompletedProcess[str]:
    config = write(tmp_path, text)
    clean = {k: v for k, v in os.environ.items() if not k.startswith("EXTAUTHZ_")}
    return subprocess.run(
        [sys.executable, "-m", "extauthz", "serve", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
        env={**clean, **env},
        cwd=tmp_path,
        check=False,
    )


@pytest.mark.parametrize(
    ("text", "env", "key"),
    [
        ('[store]\nstrategy = "bogus"\n', {}, "store.strategy"),
        ('[server]\ngrpc_listen = "nowhere"\n', {}, "server.grpc_listen"),
        ("", {"EXTAUTHZ_STORE_TIMEOUT_SECONDS": "abc"}, "store.timeout_seconds"),
    ],
)
@pytest.mark.e2e
def test_serve_with_a_bad_config_exits_non_zero_with_one_line(
    tmp_path: Path, text: str, env: dict[str, str], key: str
) -> None:
    result = _serve(tmp_path, text, **env)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"extauthz: {key}:"), lines[0]
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


@pytest.mark.parametrize("text", ["nan", "inf", "-inf", "NaN"])
def test_non_finite_numbers_are_refused(text: str) -> None:
    with pytest.raises(SettingsError, match=r"^store\.timeout_seconds: expected a finite number"):
        load_settings(environ={"EXTAUTHZ_STORE_TIMEOUT_SECONDS": text})


def test_non_finite_numbers_in_toml_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text("[server]\nshutdown_grace_seconds = inf\n")
    with pytest.raises(SettingsError, match=r"^server\.shutdown_grace_seconds: expected a finite"):
        load_settings(path, environ={})
