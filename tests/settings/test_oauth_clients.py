"""The ``[oauth_clients]`` table: where OAuth clients live, following ``[users]`` by default,
and the store the composition root builds from it."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis.asyncio

from extauthz.errors import SettingsError
from extauthz.oauth.clients import FileClientStore
from extauthz.server.store_wiring import build_client_store
from extauthz.settings import ClientBackend, UserBackend, load_settings
from extauthz.store.redis.oauth_clients import RedisClientStore

REDIS = {"EXTAUTHZ_STORE_BACKEND": "redis", "EXTAUTHZ_STORE_STRATEGY": "central"}


def test_default_follows_the_users_backend() -> None:
    s = load_settings(environ={})
    assert s.oauth_clients.backend is ClientBackend.USERS
    assert s.oauth_clients_backend is UserBackend.FILE
    assert s.oauth_clients.file == "oauth_clients.json"
    s = load_settings(environ={**REDIS, "EXTAUTHZ_USERS_BACKEND": "redis"})
    assert s.oauth_clients_backend is UserBackend.REDIS


def test_toml_table_and_environment(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text('[oauth_clients]\nbackend = "file"\nfile = "/etc/extauthz/clients.json"\n')
    s = load_settings(path, environ={**REDIS, "EXTAUTHZ_USERS_BACKEND": "redis"})
    assert s.oauth_clients_backend is UserBackend.FILE  # its own choice beats users'
    assert s.oauth_clients.file == "/etc/extauthz/clients.json"
    s = load_settings(path, environ={**REDIS, "EXTAUTHZ_OAUTH_CLIENTS_BACKEND": "redis"})
    assert s.oauth_clients_backend is UserBackend.REDIS


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"EXTAUTHZ_OAUTH_CLIENTS_BACKEND": "redis"}, "oauth_clients.backend: redis needs"),
        ({"EXTAUTHZ_OAUTH_CLIENTS_BACKEND": "ldap"},
         "oauth_clients.backend: expected one of users, file, redis"),
        ({"EXTAUTHZ_OAUTH_CLIENTS_FILE": ""}, "oauth_clients.file: must not be empty"),
    ],
)  # fmt: skip
def test_bad_values_name_the_key(environ: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        load_settings(environ=environ)


def test_the_wiring_builds_the_configured_store(tmp_path: Path) -> None:
    file = str(tmp_path / "c.json")
    s = load_settings(environ={"EXTAUTHZ_OAUTH_CLIENTS_FILE": file})
    store = build_client_store(s, None)
    assert isinstance(store, FileClientStore) and store.path == Path(file)
    s = load_settings(environ={**REDIS, "EXTAUTHZ_OAUTH_CLIENTS_BACKEND": "redis",
                               "EXTAUTHZ_STORE_KEY_PREFIX": "k:"})  # fmt: skip
    client = redis.asyncio.Redis()  # not connected: building does no I/O
    redis_store = build_client_store(s, client)
    assert isinstance(redis_store, RedisClientStore) and redis_store.key == "k:oauth_clients"
    with pytest.raises(ValueError, match="needs the session store's Redis"):
        build_client_store(s, None)
