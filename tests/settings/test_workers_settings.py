"""``server.workers``: a count or "auto", what "auto" means for each store, the one-line errors,
and the settings each worker runs with (extauthz.server.worker_wiring)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from extauthz.errors import SettingsError
from extauthz.server.worker_wiring import worker_settings
from extauthz.settings import load_settings
from extauthz.settings.validation import check_worker_ports

REDIS = {"EXTAUTHZ_STORE_BACKEND": "redis", "EXTAUTHZ_STORE_REDIS_URL": "redis://127.0.0.1:1/0"}
# gRPC ports with room after them (the defaults, 9001 and 9002, are neighbours)
PORTS = {
    "EXTAUTHZ_SERVER_GRPC_LISTEN": "127.0.0.1:9101",
    "EXTAUTHZ_SERVER_HTTP_LISTEN": "127.0.0.1:9002",
}


def _cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def test_auto_is_one_process_with_the_memory_store_and_every_cpu_with_redis() -> None:
    assert load_settings(environ={}).server.workers == "auto"
    assert load_settings(environ={}).worker_count == 1
    assert load_settings(environ={**REDIS, **PORTS}).worker_count == _cpus()


def test_a_count_from_the_file_or_the_environment(tmp_path: Path) -> None:
    path = tmp_path / "extauthz.toml"
    path.write_text('[server]\nworkers = 3\ngrpc_listen = "127.0.0.1:9101"\n')
    assert load_settings(path, environ=REDIS).worker_count == 3
    assert load_settings(path, environ={**REDIS, "EXTAUTHZ_SERVER_WORKERS": "5"}).worker_count == 5
    assert load_settings(path, environ={"EXTAUTHZ_SERVER_WORKERS": "auto"}).worker_count == 1


@pytest.mark.parametrize("value", ["0", "-1", "many", "AUTO", "2.5"])
def test_a_bad_count_is_a_one_line_error(value: str) -> None:
    with pytest.raises(SettingsError, match=r"^server\.workers: ") as info:
        load_settings(environ={**REDIS, **PORTS, "EXTAUTHZ_SERVER_WORKERS": value})
    assert "\n" not in str(info.value)


def test_a_boolean_in_the_file_is_not_a_count(tmp_path: Path) -> None:
    path = tmp_path / "extauthz.toml"
    path.write_text("[server]\nworkers = true\n")
    with pytest.raises(SettingsError, match=r"^server\.workers: "):
        load_settings(path, environ={})


def test_several_workers_need_a_shared_store() -> None:
    with pytest.raises(SettingsError, match=r"^server\.workers: 2 workers need store\.backend"):
        load_settings(environ={**PORTS, "EXTAUTHZ_SERVER_WORKERS": "2"})
    assert load_settings(environ={"EXTAUTHZ_SERVER_WORKERS": "1"}).worker_count == 1


def test_the_workers_grpc_ports_must_exist_and_miss_the_http_port() -> None:
    with pytest.raises(SettingsError, match=r"9001-9002 .*server\.http_listen's port 9002"):
        load_settings(environ={**REDIS, "EXTAUTHZ_SERVER_WORKERS": "2"})  # the default ports
    with pytest.raises(SettingsError, match=r"65535-65536.*past 65535"):
        load_settings(environ={
            **REDIS, "EXTAUTHZ_SERVER_WORKERS": "2",
            "EXTAUTHZ_SERVER_GRPC_LISTEN": "127.0.0.1:65535",
        })  # fmt: skip


def test_auto_ports_are_checked_when_serve_resolves_them() -> None:
    # "auto" depends on the machine: loading stays the same everywhere, serve checks
    settings = load_settings(environ=REDIS)
    if settings.worker_count > 1:
        with pytest.raises(SettingsError, match=r"^server\.workers: "):
            check_worker_ports(settings)
    check_worker_ports(load_settings(environ={**REDIS, **PORTS}))


def test_each_worker_has_its_own_grpc_port_and_node_id() -> None:
    settings = load_settings(environ={**REDIS, **PORTS, "EXTAUTHZ_SERVER_WORKERS": "3"})
    workers = [worker_settings(settings, "node-a", i) for i in range(3)]
    assert [w.server.grpc_listen for w in workers] == [
        "127.0.0.1:9101", "127.0.0.1:9102", "127.0.0.1:9103",
    ]  # fmt: skip
    assert [w.node_id for w in workers] == ["node-a-w0", "node-a-w1", "node-a-w2"]
    assert {w.server.http_listen for w in workers} == {"127.0.0.1:9002"}  # one shared socket
    assert all(w.worker_count == 1 for w in workers)
    assert workers[1].store == settings.store and workers[1].jwt == settings.jwt
