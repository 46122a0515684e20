"""The settings objects: closed sets are enums, derived values are computed once when built."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from extauthz.errors import SettingsError
from extauthz.settings import (
    ServerSettings,
    Settings,
    StoreBackend,
    StoreSettings,
    StoreStrategy,
    UserBackend,
    load_settings,
)
from extauthz.settings.model import is_loopback

REDIS = {"EXTAUTHZ_STORE_BACKEND": "redis", "EXTAUTHZ_STORE_REDIS_URL": "redis://127.0.0.1:1/0"}
SENTINELS = "127.0.0.1:26001,127.0.0.1:26002,127.0.0.1:26003"


def test_the_names_on_the_wire_do_not_change() -> None:
    # registry records, metrics labels and dynamic metadata carry these values: nodes of two
    # versions must agree on them
    assert [s.value for s in StoreStrategy] == ["central", "sticky", "replicated"]
    assert [b.value for b in StoreBackend] == ["memory", "redis"]
    assert [b.value for b in UserBackend] == ["file", "redis"]


def test_loaded_values_are_members_that_still_read_as_strings() -> None:
    settings = load_settings(None, {**REDIS, "EXTAUTHZ_STORE_STRATEGY": "central"})
    assert settings.store.strategy is StoreStrategy.CENTRAL
    assert settings.store.backend is StoreBackend.REDIS
    assert settings.users.backend is UserBackend.FILE
    as_text: str = settings.store.strategy  # a str: compares and formats as its value
    assert as_text == "central" and f"{as_text}" == "central" and str(as_text) == "central"
    assert Settings().store.strategy is StoreStrategy.STICKY


def test_toml_values_become_members(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text('[store]\nstrategy = "central"\nbackend = "redis"\n[users]\nbackend = "redis"')
    settings = load_settings(path, environ={})
    assert settings.store.strategy is StoreStrategy.CENTRAL
    assert settings.users.backend is UserBackend.REDIS


@pytest.mark.parametrize(
    ("text", "environ", "message"),
    [
        ('[store]\nstrategy = "roundrobin"\n', {},
         "store.strategy: expected one of central, sticky, replicated, got 'roundrobin'"),
        ("[store]\nstrategy = 1\n", {},
         "store.strategy: expected one of central, sticky, replicated, got 1"),
        ("", {"EXTAUTHZ_STORE_STRATEGY": "Central"},
         "store.strategy: expected one of central, sticky, replicated, got 'Central'"),
        ("", {"EXTAUTHZ_STORE_BACKEND": "etcd"},
         "store.backend: expected one of memory, redis, got 'etcd'"),
        ('[users]\nbackend = ["file"]\n', {},
         "users.backend: expected one of file, redis, got ['file']"),
    ],
)  # fmt: skip
def test_a_value_outside_the_set_names_the_key_and_the_set(
    tmp_path: Path, text: str, environ: dict[str, str], message: str
) -> None:
    path = tmp_path / "s.toml"
    path.write_text(text)
    with pytest.raises(SettingsError) as refused:
        load_settings(path, environ)
    assert str(refused.value) == message


@pytest.mark.parametrize(
    ("environ", "resolved"),
    [
        ({"EXTAUTHZ_STORE_STRATEGY": "sticky"}, 0),
        ({"EXTAUTHZ_STORE_STRATEGY": "central"}, 0),
        ({"EXTAUTHZ_STORE_STRATEGY": "central", "EXTAUTHZ_STORE_SENTINELS": SENTINELS}, 1),
        ({"EXTAUTHZ_STORE_STRATEGY": "central", "EXTAUTHZ_STORE_SENTINELS": SENTINELS,
          "EXTAUTHZ_STORE_WAIT_REPLICAS": "2"}, 2),
        ({"EXTAUTHZ_STORE_STRATEGY": "central", "EXTAUTHZ_STORE_SENTINELS": SENTINELS,
          "EXTAUTHZ_STORE_WAIT_REPLICAS": "0"}, 0),
        ({"EXTAUTHZ_STORE_STRATEGY": "central", "EXTAUTHZ_STORE_WAIT_REPLICAS": "all"}, "all"),
        ({"EXTAUTHZ_STORE_STRATEGY": "replicated", "EXTAUTHZ_STORE_REPLICA_URL": "redis://r:1/0"},
         "all"),
        ({"EXTAUTHZ_STORE_STRATEGY": "replicated", "EXTAUTHZ_STORE_REPLICA_URL": "redis://r:1/0",
          "EXTAUTHZ_STORE_WAIT_REPLICAS": "1"}, 1),
    ],
)  # fmt: skip
def test_wait_replicas_is_resolved_when_loaded(environ: dict[str, str], resolved: object) -> None:
    store = load_settings(None, {**REDIS, **environ}).store
    assert store.wait_replicas_resolved == resolved
    assert store.wait_replicas_resolved != "auto"


def test_wait_replicas_is_resolved_again_when_a_copy_changes_the_strategy() -> None:
    sticky = StoreSettings(backend=StoreBackend.REDIS, sentinels=("127.0.0.1:26001",))
    assert sticky.wait_replicas_resolved == 0
    central = dataclasses.replace(sticky, strategy=StoreStrategy.CENTRAL)
    assert central.wait_replicas_resolved == 1


@pytest.mark.parametrize(
    ("listen", "loopback"),
    [
        ("127.0.0.1:9001", True),
        ("127.8.9.10:9001", True),
        ("[::1]:9001", True),
        ("localhost:9001", True),
        ("0.0.0.0:9001", False),
        ("[::]:9001", False),
        ("10.0.0.1:9001", False),
        ("example.com:9001", False),
        ("localhost.example.com:9001", False),
    ],
)
def test_listen_addresses_are_tested_for_loopback_once(listen: str, loopback: bool) -> None:
    loaded = load_settings(None, {"EXTAUTHZ_SERVER_HTTP_LISTEN": listen}).server
    assert loaded.http_listen_is_loopback is loopback
    assert is_loopback(listen) is loopback
    http = ServerSettings(grpc_listen="0.0.0.0:9001", http_listen=listen)
    assert http.http_listen_is_loopback is loopback


def test_derived_values_are_not_settings_keys(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text("[store]\nwait_replicas_resolved = 3\n")
    with pytest.raises(SettingsError, match=r"^store\.wait_replicas_resolved: unknown key$"):
        load_settings(path, environ={})
    ignored = load_settings(None, {"EXTAUTHZ_SERVER_HTTP_LISTEN_IS_LOOPBACK": "false"})
    assert ignored.server.http_listen_is_loopback is True
