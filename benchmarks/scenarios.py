"""The benchmark's scenarios: their names, the JWT material of the ``jwt_authn`` one, and
``benchmarks/envoy-bench.yaml`` rewritten onto one run's ports."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from harness.ports import free_port
from harness.stack import set_port, write_config

BENCH_CONFIG = Path(__file__).resolve().parent / "envoy-bench.yaml"
# listener names in envoy-bench.yaml, in the order they run
SCENARIOS = (
    "direct",
    "jwt_authn",
    "ext_authz_noop",
    "ext_authz_nocache",
    "ext_authz",
    "ext_authz_all_headers",
    "ext_authz_proc",
    "ext_authz_update",
)
# listeners that are not scenarios: the origin of ext_authz_update (cluster bench_origin)
ORIGIN = "origin"
ORIGIN_CLUSTER = "bench_origin"
LABELS = {
    "direct": "Envoy, no auth (direct_response)",
    "jwt_authn": "Envoy jwt_authn, ES256 JWT",
    "ext_authz_noop": "ext_authz -> no-op Python Check",
    "ext_authz_nocache": "extauthz, session cache off (Redis)",
    "ext_authz": "extauthz, session cache on (default)",
    "ext_authz_all_headers": "extauthz, cache on, every header sent",
    "ext_authz_proc": "extauthz + session-update processor, no update",
    "ext_authz_update": "extauthz + a session update per response",
}
JWT_ISSUER = "https://bench.invalid"
JWT_AUDIENCE = "bench"


class BenchError(Exception):
    """A check failed: the benchmark would measure something other than it claims."""


# -- credentials ------------------------------------------------------------------------------


@dataclass(frozen=True)
class JwtMaterial:
    jwks: str  # the public JWKS, for Envoy's local_jwks
    token: str  # an ES256 JWT that Envoy must accept
    foreign_token: str  # same claims, signed by a key Envoy does not know: must be refused


def make_jwt_material() -> JwtMaterial:
    """A fresh ES256 key pair; its public JWKS and a JWT (1 hour) signed with it."""
    import jwt
    from cryptography.hazmat.primitives.asymmetric import ec
    from jwt.algorithms import ECAlgorithm

    from extauthz.keys.keyring import jwk_thumbprint

    key = ec.generate_private_key(ec.SECP256R1())
    jwk = ECAlgorithm.to_jwk(key.public_key(), as_dict=True)
    kid = jwk_thumbprint(jwk)
    jwk.update({"kid": kid, "alg": "ES256", "use": "sig"})
    now = int(time.time())
    claims = {"iss": JWT_ISSUER, "aud": JWT_AUDIENCE, "sub": "bench", "iat": now, "nbf": now,
              "exp": now + 3600}  # fmt: skip
    token = jwt.encode(claims, key, algorithm="ES256", headers={"kid": kid})
    other = ec.generate_private_key(ec.SECP256R1())
    foreign = jwt.encode(claims, other, algorithm="ES256", headers={"kid": kid})
    return JwtMaterial(json.dumps({"keys": [jwk]}, separators=(",", ":")), token, foreign)


# -- Envoy config -----------------------------------------------------------------------------


@dataclass(frozen=True)
class EnvoyPorts:
    admin: int
    listeners: dict[str, int]

    @classmethod
    def allocate(cls) -> EnvoyPorts:
        return cls(free_port(), {name: free_port() for name in (*SCENARIOS, ORIGIN)})


def render_bench_config(
    out_dir: Path,
    ports: EnvoyPorts,
    grpc_ports: dict[str, int],
    jwks: str,
    source: Path = BENCH_CONFIG,
) -> Path:
    """A copy of ``source`` with the given ports (``grpc_ports``: cluster name -> port; the
    origin cluster points at the origin listener) and JWKS; nothing else changes.

    :raises BenchError: the file no longer has the listeners, filter or cluster expected here.
    """
    doc = yaml.safe_load(source.read_text())
    set_port(doc["admin"]["address"]["socket_address"], ports.admin)
    listeners = {item["name"]: item for item in doc["static_resources"]["listeners"]}
    if set(listeners) != {*SCENARIOS, ORIGIN}:
        raise BenchError(f"{source}: expected listeners {SCENARIOS}, found {sorted(listeners)}")
    for name, port in ports.listeners.items():
        set_port(listeners[name]["address"]["socket_address"], port)
    jwt_filters = [
        f
        for chain in listeners["jwt_authn"]["filter_chains"]
        for hcm in chain["filters"]
        for f in hcm["typed_config"]["http_filters"]
        if f["name"] == "envoy.filters.http.jwt_authn"
    ]
    if len(jwt_filters) != 1:
        raise BenchError(f"{source}: the jwt_authn listener must have one jwt_authn filter")
    for provider in jwt_filters[0]["typed_config"]["providers"].values():
        provider["local_jwks"] = {"inline_string": jwks}
    clusters = doc["static_resources"]["clusters"]
    cluster_ports = {**grpc_ports, ORIGIN_CLUSTER: ports.listeners[ORIGIN]}
    if sorted(c["name"] for c in clusters) != sorted(cluster_ports):
        raise BenchError(f"{source}: expected the clusters {sorted(cluster_ports)}")
    for cluster in clusters:
        for locality in cluster["load_assignment"]["endpoints"]:
            for endpoint in locality["lb_endpoints"]:
                address = endpoint["endpoint"]["address"]["socket_address"]
                set_port(address, cluster_ports[cluster["name"]])
    return write_config(doc, out_dir / "envoy-bench.yaml")
