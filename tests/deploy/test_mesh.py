"""deploy/istio/ and deploy/envoy-gateway/: custom resources, which the Kubernetes schemas do
not know, so each field docs/deploy.md relies on is checked here, and every name and port is
checked against the Kubernetes Service of deploy/kubernetes/."""

from __future__ import annotations

from typing import Any

import yaml

from tests.deploy.manifests import (
    ENVOY_GATEWAY,
    ISTIO,
    Doc,
    kubernetes_resources,
    kustomization,
    mesh_documents,
    one,
    service_port,
)
from tests.support import FRONT_PROXY

# the fields of Istio's MeshConfig.ExtensionProvider.EnvoyExternalAuthorizationGrpcProvider
# (istio/api mesh/v1alpha1/config.proto): the header lists are the HTTP provider's only
ISTIO_GRPC_PROVIDER_FIELDS = {
    "service", "port", "timeout", "failOpen", "clearRouteCache", "statusOnError",
    "includeRequestBodyInCheck",
}  # fmt: skip
# Envoy Gateway's ExtAuth (api/v1alpha1/ext_auth_types.go, v1.8)
EG_EXT_AUTH_FIELDS = {
    "grpc", "http", "headersToExtAuth", "bodyToExtAuth", "timeout", "failOpen",
    "recomputeRoute", "contextExtensions", "statusOnError",
}  # fmt: skip
TIMEOUT = {"0.5s", "500ms"}  # the ext_authz timeout of envoy/*.yaml (server.ext_authz_timeout_ms)


def _service() -> Doc:
    return one(kubernetes_resources(), "Service", "extauthz")


def _namespace() -> str:
    namespace: str = kustomization()["namespace"]
    return namespace


def _service_host() -> str:
    return f"{_service()['metadata']['name']}.{_namespace()}.svc.cluster.local"


def _unchecked_prefixes() -> set[str]:
    """The path prefixes of envoy/front-proxy.yaml routed to extauthz's HTTP port with
    ext_authz disabled (the login service, the JWKS)."""
    config = yaml.safe_load(FRONT_PROXY.read_text())
    found: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            per_filter = node.get("typed_per_filter_config", {})
            unchecked = per_filter.get("envoy.filters.http.ext_authz", {}).get("disabled")
            if unchecked and node.get("route", {}).get("cluster") == "extauthz_http":
                found.add(node["match"]["prefix"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(config)
    return found


def _istio() -> list[Doc]:
    return mesh_documents(ISTIO)


def _istio_provider() -> Doc:
    mesh = one(_istio(), "IstioOperator")["spec"]["meshConfig"]
    (provider,) = mesh["extensionProviders"]
    assert isinstance(provider, dict)
    return provider


def test_the_front_proxy_leaves_login_and_jwks_unchecked() -> None:
    """What the mesh resources below must mirror (README: disabled per route)."""
    assert _unchecked_prefixes() >= {"/auth/", "/.well-known/"}


def test_istio_provider_points_at_the_grpc_port() -> None:
    provider = _istio_provider()
    assert set(provider) == {"name", "envoyExtAuthzGrpc"}
    grpc = provider["envoyExtAuthzGrpc"]
    assert set(grpc) <= ISTIO_GRPC_PROVIDER_FIELDS, set(grpc) - ISTIO_GRPC_PROVIDER_FIELDS
    assert grpc["service"] == _service_host()
    assert grpc["port"] == service_port(_service(), "grpc")
    # fail closed with 503: an unreachable extauthz is never an allow nor a logout
    assert grpc["failOpen"] is False
    assert grpc["statusOnError"] == "503"
    assert grpc["timeout"] in TIMEOUT
    # the CheckRequest carries every request header: nothing limits them
    assert "includeRequestBodyInCheck" not in grpc


def test_istio_normalises_paths_before_matching() -> None:
    mesh = one(_istio(), "IstioOperator")["spec"]["meshConfig"]
    normalization = mesh["pathNormalization"]["normalization"]
    assert normalization in {"MERGE_SLASHES", "DECODE_AND_MERGE_SLASHES"}


def test_istio_policy_checks_everything_but_login_and_jwks() -> None:
    policy = one(_istio(), "AuthorizationPolicy")
    spec = policy["spec"]
    assert policy["apiVersion"].startswith("security.istio.io/")
    assert spec["action"] == "CUSTOM"
    assert spec["provider"]["name"] == _istio_provider()["name"]
    assert spec["selector"]["matchLabels"]  # the gateway's pods, not the whole mesh
    (rule,) = spec["rules"]
    assert set(rule) == {"to"}  # no from/when: every source, every request
    (to,) = rule["to"]
    assert set(to["operation"]) == {"notPaths"}
    assert {p.removesuffix("*") for p in to["operation"]["notPaths"]} == _unchecked_prefixes()


def test_istio_routes_login_and_jwks_to_the_http_port() -> None:
    route = one(_istio(), "VirtualService")
    (http,) = route["spec"]["http"]
    assert {m["uri"]["prefix"] for m in http["match"]} == _unchecked_prefixes()
    (destination,) = http["route"]
    assert destination["destination"]["host"] == _service_host()
    assert destination["destination"]["port"]["number"] == service_port(_service(), "http")


def _eg() -> list[Doc]:
    return mesh_documents(ENVOY_GATEWAY)


def test_envoy_gateway_ext_auth_calls_the_grpc_port() -> None:
    policy = one(_eg(), "SecurityPolicy")
    assert policy["apiVersion"] == "gateway.envoyproxy.io/v1alpha1"
    ext = policy["spec"]["extAuth"]
    assert set(ext) <= EG_EXT_AUTH_FIELDS, set(ext) - EG_EXT_AUTH_FIELDS
    assert "http" not in ext
    (backend,) = ext["grpc"]["backendRefs"]
    assert (backend.get("group", ""), backend.get("kind", "Service")) == ("", "Service")
    assert backend["name"] == _service()["metadata"]["name"]
    assert backend["namespace"] == _namespace()
    assert backend["port"] == service_port(_service(), "grpc")
    # every request header goes to the Check (headersToExtAuth would limit them)
    assert "headersToExtAuth" not in ext
    assert ext["failOpen"] is False
    assert ext["statusOnError"] == 503
    assert ext["timeout"] in TIMEOUT
    check = ext["grpc"]["backendSettings"]["healthCheck"]["active"]
    assert (check["type"], check["grpc"]["service"]) == (
        "GRPC", "envoy.service.auth.v3.Authorization",
    )  # fmt: skip
    contexts = {c["name"]: c["value"] for c in ext["contextExtensions"]}
    assert contexts == {"client": "auto"}  # as envoy/front-proxy.yaml's catch-all route


def test_envoy_gateway_policy_targets_routes_not_the_gateway() -> None:
    """Attached to the Gateway it would check /auth/ and /.well-known/ too."""
    policy = one(_eg(), "SecurityPolicy")
    targets = policy["spec"]["targetRefs"]
    assert targets and all(t["kind"] == "HTTPRoute" for t in targets)
    public = one(_eg(), "HTTPRoute", "extauthz-public")
    assert all(t["name"] != public["metadata"]["name"] for t in targets)


def test_envoy_gateway_routes_login_and_jwks_to_the_http_port() -> None:
    route = one(_eg(), "HTTPRoute", "extauthz-public")
    (rule,) = route["spec"]["rules"]
    assert {(m["path"]["type"], m["path"]["value"]) for m in rule["matches"]} == {
        ("PathPrefix", p) for p in _unchecked_prefixes()
    }
    (backend,) = rule["backendRefs"]
    assert (backend["name"], backend["namespace"]) == (_service()["metadata"]["name"], _namespace())
    assert backend["port"] == service_port(_service(), "http")


def test_envoy_gateway_cross_namespace_references_are_granted() -> None:
    grant = one(_eg(), "ReferenceGrant")
    assert grant["metadata"]["namespace"] == _namespace()
    policy = one(_eg(), "SecurityPolicy")
    route = one(_eg(), "HTTPRoute", "extauthz-public")
    granted = {(f["group"], f["kind"], f["namespace"]) for f in grant["spec"]["from"]}
    assert granted == {
        ("gateway.envoyproxy.io", "SecurityPolicy", policy["metadata"]["namespace"]),
        ("gateway.networking.k8s.io", "HTTPRoute", route["metadata"]["namespace"]),
    }
    assert grant["spec"]["to"] == [
        {"group": "", "kind": "Service", "name": _service()["metadata"]["name"]}
    ]
