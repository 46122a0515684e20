"""Every ext_authz and ext_proc filter Envoy may run fails closed, every ext_proc sits behind
an ``x-extauthz-*`` backstop, and every cluster toward extauthz keeps the gRPC keepalive
contract.

"Every" means: each ``envoy.filters.http.ext_authz`` (and ``ext_proc``) filter, wherever it
sits (any listener, any filter chain), in every config the repository ships (``envoy/*.yaml``,
``benchmarks/envoy-bench.yaml``) and every config it generates or renders (``extauthz
envoy-config`` as the tests and the demo run it for the front proxy, the sidecar and the sticky
front, and as docker-compose runs it with host names; the benchmark's ``render_bench_config``).
Structural only: no process is started.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from benchmarks.scenarios import EnvoyPorts, render_bench_config
from extauthz.cli import main as extauthz_main
from extauthz.server.grpc_server import MIN_PING_INTERVAL_MS, SERVER_OPTIONS
from tests.support import (
    DEMO_SETTINGS,
    FRONT_PROXY,
    REPO_ROOT,
    ROUTES,
    SIDECAR,
    StackPorts,
    generate_envoy_config,
)
from tests.support.sticky import generate_sticky_front

EXT_AUTHZ_TYPE = "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz"
EXT_PROC_TYPE = "type.googleapis.com/envoy.extensions.filters.http.ext_proc.v3.ExternalProcessor"
HEADER_MUTATION_TYPE = (
    "type.googleapis.com/envoy.extensions.filters.http.header_mutation.v3.HeaderMutation"
)
SHIPPED = [
    *sorted((REPO_ROOT / "envoy").glob("*.yaml")),
    REPO_ROOT / "benchmarks" / "envoy-bench.yaml",
]
# the longest an authz call may take before Envoy answers status_on_error
MAX_TIMEOUT_SECONDS = 1.0


def _compose_front(out: Path) -> Path:
    """The front proxy as docker-compose.yml generates it: host names, two extauthz nodes."""
    path = out / "compose-front-proxy.yaml"
    argv = [
        "envoy-config", "front", "--config", str(DEMO_SETTINGS), "--routes", str(ROUTES["front"]),
        "--listen", "0.0.0.0:8080", "--admin", "0.0.0.0:9901",
        "--extauthz-grpc", "extauthz-1:9001,extauthz-2:9001", "--extauthz-http", "extauthz-1:9002",
        "--upstream", "echo:9003", "--out", str(path),
    ]  # fmt: skip
    assert extauthz_main(argv) == 0
    return path


def _load(path: Path) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(path.read_text())
    return doc


def rendered_configs(out: Path) -> dict[str, dict[str, Any]]:
    """Every config the repository renders, by a name for the test ids."""
    ports = StackPorts.allocate()
    grpc_ports = {"extauthz_grpc": 50051, "noop_authz_grpc": 50052, "extauthz_nocache_grpc": 50053}
    return {
        "stack front-proxy": _load(generate_envoy_config(ports, out, "front")),
        "stack sidecar": _load(generate_envoy_config(ports, out, "sidecar")),
        "sticky front": _load(generate_sticky_front(18080, 19901, [18081, 18082, 18083], out)),
        "compose front-proxy": _load(_compose_front(out)),
        "bench rendered": _load(
            render_bench_config(out, EnvoyPorts.allocate(), grpc_ports, '{"keys": []}')
        ),
    }


def _walk(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for item in node:
            yield from _walk(item)


def ext_authz_filters(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """The typed_config of every ext_authz HTTP filter anywhere in ``doc``."""
    return [node for node in _walk(doc) if node.get("@type") == EXT_AUTHZ_TYPE]


def _seconds(duration: object) -> float | None:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)s", str(duration))
    return float(match.group(1)) if match else None


EXT_AUTHZ_PER_ROUTE_TYPE = (
    "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute"
)
# the only routes that may skip the Check: login, the JWKS and the health checks
UNCHECKED_ROUTES = [
    {"prefix": "/auth/"},
    {"prefix": "/.well-known/"},
    {"path": "/healthz"},
    {"path": "/health/direct"},
]


def _skips_the_check(owner: dict[str, Any]) -> bool:
    """Whether a route or virtual host turns ext_authz off (``ExtAuthzPerRoute.disabled``)."""
    per_filter = owner.get("typed_per_filter_config", {})
    return any(
        isinstance(c, dict) and c.get("@type") == EXT_AUTHZ_PER_ROUTE_TYPE and c.get("disabled")
        for c in per_filter.values()
    )


def bypass_problems(doc: dict[str, Any]) -> list[str]:
    """Ways a request could reach the upstream without a Check at all: the filter turned off
    in the filter chain (``HttpFilter.disabled``), by a runtime fraction that lets requests
    through (``filter_enabled`` / ``filter_enabled_metadata`` without ``deny_at_disable``),
    or for a route or virtual host other than :data:`UNCHECKED_ROUTES`."""
    problems = []
    for node in _walk(doc):
        typed = node.get("typed_config")
        if isinstance(typed, dict) and typed.get("@type") == EXT_AUTHZ_TYPE:
            if node.get("disabled"):
                problems.append(f"filter {node.get('name')}: disabled in the filter chain")
            enabled_by = [k for k in ("filter_enabled", "filter_enabled_metadata") if k in typed]
            deny = typed.get("deny_at_disable", {})
            if enabled_by and not (isinstance(deny, dict) and deny.get("default_value")):
                problems.append(f"filter {node.get('name')}: {enabled_by[0]} lets requests by")
        if "domains" in node and _skips_the_check(node):
            problems.append(f"virtual host {node.get('name')}: ext_authz disabled for all routes")
        if "match" in node and _skips_the_check(node):
            match = {k: v for k, v in node["match"].items() if k in ("prefix", "path")}
            if match not in UNCHECKED_ROUTES or len(node["match"]) != len(match):
                problems.append(f"route {node['match']}: ext_authz disabled")
    return problems


def fail_open_problems(doc: dict[str, Any]) -> list[str]:
    """Why an ext_authz filter of ``doc`` could let a request through, or answer anything but
    503, when extauthz cannot answer (empty: every filter fails closed), and every way around
    the filter (:func:`bypass_problems`)."""
    problems = bypass_problems(doc)
    for i, typed in enumerate(ext_authz_filters(doc)):
        if typed.get("failure_mode_allow") is not False:
            problems.append(f"filter {i}: failure_mode_allow is not an explicit false")
        if typed.get("status_on_error", {}).get("code") not in ("ServiceUnavailable", 503):
            problems.append(f"filter {i}: status_on_error is not 503")
        timeout = _seconds(typed.get("grpc_service", {}).get("timeout"))
        if timeout is None or not 0 < timeout <= MAX_TIMEOUT_SECONDS:
            problems.append(f"filter {i}: no grpc_service.timeout of at most 1 s")
        if "envoy_grpc" not in typed.get("grpc_service", {}):
            problems.append(f"filter {i}: not a gRPC service through an Envoy cluster")
        if typed.get("transport_api_version") != "V3":
            problems.append(f"filter {i}: transport_api_version is not V3")
    return problems


def ext_proc_filters(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """The typed_config of every ext_proc HTTP filter anywhere in ``doc`` (wrapped or not)."""
    return [node for node in _walk(doc) if node.get("@type") == EXT_PROC_TYPE]


def ext_proc_problems(doc: dict[str, Any]) -> list[str]:
    """Why an ext_proc filter of ``doc`` could pass a response on, or answer anything but 503,
    when extauthz cannot process it; or why an update header could leave through a filter
    chain with ext_proc (empty: none)."""
    problems = []
    for i, typed in enumerate(ext_proc_filters(doc)):
        if typed.get("failure_mode_allow") is not False:
            problems.append(f"ext_proc {i}: failure_mode_allow is not an explicit false")
        if typed.get("status_on_error", {}).get("code") not in ("ServiceUnavailable", 503):
            problems.append(f"ext_proc {i}: status_on_error is not 503")
        timeout = _seconds(typed.get("message_timeout"))
        if timeout is None or not 0 < timeout <= MAX_TIMEOUT_SECONDS:
            problems.append(f"ext_proc {i}: no message_timeout of at most 1 s")
        if "envoy_grpc" not in typed.get("grpc_service", {}):
            problems.append(f"ext_proc {i}: not a gRPC service through an Envoy cluster")
    for chain in (n for n in _walk(doc) if "http_filters" in n):
        filters = chain["http_filters"]
        with_proc = [i for i, f in enumerate(filters) if ext_proc_filters(f)]
        backstops = [i for i, f in enumerate(filters) if _is_backstop(f)]
        if with_proc and not (backstops and backstops[0] < with_proc[0]):
            problems.append("ext_proc without an x-extauthz-* backstop before it in the list")
        # ext_proc after ext_authz in the list: on the response path it runs first, so it
        # never sees (and never drops) the Set-Cookie that ext_authz adds to an allowed request
        authz = [i for i, f in enumerate(filters) if ext_authz_filters(f)]
        if with_proc and authz and not authz[-1] < with_proc[0]:
            problems.append("ext_proc before ext_authz in the list")
    return problems


def _is_backstop(http_filter: dict[str, Any]) -> bool:
    typed = http_filter.get("typed_config", {})
    if typed.get("@type") != HEADER_MUTATION_TYPE:
        return False
    removals = typed.get("mutations", {}).get("response_mutations", [])
    return {"key_matcher": {"prefix": "x-extauthz-"}} in [
        m.get("remove_on_match") for m in removals
    ]


def authz_clusters(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """The clusters the ext_authz filters of ``doc`` call."""
    names = {t["grpc_service"]["envoy_grpc"]["cluster_name"] for t in ext_authz_filters(doc)}
    clusters: list[dict[str, Any]] = doc["static_resources"]["clusters"]
    return [c for c in clusters if c["name"] in names]


def keepalive_problems(doc: dict[str, Any]) -> list[str]:
    """Clusters toward extauthz without HTTP/2 keepalive, or pinging more often than the
    server accepts (``MIN_PING_INTERVAL_MS``)."""
    problems = []
    for cluster in authz_clusters(doc):
        h2 = [n["http2_protocol_options"] for n in _walk(cluster) if "http2_protocol_options" in n]
        keepalive = h2[0].get("connection_keepalive") if len(h2) == 1 else None
        if not keepalive:
            problems.append(f"{cluster['name']}: no http2_protocol_options.connection_keepalive")
            continue
        interval = _seconds(keepalive.get("interval"))
        if interval is None or interval * 1000 < MIN_PING_INTERVAL_MS:
            problems.append(
                f"{cluster['name']}: keepalive interval {keepalive.get('interval')} is shorter "
                f"than the server's {MIN_PING_INTERVAL_MS} ms"
            )
        if _seconds(keepalive.get("timeout")) is None:
            problems.append(f"{cluster['name']}: keepalive without a timeout")
    return problems


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    return rendered_configs(tmp_path_factory.mktemp("rendered"))


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_every_shipped_ext_authz_filter_fails_closed(path: Path) -> None:
    doc = _load(path)
    assert fail_open_problems(doc) == []
    if path.name != "sticky-front.yaml":  # it only pins users to nodes, whose sidecars authorise
        assert ext_authz_filters(doc), f"{path.name}: no ext_authz filter found"


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_every_shipped_ext_proc_filter_fails_closed_behind_a_backstop(path: Path) -> None:
    doc = _load(path)
    assert ext_proc_problems(doc) == []
    if path.name in ("front-proxy.yaml", "sidecar.yaml"):
        assert len(ext_proc_filters(doc)) == 1, path.name
    if path.parent.name == "envoy":  # what is deployed (the benchmark measures filters alone)
        chains = [n["http_filters"] for n in _walk(doc) if "http_filters" in n]
        # the sticky front has no ext_proc (its sidecars do), but strips x-extauthz-* as well
        assert all(any(_is_backstop(f) for f in chain) for chain in chains), path.name


def test_every_rendered_ext_proc_filter_fails_closed(rendered: dict[str, dict[str, Any]]) -> None:
    for name, doc in rendered.items():
        assert ext_proc_problems(doc) == [], name
    counts = {name: len(ext_proc_filters(doc)) for name, doc in rendered.items()}
    assert counts == {"stack front-proxy": 1, "stack sidecar": 1, "sticky front": 0,
                      "compose front-proxy": 1, "bench rendered": 2}  # fmt: skip


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (lambda t: t.__setitem__("failure_mode_allow", True), "failure_mode_allow"),
        (lambda t: t.pop("status_on_error"), "status_on_error"),
        (lambda t: t.pop("message_timeout"), "message_timeout"),
    ],
)
def test_a_fail_open_ext_proc_is_caught(
    change: Callable[[dict[str, Any]], object], problem: str
) -> None:
    doc = copy.deepcopy(_load(FRONT_PROXY))
    (typed,) = ext_proc_filters(doc)
    change(typed)
    problems = ext_proc_problems(doc)
    assert len(problems) == 1 and problem in problems[0]


def test_an_ext_proc_before_ext_authz_is_caught() -> None:
    doc = copy.deepcopy(_load(FRONT_PROXY))
    (chain,) = [n["http_filters"] for n in _walk(doc) if "http_filters" in n]
    chain[1], chain[2] = chain[2], chain[1]
    assert ext_proc_problems(doc) == ["ext_proc before ext_authz in the list"]


def test_an_ext_proc_without_its_backstop_is_caught() -> None:
    doc = copy.deepcopy(_load(FRONT_PROXY))
    (chain,) = [n["http_filters"] for n in _walk(doc) if "http_filters" in n]
    chain.append(chain.pop(0))  # the backstop moved behind the router: too late
    assert ext_proc_problems(doc) == [
        "ext_proc without an x-extauthz-* backstop before it in the list"
    ]


def test_every_rendered_ext_authz_filter_fails_closed(rendered: dict[str, dict[str, Any]]) -> None:
    for name, doc in rendered.items():
        assert fail_open_problems(doc) == [], name
    counts = {name: len(ext_authz_filters(doc)) for name, doc in rendered.items()}
    assert counts == {"stack front-proxy": 1, "stack sidecar": 1, "sticky front": 0,
                      "compose front-proxy": 1, "bench rendered": 6}  # fmt: skip


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (lambda t: t.__setitem__("failure_mode_allow", True), "failure_mode_allow"),
        (lambda t: t.pop("failure_mode_allow"), "failure_mode_allow"),
        (lambda t: t.pop("status_on_error"), "status_on_error"),
        (lambda t: t.__setitem__("status_on_error", {"code": "Forbidden"}), "status_on_error"),
        (lambda t: t["grpc_service"].pop("timeout"), "timeout"),
        (lambda t: t["grpc_service"].__setitem__("timeout", "30s"), "timeout"),
    ],
)
def test_a_fail_open_sidecar_is_caught(
    change: Callable[[dict[str, Any]], object], problem: str
) -> None:
    doc = copy.deepcopy(_load(SIDECAR))
    (typed,) = ext_authz_filters(doc)
    change(typed)
    problems = fail_open_problems(doc)
    assert len(problems) == 1 and problem in problems[0]


def _http_filter(doc: dict[str, Any]) -> dict[str, Any]:
    (found,) = [n for n in _walk(doc) if n.get("typed_config") in ext_authz_filters(doc)]
    return found


def _catch_all(doc: dict[str, Any]) -> dict[str, Any]:
    (found,) = [n for n in _walk(doc) if n.get("match") == {"prefix": "/"}]
    return found


_DISABLED = {"@type": EXT_AUTHZ_PER_ROUTE_TYPE, "disabled": True}


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (lambda d: _http_filter(d).__setitem__("disabled", True), "disabled in the filter"),
        (
            lambda d: ext_authz_filters(d)[0].__setitem__(
                "filter_enabled", {"default_value": {"numerator": 0}, "runtime_key": "authz"}
            ),
            "filter_enabled lets requests by",
        ),
        (
            lambda d: ext_authz_filters(d)[0].__setitem__(
                "filter_enabled_metadata", {"filter": "f", "path": [{"key": "k"}]}
            ),
            "filter_enabled_metadata lets requests by",
        ),
        (
            lambda d: _catch_all(d)["typed_per_filter_config"].__setitem__(
                "envoy.filters.http.ext_authz", _DISABLED
            ),
            "route {'prefix': '/'}: ext_authz disabled",
        ),
        (
            lambda d: [n for n in _walk(d) if "domains" in n][0].__setitem__(
                "typed_per_filter_config", {"envoy.filters.http.ext_authz": _DISABLED}
            ),
            "ext_authz disabled for all routes",
        ),
    ],
)
def test_a_sidecar_that_skips_the_check_is_caught(
    change: Callable[[dict[str, Any]], object], problem: str
) -> None:
    """Fail-open without touching failure_mode_allow: the filter switched off in the chain,
    by a runtime fraction, or for the upstream's routes."""
    doc = copy.deepcopy(_load(SIDECAR))
    assert fail_open_problems(doc) == []
    change(doc)
    problems = fail_open_problems(doc)
    assert len(problems) == 1 and problem in problems[0], problems


def test_the_server_states_the_keepalive_contract() -> None:
    options = dict(SERVER_OPTIONS)
    assert options["grpc.http2.min_ping_interval_without_data_ms"] == MIN_PING_INTERVAL_MS
    assert options["grpc.keepalive_permit_without_calls"] == 1  # idle connections may ping


def test_every_cluster_toward_extauthz_keeps_the_keepalive_contract(
    rendered: dict[str, dict[str, Any]],
) -> None:
    docs = {path.name: _load(path) for path in SHIPPED} | rendered
    checked = 0
    for name, doc in docs.items():
        assert keepalive_problems(doc) == [], name
        checked += len(authz_clusters(doc))
    # shipped: front proxy, sidecar, bench (3); rendered: the same and the compose front proxy
    assert checked == 5 + 6


def test_a_keepalive_faster_than_the_server_accepts_is_caught() -> None:
    doc = copy.deepcopy(_load(FRONT_PROXY))
    (cluster,) = authz_clusters(doc)
    (h2,) = [n["http2_protocol_options"] for n in _walk(cluster) if "http2_protocol_options" in n]
    h2["connection_keepalive"]["interval"] = f"{MIN_PING_INTERVAL_MS / 1000 / 2:g}s"
    assert "shorter than the server's" in keepalive_problems(doc)[0]
    h2.pop("connection_keepalive")
    assert "no http2_protocol_options.connection_keepalive" in keepalive_problems(doc)[0]
