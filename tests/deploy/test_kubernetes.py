"""deploy/kubernetes/: every manifest the kustomization lists is valid for the Kubernetes API
(kubernetes-validate's offline schemas, strict: no unknown field), and says what
docs/deploy.md says it does. The settings in the ConfigMap are loaded with extauthz's own
loader, so a key the product does not know, or a bad value, fails here."""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped]
import pytest

from extauthz.server.grpc_server import AUTHORIZATION_SERVICE, LIVENESS_SERVICE
from extauthz.settings import Settings, StoreBackend, StoreStrategy, UserBackend, load_settings
from tests.deploy.manifests import (
    GATEWAY_LABEL,
    KUBERNETES,
    Doc,
    container,
    container_port,
    kubernetes_resources,
    kustomization,
    one,
    service_port,
)
from tests.support import REPO_ROOT

# the oldest Kubernetes with the preStop `sleep` action on by default, and the newest known
VERSIONS = ["1.30.0", kubernetes_validate.latest_version()]
SETTINGS_KEY = "extauthz.toml"
MIB = 1024 * 1024


def _resources() -> list[Doc]:
    return kubernetes_resources()


def _deployment() -> Doc:
    return one(_resources(), "Deployment", "extauthz")


def _pod_spec() -> Doc:
    spec: Doc = _deployment()["spec"]["template"]["spec"]
    return spec


def _pod_labels() -> dict[str, str]:
    labels: dict[str, str] = _deployment()["spec"]["template"]["metadata"]["labels"]
    return labels


def _settings(tmp_path: Path) -> Settings:
    """The ConfigMap's TOML, loaded as the container loads it: with the container's
    environment (a value from the downward API gets a pod name)."""
    configmap = one(_resources(), "ConfigMap", "extauthz-settings")
    path = tmp_path / SETTINGS_KEY
    path.write_text(configmap["data"][SETTINGS_KEY])
    environ = {
        e["name"]: e.get("value", "extauthz-5d9c7-abcde")
        for e in container(_deployment()).get("env", [])
    }
    return load_settings(path, environ=environ)


def _mounts() -> dict[str, Doc]:
    """Each volume name's mount in the container."""
    return {m["name"]: m for m in container(_deployment())["volumeMounts"]}


def _volume(name: str) -> Doc:
    (volume,) = [v for v in _pod_spec()["volumes"] if v["name"] == name]
    assert isinstance(volume, dict)
    return volume


def _secret_file(secret: str) -> PurePosixPath:
    """Where the container sees the single file of the Secret ``secret`` (its volume's mount
    path plus the item's path)."""
    (volume,) = [
        v for v in _pod_spec()["volumes"] if v.get("secret", {}).get("secretName") == secret
    ]
    (item,) = volume["secret"]["items"]
    mount_path: str = _mounts()[volume["name"]]["mountPath"]
    return PurePosixPath(mount_path, item["path"])


def _quantity(text: str) -> float:
    """A Kubernetes quantity (``250m``, ``2``, ``512Mi``) as a number (cores or bytes)."""
    units = {"m": 1e-3, "": 1, "Ki": 1024, "Mi": MIB, "Gi": 1024 * MIB}
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(m|Ki|Mi|Gi|)", str(text))
    assert match, f"not a quantity this test knows: {text!r}"
    return float(match[1]) * units[match[2]]


def test_the_kustomization_lists_every_manifest() -> None:
    listed = kustomization()["resources"]
    on_disk = sorted(p.name for p in KUBERNETES.glob("*.yaml") if p.name != "kustomization.yaml")
    assert sorted(listed) == on_disk
    assert {d["kind"] for d in _resources()} >= {
        "Deployment", "Service", "PodDisruptionBudget", "NetworkPolicy", "ConfigMap",
    }  # fmt: skip


@pytest.mark.parametrize("version", VERSIONS)
def test_every_manifest_is_valid_for_kubernetes(version: str) -> None:
    resources = _resources()
    for doc in resources:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            where = ".".join(str(p) for p in exc.path)
            pytest.fail(f"{doc['kind']}/{doc['metadata']['name']} at {where}: {exc.message}")
    assert len(resources) >= 7


def test_the_validator_refuses_an_unknown_field() -> None:
    """The check above can fail: a misspelt securityContext field is refused."""
    deployment = _deployment()
    container(deployment)["securityContext"]["readOnlyRootFileSystem"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, VERSIONS[-1], strict=True)


def test_the_settings_load_with_extauthz_own_loader(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    assert settings.store.strategy == StoreStrategy.CENTRAL
    assert settings.store.backend == StoreBackend.REDIS
    assert len(settings.store.sentinels) >= 3  # a Sentinel quorum, named by the user
    assert settings.store.wait_replicas_resolved == 1
    assert settings.session.cookie_secure
    assert settings.admin.enabled
    assert settings.node_id == "extauthz-5d9c7-abcde"  # the pod name, from the downward API
    # every replica sees the same users and OAuth clients
    assert settings.users.backend == UserBackend.FILE
    assert settings.oauth_clients_backend == UserBackend.REDIS
    deployment = _deployment()
    assert settings.server.grpc_listen == f"0.0.0.0:{container_port(deployment, 'grpc')}"
    assert settings.server.http_listen == f"0.0.0.0:{container_port(deployment, 'http')}"


def test_the_container_reads_the_configmap_it_mounts() -> None:
    command = container(_deployment())["command"]
    config = PurePosixPath(command[command.index("--config") + 1])
    volume = _volume("settings")
    assert volume["configMap"]["name"] == "extauthz-settings"
    assert config == PurePosixPath(_mounts()["settings"]["mountPath"]) / SETTINGS_KEY
    assert command[:4] == ["python", "-m", "extauthz", "serve"]


def test_the_signing_keys_secret_is_mounted_at_keys_dir(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    volume = _volume("signing-keys")
    assert volume["secret"]["secretName"] == "extauthz-signing-keys"
    assert "items" not in volume["secret"]  # every <kid>.pem of the Secret, as generated
    assert _mounts()["signing-keys"]["mountPath"] == settings.jwt.keys_dir
    assert PurePosixPath(settings.jwt.keys_dir).is_absolute()


def test_the_admin_token_and_users_come_from_secrets(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    assert _secret_file("extauthz-admin-token") == PurePosixPath(settings.admin.token_file)
    assert _secret_file("extauthz-users") == PurePosixPath(settings.users.file)
    assert _volume("users")["secret"]["optional"] is True  # no users file: nobody logs in
    assert "optional" not in _volume("admin-token")["secret"]  # serve refuses to start without


def test_the_image_is_set_by_the_kustomization() -> None:
    (image,) = kustomization()["images"]
    assert container(_deployment())["image"] == image["name"]
    assert image["newName"] and image["newTag"]


def test_two_replicas_with_grpc_probes_on_the_grpc_port() -> None:
    deployment = _deployment()
    assert deployment["spec"]["replicas"] == 2
    c = container(deployment)
    grpc_port = container_port(deployment, "grpc")
    services = {}
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert set(c[probe]) & {"httpGet", "tcpSocket", "exec", "grpc"} == {"grpc"}, probe
        assert c[probe]["grpc"]["port"] == grpc_port, probe
        services[probe] = c[probe]["grpc"]["service"]
    # readiness follows the store and shutdown; liveness only the process
    assert services == {
        "readinessProbe": AUTHORIZATION_SERVICE,
        "livenessProbe": LIVENESS_SERVICE,
        "startupProbe": LIVENESS_SERVICE,
    }


def test_the_pod_runs_unprivileged_on_a_read_only_root() -> None:
    pod = _pod_spec()
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["automountServiceAccountToken"] is False
    sc = container(_deployment())["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc.get("privileged", False) is False
    # the process writes nothing: every mount is read-only, no emptyDir
    assert all(m["readOnly"] is True for m in _mounts().values())
    assert not [v for v in pod["volumes"] if "emptyDir" in v]


def test_the_image_user_is_the_pods_user() -> None:
    """runAsNonRoot can only check a numeric USER; the pod runs as that very user."""
    users = re.findall(r"^USER\s+(\S+)", (REPO_ROOT / "Dockerfile").read_text(), re.M)
    assert users, "Dockerfile: no USER"
    uid, _, gid = users[-1].partition(":")
    pod = _pod_spec()["securityContext"]
    assert (int(uid), int(gid)) == (pod["runAsUser"], pod["runAsGroup"])


def test_termination_grace_covers_the_shutdown_bound(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    pause = container(_deployment())["lifecycle"]["preStop"]["sleep"]["seconds"]
    # README, 'Shutdown and draining': the process ends within shutdown_grace_seconds + 2 s
    bound = pause + settings.server.shutdown_grace_seconds + 2
    assert _pod_spec()["terminationGracePeriodSeconds"] > bound


def test_resources_fit_the_measured_figures(tmp_path: Path) -> None:
    """docs/benchmarks.md, 'Memory and CPU for resource requests': the memory limit holds
    the idle process (~75 MiB) plus users.max_concurrent_hashes argon2 hashes of 64 MiB."""
    settings = _settings(tmp_path)
    resources: dict[str, Any] = container(_deployment())["resources"]
    for kind in ("requests", "limits"):
        assert set(resources[kind]) == {"cpu", "memory"}, kind
    limit = _quantity(resources["limits"]["memory"])
    assert limit >= (75 + 64 * settings.users.max_concurrent_hashes) * MIB
    assert _quantity(resources["requests"]["memory"]) >= 75 * MIB
    assert _quantity(resources["requests"]["cpu"]) <= _quantity(resources["limits"]["cpu"])


def test_the_service_exposes_the_grpc_and_http_ports() -> None:
    service = one(_resources(), "Service", "extauthz")
    deployment = _deployment()
    assert service["spec"]["selector"].items() <= _pod_labels().items()
    by_name = {p["name"]: p for p in service["spec"]["ports"]}
    assert set(by_name) == {"grpc", "http"}
    for name, port in by_name.items():
        assert port["targetPort"] == name
        assert port["port"] == container_port(deployment, name)
    assert by_name["grpc"]["appProtocol"] == "grpc"


def test_the_disruption_budget_keeps_one_replica() -> None:
    pdb = one(_resources(), "PodDisruptionBudget")
    assert pdb["spec"]["minAvailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"].items() <= _pod_labels().items()


def test_only_the_gateway_reaches_both_ports() -> None:
    policy = one(_resources(), "NetworkPolicy")["spec"]
    deployment = _deployment()
    assert policy["podSelector"]["matchLabels"].items() <= _pod_labels().items()
    assert policy["policyTypes"] == ["Ingress"]
    (rule,) = policy["ingress"]
    # one peer: pods with the gateway label, in any namespace; no address blocks
    peer = {"namespaceSelector": {}, "podSelector": {"matchLabels": GATEWAY_LABEL}}
    assert rule["from"] == [peer]
    ports = {(p["protocol"], p["port"]) for p in rule["ports"]}
    assert ports == {
        ("TCP", container_port(deployment, "grpc")),
        ("TCP", container_port(deployment, "http")),
    }
    service = one(_resources(), "Service", "extauthz")
    assert {service_port(service, "grpc"), service_port(service, "http")} == {p for _, p in ports}


def test_the_docs_state_what_the_manifests_say() -> None:
    """docs/deploy.md and docs/benchmarks.md quote the resources, the gateway label and the
    liveness service; a change to the manifests must change them too."""
    deploy_md = (REPO_ROOT / "docs" / "deploy.md").read_text()
    benchmarks_md = (REPO_ROOT / "docs" / "benchmarks.md").read_text()
    resources = container(_deployment())["resources"]
    for kind in ("requests", "limits"):
        cpu = resources[kind]["cpu"]
        cpu = f'"{cpu}"' if cpu.isdigit() else cpu
        quoted = f"{kind}: {{cpu: {cpu}, memory: {resources[kind]['memory']}}}"
        assert quoted in deploy_md, quoted
        assert quoted in benchmarks_md.replace("\n", " "), quoted
    ((label, value),) = GATEWAY_LABEL.items()
    assert f'**`{label}: "{value}"`**' in deploy_md
    assert f"service **`{LIVENESS_SERVICE}`**" in deploy_md
