"""Reading the deployment manifests under ``deploy/`` for the tests: each YAML file's
documents, the resources a kustomization lists, and the pieces of the extauthz Deployment the
docs rely on. Only PyYAML: no cluster, no kubectl."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from tests.support import REPO_ROOT

DEPLOY = REPO_ROOT / "deploy"
KUBERNETES = DEPLOY / "kubernetes"
ISTIO = DEPLOY / "istio"
ENVOY_GATEWAY = DEPLOY / "envoy-gateway"

# the label that lets a gateway's pods through the NetworkPolicy (docs/deploy.md)
GATEWAY_LABEL = {"extauthz-gateway": "true"}

Doc = dict[str, Any]


def documents(path: Path) -> list[Doc]:
    """Every non-empty YAML document of ``path``; each must be a mapping."""
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    for d in docs:
        assert isinstance(d, dict), f"{path}: a document that is not a mapping"
    return docs


def kustomization() -> Doc:
    (doc,) = documents(KUBERNETES / "kustomization.yaml")
    return doc


def kubernetes_resources() -> list[Doc]:
    """The resources ``deploy/kubernetes/kustomization.yaml`` lists, in its order."""
    return [d for name in kustomization()["resources"] for d in documents(KUBERNETES / name)]


def one(docs: list[Doc], kind: str, name: str | None = None) -> Doc:
    """The single document of ``kind`` (and ``name``, when given) among ``docs``."""
    found = [
        d for d in docs
        if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)
    ]  # fmt: skip
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def mesh_documents(folder: Path) -> list[Doc]:
    return [d for path in sorted(folder.glob("*.yaml")) for d in documents(path)]


def container(deployment: Doc) -> Doc:
    (c,) = deployment["spec"]["template"]["spec"]["containers"]
    assert isinstance(c, dict)
    return c


def container_port(deployment: Doc, name: str) -> int:
    (port,) = [p["containerPort"] for p in container(deployment)["ports"] if p["name"] == name]
    assert isinstance(port, int)
    return port


def service_port(service: Doc, name: str) -> int:
    (port,) = [p["port"] for p in service["spec"]["ports"] if p["name"] == name]
    assert isinstance(port, int)
    return port
