"""Regression tests from the break-it review of server.workers and HOST:PORT settings: a
count that would start tens of thousands of processes, and digits that ``str.isdigit()``
accepts but ``int()`` refuses (or reads from another script), are one-line settings errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from extauthz.envoy_config.model import Endpoint
from extauthz.errors import SettingsError
from extauthz.settings import load_settings

REDIS = {"EXTAUTHZ_STORE_BACKEND": "redis", "EXTAUTHZ_STORE_REDIS_URL": "redis://127.0.0.1:1/0"}
# the HTTP port below the gRPC port: nothing but a cap stops a huge count
LOW_HTTP = {
    "EXTAUTHZ_SERVER_GRPC_LISTEN": "127.0.0.1:2000",
    "EXTAUTHZ_SERVER_HTTP_LISTEN": "127.0.0.1:1000",
}


@pytest.mark.parametrize("count", ["257", "50000", "63000"])
def test_a_count_of_thousands_of_workers_is_refused(count: str) -> None:
    with pytest.raises(SettingsError, match=r"^server\.workers: at most 256, got ") as info:
        load_settings(environ={**REDIS, **LOW_HTTP, "EXTAUTHZ_SERVER_WORKERS": count})
    assert "\n" not in str(info.value)


def test_the_largest_count_still_loads() -> None:
    environ = {**REDIS, **LOW_HTTP, "EXTAUTHZ_SERVER_WORKERS": "256"}
    assert load_settings(environ=environ).worker_count == 256


NOT_ASCII_DIGITS = ["²", "١٢٣", "９００１"]  # superscript two, Arabic-Indic, fullwidth


@pytest.mark.parametrize("port", NOT_ASCII_DIGITS)
@pytest.mark.parametrize("variable", ["EXTAUTHZ_SERVER_GRPC_LISTEN", "EXTAUTHZ_SERVER_HTTP_LISTEN"])
def test_a_listen_port_of_other_digits_is_a_settings_error(variable: str, port: str) -> None:
    with pytest.raises(SettingsError, match=r"^server\.\w+_listen: expected HOST:PORT"):
        load_settings(environ={variable: f"127.0.0.1:{port}"})


@pytest.mark.parametrize("port", NOT_ASCII_DIGITS)
def test_a_cluster_node_port_of_other_digits_is_a_settings_error(port: str) -> None:
    environ = {
        **REDIS, "EXTAUTHZ_STORE_STRATEGY": "central",
        "EXTAUTHZ_STORE_CLUSTER_NODES": f"127.0.0.1:7000,127.0.0.1:{port}",
    }  # fmt: skip
    with pytest.raises(SettingsError, match=r"^store\.cluster_nodes: expected HOST:PORT"):
        load_settings(environ=environ)


@pytest.mark.parametrize("count", ["²", "١٢"])
def test_a_worker_count_of_other_digits_is_a_settings_error(count: str) -> None:
    with pytest.raises(SettingsError, match=r"^server\.workers: expected a count"):
        load_settings(environ={**REDIS, **LOW_HTTP, "EXTAUTHZ_SERVER_WORKERS": count})


@pytest.mark.parametrize("port", NOT_ASCII_DIGITS)
def test_an_envoy_endpoint_of_other_digits_is_a_settings_error(port: str) -> None:
    with pytest.raises(SettingsError, match="expected HOST:PORT"):
        Endpoint.parse(f"127.0.0.1:{port}")


def test_ipv6_listen_addresses_in_brackets_load() -> None:
    environ = {
        "EXTAUTHZ_SERVER_GRPC_LISTEN": "[::1]:9001",
        "EXTAUTHZ_SERVER_HTTP_LISTEN": "[::1]:9002",
    }
    settings = load_settings(environ=environ)
    assert settings.server.grpc_listen == "[::1]:9001"
    assert Endpoint.parse("[::1]:9001") == Endpoint("::1", 9001)


@pytest.mark.parametrize(
    "node", ["127.0.0.1:7000;10.0.0.2:7001", "redis 1:7000", "127.0.0.1:7000/0:7001", "[::1:7000"]
)
def test_a_cluster_node_that_is_not_one_host_is_a_settings_error(node: str) -> None:
    environ = {**REDIS, "EXTAUTHZ_STORE_STRATEGY": "central", "EXTAUTHZ_STORE_CLUSTER_NODES": node}
    with pytest.raises(SettingsError, match=r"^store\.cluster_nodes: expected HOST:PORT"):
        load_settings(environ=environ)


def test_two_nodes_in_one_string_of_the_file_are_a_settings_error(tmp_path: Path) -> None:
    path = tmp_path / "extauthz.toml"
    path.write_text(
        '[store]\nbackend = "redis"\nstrategy = "central"\n'
        'cluster_nodes = ["127.0.0.1:7000,127.0.0.1:7001"]\n'
    )
    with pytest.raises(SettingsError, match=r"^store\.cluster_nodes: expected HOST:PORT"):
        load_settings(path, environ={})


@pytest.mark.parametrize("node", ["[::1]:7000", "::1:7000", "redis-0.redis.ns.svc:7000"])
def test_cluster_node_hosts_that_load(node: str) -> None:
    environ = {**REDIS, "EXTAUTHZ_STORE_STRATEGY": "central", "EXTAUTHZ_STORE_CLUSTER_NODES": node}
    assert load_settings(environ=environ).store.cluster_nodes == (node,)
