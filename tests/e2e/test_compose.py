"""docker-compose.yml: it parses, states its images, names only files that exist, has the
production shape of the central strategy, and the Envoy config it renders from
envoy/front-proxy.yaml passes ``envoy --mode validate``. No Docker engine runs here, so the
file itself is never started by the tests."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support import REPO_ROOT, validate_envoy_config

COMPOSE = REPO_ROOT / "docker-compose.yml"
# the Dockerfile copies the repository's files under /app
APP_PATH = re.compile(r"/app/([\w./-]+)")


def _compose() -> dict[str, Any]:
    compose: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return compose


def _services() -> dict[str, dict[str, Any]]:
    services: dict[str, dict[str, Any]] = _compose()["services"]
    return services


def _words(service: dict[str, Any]) -> list[str]:
    command = service.get("command", [])
    return command if isinstance(command, list) else [command]


def test_every_service_states_its_image() -> None:
    for name, service in _services().items():
        assert service.get("image"), f"{name}: no image"
        image = service["image"]
        assert ":" in image and not image.endswith(":latest"), f"{name}: pin a tag: {image}"


def test_builds_and_bind_mounts_name_existing_files() -> None:
    named_volumes = set(_compose().get("volumes", {}))
    for name, service in _services().items():
        build = service.get("build")
        if build:
            context = REPO_ROOT / build["context"]
            assert (context / build.get("dockerfile", "Dockerfile")).is_file(), name
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source in named_volumes:
                continue
            assert (REPO_ROOT / source).exists(), f"{name}: mounts missing {source}"


def test_repository_files_in_commands_exist() -> None:
    named = 0
    for name, service in _services().items():
        for word in _words(service):
            for rel in APP_PATH.findall(str(word)):
                named += 1
                assert (REPO_ROOT / rel).exists(), f"{name}: names missing /app/{rel}"
    assert named >= 4  # the settings, the echo upstream, the route table of the front proxy


def test_production_shaped_central_topology() -> None:
    services = _services()
    extauthz = [s for s in services if s.startswith("extauthz-")]
    assert len(extauthz) == 2
    for name in extauthz:
        env = services[name]["environment"]
        assert env["EXTAUTHZ_STORE_STRATEGY"] == "central"
        assert len(env["EXTAUTHZ_STORE_SENTINELS"].split(",")) == 3
        assert "/app/demo/extauthz.toml" in _words(services[name])
    assert len({s for s in services if s.startswith("sentinel-")}) == 3
    replicas = [s for s in services if s.startswith("redis-replica-")]
    assert len(replicas) == 2
    for name in replicas:
        assert "--replicaof" in _words(services[name])
    assert "redis-primary" in services and "echo" in services
    assert services["envoy"]["image"].startswith("envoyproxy/envoy:")


@pytest.mark.parametrize("service", ["extauthz-1", "extauthz-2"])
def test_extauthz_settings_load_as_compose_gives_them(service: str) -> None:
    """The settings file plus the service's environment pass start-up validation: a compose
    file whose extauthz containers would refuse to start is caught here, without Docker."""
    from extauthz.server.app import _admin_guard
    from extauthz.settings import load_settings

    env = {k: str(v) for k, v in _services()[service]["environment"].items()}
    words = _words(_services()[service])
    in_app = APP_PATH.match(words[words.index("--config") + 1])
    assert in_app is not None, words
    config = REPO_ROOT / in_app.group(1)
    settings = load_settings(config, environ=env)
    assert settings.store.strategy == "central"
    assert settings.session.cookie_secure is True
    assert settings.server.grpc_listen == "0.0.0.0:9001"
    _admin_guard(settings)  # the admin API's start-up rule: a token, or disabled


@pytest.mark.e2e
def test_rendered_front_proxy_validates(envoy_binary: str, tmp_path: Path) -> None:
    command = _words(_services()["envoy-config"])
    assert command[:5] == ["python", "-m", "extauthz", "envoy-config", "front"], command
    args = [w.replace("/app/", f"{REPO_ROOT}/") for w in command[1:]]
    out = tmp_path / "front-proxy.yaml"
    args[args.index("--out") + 1] = str(out)
    subprocess.run([sys.executable, *args], check=True, capture_output=True, timeout=60)
    result = validate_envoy_config(envoy_binary, out)
    assert result.returncode == 0, result.stderr
    doc = yaml.safe_load(out.read_text())
    (grpc,) = [c for c in doc["static_resources"]["clusters"] if c["name"] == "extauthz_grpc"]
    assert grpc["type"] == "STRICT_DNS"
    hosts = [e["endpoint"]["address"]["socket_address"]["address"]
             for e in grpc["load_assignment"]["endpoints"][0]["lb_endpoints"]]  # fmt: skip
    assert hosts == ["extauthz-1", "extauthz-2"]
    # everything but addresses is the file the tests run
    front = yaml.safe_load((REPO_ROOT / "envoy" / "front-proxy.yaml").read_text())
    assert _without_addresses(doc) == _without_addresses(front)


def _without_addresses(doc: dict[str, Any]) -> Any:
    addressing = ("socket_address", "load_assignment", "type", "dns_lookup_family")

    def strip(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: strip(v) for k, v in node.items() if k not in addressing}
        if isinstance(node, list):
            return [strip(v) for v in node]
        return node

    return strip(doc)


@pytest.mark.e2e
@pytest.mark.parametrize("service", ["keys-init"])
def test_key_init_checks_for_the_files_keys_generate_writes(service: str, tmp_path: Path) -> None:
    from tests.support import extauthz_cli

    extauthz_cli("keys", "generate", "--dir", str(tmp_path))
    assert list(tmp_path.glob("*.pem")), "keys generate no longer writes *.pem"
    assert "/keys/*.pem" in " ".join(_words(_services()[service]))
