"""The benchmark's Envoy config and a short run of the benchmark itself.

``benchmarks/envoy-bench.yaml`` must be accepted by every supported Envoy (as committed and as
``bench.py`` renders it), its listeners must differ only by the auth step, and both ext_authz
steps (extauthz and the no-op Check) must be configured like the front proxy's.
``bench.py --smoke`` runs the real stack for a second or two per scenario and phase (throughput,
one connection, open loop, a 1- and 2-worker scaling step, memory) and must pass its own
checks (200 with the credential, 401 without, no non-2xx, every request through the auth
step, every worker answering), so the benchmark cannot silently measure errors; its report
and plots must be written.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml
from envoy.config.cluster.v3.cluster_pb2 import Cluster
from envoy.extensions.filters.http.ext_authz.v3.ext_authz_pb2 import ExtAuthz
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2  # noqa: F401 (Any type)
from google.protobuf import json_format

from tests.support import FRONT_PROXY, REPO_ROOT, validate_envoy_config

BENCH_DIR = REPO_ROOT / "benchmarks"
BENCH_CONFIG = BENCH_DIR / "envoy-bench.yaml"
EXT_AUTHZ = "envoy.filters.http.ext_authz"
JWT_AUTHN = "envoy.filters.http.jwt_authn"
ROUTER = "envoy.filters.http.router"
HEADER_MUTATION = "envoy.filters.http.header_mutation"
SESSION_UPDATE = "extauthz_session_update"  # the ext_proc wrapper, as in envoy/front-proxy.yaml
ORIGIN, ORIGIN_CLUSTER = "origin", "bench_origin"
GRPC_PORTS = {"extauthz_grpc": 50051, "noop_authz_grpc": 50052, "extauthz_nocache_grpc": 50053}


def _load_bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("extauthz_bench", BENCH_DIR / "bench.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


bench = _load_bench()


def _doc(path: Path = BENCH_CONFIG) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(path.read_text())
    return doc


def _hcm(listener: dict[str, Any]) -> dict[str, Any]:
    (chain,) = listener["filter_chains"]
    (hcm,) = chain["filters"]
    typed: dict[str, Any] = hcm["typed_config"]
    return typed


def _listeners(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {item["name"]: item for item in doc["static_resources"]["listeners"]}


def _filter(hcm: dict[str, Any], name: str) -> dict[str, Any]:
    found: dict[str, Any]
    (found,) = [f for f in hcm["http_filters"] if f["name"] == name]
    return found


def _jwt_filter(doc: dict[str, Any]) -> dict[str, Any]:
    """The ``typed_config`` of the ``jwt_authn`` listener's JWT filter."""
    typed: dict[str, Any] = _filter(_hcm(_listeners(doc)["jwt_authn"]), JWT_AUTHN)["typed_config"]
    return typed


def _jwt_provider(doc: dict[str, Any]) -> dict[str, Any]:
    """The one provider of :func:`_jwt_filter`."""
    provider: dict[str, Any]
    (provider,) = _jwt_filter(doc)["providers"].values()
    return provider


# -- validation by the real binaries ----------------------------------------------------------


@pytest.mark.e2e
def test_bench_config_validates(envoy_binary: str) -> None:
    result = validate_envoy_config(envoy_binary, BENCH_CONFIG)
    assert result.returncode == 0, f"rejected:\n{result.stdout}\n{result.stderr}"
    assert "OK" in result.stdout


@pytest.mark.e2e
def test_rendered_bench_config_validates(envoy_binary: str, tmp_path: Path) -> None:
    material = bench.make_jwt_material()
    ports = bench.EnvoyPorts.allocate()
    rendered = bench.render_bench_config(tmp_path, ports, GRPC_PORTS, material.jwks)
    result = validate_envoy_config(envoy_binary, rendered)
    assert result.returncode == 0, f"rejected:\n{result.stdout}\n{result.stderr}"


# -- structure --------------------------------------------------------------------------------


def test_listeners_differ_only_by_the_auth_step() -> None:
    listeners = _listeners(_doc())
    origin = listeners.pop(ORIGIN)
    assert list(listeners) == list(bench.SCENARIOS)
    response_path = [HEADER_MUTATION, EXT_AUTHZ, SESSION_UPDATE]
    auth_filters = {"direct": [], "jwt_authn": [JWT_AUTHN], "ext_authz_noop": [EXT_AUTHZ],
                    "ext_authz_nocache": [EXT_AUTHZ], "ext_authz": [EXT_AUTHZ],
                    "ext_authz_all_headers": [EXT_AUTHZ], "ext_authz_proc": response_path,
                    "ext_authz_update": response_path}  # fmt: skip
    # ext_authz_update alone answers from the origin listener, which adds a session update
    (update_route,) = _hcm(listeners["ext_authz_update"])["route_config"]["virtual_hosts"][0][
        "routes"
    ]
    assert update_route.pop("route") == {"cluster": ORIGIN_CLUSTER}
    (origin_route,) = _hcm(origin)["route_config"]["virtual_hosts"][0]["routes"]
    assert origin_route.pop("response_headers_to_add") == [
        {"header": {"key": "x-extauthz-session-update", "value": '{"cart":1}'}}
    ]
    update_route["direct_response"] = origin_route["direct_response"]
    normalised = []
    for name, listener in listeners.items():
        hcm = copy.deepcopy(_hcm(listener))
        names = [f["name"] for f in hcm["http_filters"]]
        assert names == [*auth_filters[name], ROUTER], name
        # what remains once the auth step and the names are taken out must be identical
        hcm["http_filters"] = [f for f in hcm["http_filters"] if f["name"] == ROUTER]
        hcm.pop("stat_prefix")
        hcm["route_config"].pop("name")
        for vhost in hcm["route_config"]["virtual_hosts"]:
            for route in vhost["routes"]:
                route.pop("typed_per_filter_config", None)
        normalised.append(hcm)
    assert all(hcm == normalised[0] for hcm in normalised[1:])
    (route,) = normalised[0]["route_config"]["virtual_hosts"][0]["routes"]
    assert route["direct_response"]["status"] == 200
    assert "access_log" not in normalised[0]


def _ext_authz(typed_config: dict[str, Any]) -> ExtAuthz:
    """A ``typed_config`` mapping as the ExtAuthz message it describes."""
    fields = {k: v for k, v in typed_config.items() if k != "@type"}
    return json_format.ParseDict(fields, ExtAuthz())


@pytest.mark.parametrize(("listener", "cluster_name"),
                         [("ext_authz", "extauthz_grpc"), ("ext_authz_noop", "noop_authz_grpc"),
                          ("ext_authz_nocache", "extauthz_nocache_grpc")])
def test_ext_authz_step_is_configured_like_the_front_proxy(
    listener: str, cluster_name: str
) -> None:
    front = yaml.safe_load(FRONT_PROXY.read_text())
    front_hcm = _hcm(front["static_resources"]["listeners"][0])
    doc = _doc()
    hcm = _hcm(_listeners(doc)[listener])
    ours = copy.deepcopy(_filter(hcm, EXT_AUTHZ))
    assert ours["typed_config"]["grpc_service"]["envoy_grpc"] == {"cluster_name": cluster_name}
    ours["typed_config"]["grpc_service"]["envoy_grpc"]["cluster_name"] = "extauthz_grpc"
    # compared as ExtAuthz messages: the generated file writes proto3's JSON ("0.500s", no
    # default-valued fields), this hand-kept one YAML as written ("0.5s")
    theirs = _filter(front_hcm, EXT_AUTHZ)
    assert ours["name"] == theirs["name"]
    assert _ext_authz(ours["typed_config"]) == _ext_authz(theirs["typed_config"])
    typed = ours["typed_config"]
    assert typed["transport_api_version"] == "V3"
    assert typed["failure_mode_allow"] is False
    assert typed["status_on_error"] == {"code": "ServiceUnavailable"}
    assert typed["grpc_service"]["timeout"]

    def cluster(d: dict[str, Any], name: str) -> dict[str, Any]:
        found: dict[str, Any]
        (found,) = [c for c in d["static_resources"]["clusters"] if c["name"] == name]
        found = copy.deepcopy(found)
        found.pop("load_assignment")
        found.pop("name")
        return found

    as_message = json_format.ParseDict(cluster(doc, cluster_name), Cluster())
    assert as_message == json_format.ParseDict(cluster(front, "extauthz_grpc"), Cluster())
    assert "http2_protocol_options" in json.dumps(cluster(doc, cluster_name))


def test_all_headers_differs_from_ext_authz_only_by_the_header_allow_list() -> None:
    listeners = _listeners(_doc())
    ours = _ext_authz(_filter(_hcm(listeners["ext_authz_all_headers"]), EXT_AUTHZ)["typed_config"])
    theirs = _ext_authz(_filter(_hcm(listeners["ext_authz"]), EXT_AUTHZ)["typed_config"])
    assert theirs.allowed_headers.patterns and not ours.HasField("allowed_headers")
    theirs.ClearField("allowed_headers")
    assert ours == theirs


def test_jwt_authn_requires_an_es256_token_from_a_local_jwks() -> None:
    typed = _jwt_filter(_doc())
    provider = _jwt_provider(_doc())
    (key,) = json.loads(provider["local_jwks"]["inline_string"])["keys"]
    assert (key["kty"], key["crv"], key["alg"]) == ("EC", "P-256", "ES256")
    assert "d" not in key  # a public key only
    assert provider["issuer"] == bench.JWT_ISSUER
    assert provider["audiences"] == [bench.JWT_AUDIENCE]
    assert typed["rules"] == [{"match": {"prefix": "/"}, "requires": {"provider_name": "bench"}}]


def test_render_changes_only_ports_and_the_jwks(tmp_path: Path) -> None:
    material = bench.make_jwt_material()
    ports = bench.EnvoyPorts.allocate()
    rendered = _doc(bench.render_bench_config(tmp_path, ports, GRPC_PORTS, material.jwks))
    original = _doc()
    for name, listener in _listeners(rendered).items():
        assert listener["address"]["socket_address"] == {
            "address": "127.0.0.1", "port_value": ports.listeners[name]
        }  # fmt: skip
    assert rendered["admin"]["address"]["socket_address"]["port_value"] == ports.admin
    provider = _jwt_provider(rendered)
    assert provider["local_jwks"]["inline_string"] == material.jwks
    # put the original values back: nothing else may differ
    for name, listener in _listeners(rendered).items():
        listener["address"] = _listeners(original)[name]["address"]
    rendered["admin"] = original["admin"]
    provider["local_jwks"] = _jwt_provider(original)["local_jwks"]
    clusters = rendered["static_resources"]["clusters"]
    committed_clusters = original["static_resources"]["clusters"]
    for cluster, committed in zip(clusters, committed_clusters, strict=True):
        endpoint = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
        # the gRPC clusters point at their servers, the origin cluster at the origin listener
        wanted = {**GRPC_PORTS, ORIGIN_CLUSTER: ports.listeners[ORIGIN]}[cluster["name"]]
        assert endpoint["address"]["socket_address"]["port_value"] == wanted
        cluster["load_assignment"] = committed["load_assignment"]
    assert rendered == original


# -- wrk output -------------------------------------------------------------------------------

WRK_OUTPUT = """\
Running 10s test @ http://127.0.0.1:40001/
  1 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     2.10ms  612.30us  31.02ms   90.12%
    Req/Sec    15.21k     1.02k   16.80k    71.00%
  Latency Distribution
     50%    1.98ms
     75%    2.25ms
     90%  812.00us
     99%    1.20s
  151234 requests in 10.00s, 12.40MB read
  Non-2xx or 3xx responses: 7
  Socket errors: connect 0, read 1, write 0, timeout 2
Requests/sec:  15120.44
Transfer/sec:      1.24MB
"""


def test_parse_wrk_reads_rate_percentiles_and_errors() -> None:
    result = bench.parse_wrk(WRK_OUTPUT)
    assert result["rps"] == pytest.approx(15120.44)
    assert result["requests"] == 151234
    assert result["p50_ms"] == pytest.approx(1.98)
    assert result["p90_ms"] == pytest.approx(0.812)
    assert result["p99_ms"] == pytest.approx(1200.0)
    assert result["max_ms"] == pytest.approx(31.02)
    assert result["non_2xx"] == 7
    assert result["socket_errors"] == 3


def test_parse_wrk_without_errors_counts_zero() -> None:
    clean = "\n".join(
        line for line in WRK_OUTPUT.splitlines() if "Non-2xx" not in line and "Socket" not in line
    )
    result = bench.parse_wrk(clean)
    assert (result["non_2xx"], result["socket_errors"]) == (0, 0)


def test_a_run_with_errors_is_reported_as_failed() -> None:
    result = bench.parse_wrk(WRK_OUTPUT) | {
        "envoy_counters": {"ext_authz.ok": 151234, "ext_authz.denied": 0, "ext_authz.error": 7,
                           "ext_authz.failure_mode_allowed": 0, "downstream_rq_2xx": 151227,
                           "downstream_rq_4xx": 0, "downstream_rq_5xx": 7},  # fmt: skip
    }
    problems = " ".join(bench.check_run("ext_authz", result))
    assert "7 non-2xx" in problems and "socket errors" in problems and "ext_authz.error" in problems


# -- the benchmark, briefly, for real ---------------------------------------------------------


@pytest.mark.e2e
def test_bench_smoke_run(envoy_binary: str, tmp_path: Path) -> None:
    for tool in ("wrk", "h2load", "redis-server"):
        if shutil.which(tool) is None:
            if os.environ.get("CI"):
                pytest.fail(f"{tool} is not on PATH (CI runs `make test`)", pytrace=False)
            pytest.skip(f"{tool} is not on PATH (`make wrk h2load redis` installs it)")
    out, report_md, plots = tmp_path / "smoke.json", tmp_path / "results.md", tmp_path / "plots"
    proc = subprocess.run(
        [sys.executable, str(BENCH_DIR / "bench.py"), "--smoke", "--envoy", envoy_binary,
         "--scaling", "1,2", "--json", str(out), "--report", str(report_md), "--plots",
         str(plots)],
        capture_output=True, text=True, timeout=400, cwd=REPO_ROOT, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, f"bench.py --smoke failed:\n{proc.stdout}\n{proc.stderr}"
    report = json.loads(out.read_text())
    assert report["problems"] == []
    assert [s["scenario"] for s in report["scenarios"]] == list(bench.SCENARIOS)
    for scenario in report["scenarios"]:
        assert scenario["requests"] > 0, scenario["scenario"]
        assert scenario["non_2xx"] == 0 and scenario["socket_errors"] == 0, scenario["scenario"]
    by_name = {s["scenario"]: s for s in report["scenarios"]}
    for name in ("ext_authz_noop", "ext_authz_nocache", "ext_authz", "ext_authz_proc",
                 "ext_authz_update"):  # fmt: skip
        assert by_name[name]["envoy_counters"]["ext_authz.ok"] >= by_name[name]["requests"]
    update = by_name["ext_authz_update"]
    assert update["session_updates_applied"] >= update["requests"]
    assert by_name["ext_authz_proc"]["session_updates_applied"] == 0
    jwt_authn = by_name["jwt_authn"]
    assert jwt_authn["envoy_counters"]["jwt_authn.allowed"] >= jwt_authn["requests"]
    # without the cache every Check reads the session from Redis; with it, almost none does
    assert by_name["ext_authz_nocache"]["redis_commands_per_request"] >= 1
    assert "checks passed" in proc.stderr
    _check_latency_phases(report)
    _check_memory_and_scaling(report)
    _check_outputs(report, report_md, plots)


def _check_latency_phases(report: dict[str, Any]) -> None:
    """One connection: every scenario, from p0 to the max, and what it adds over Envoy alone.
    Open loop: at least the scenarios that the smoke rate cannot overload, every request
    answered 2xx and counted by Envoy's auth step."""
    one = {r["scenario"]: r for r in report["one_connection"]}
    assert list(one) == list(bench.SCENARIOS)
    for name, r in one.items():
        assert r["requests"] > 0 and r["non_2xx"] == 0, name
        pcts = [r["percentiles_ms"][k] for k in ("0.0", "50.0", "99.0", "99.9", "100.0")]
        assert pcts == sorted(pcts) and pcts[-1] > 0, name
        assert "50.0" in r["added_ms"], name
    assert one["direct"]["added_ms"]["50.0"] == 0
    ol = report["open_loop"]
    assert 0 < ol["rate"] <= 200
    runs = {r["scenario"]: r for r in ol["runs"]}
    assert {"direct", "ext_authz_noop"} <= set(runs)
    assert set(runs) | {s["scenario"] for s in ol["skipped"]} == set(bench.SCENARIOS)
    for name, r in runs.items():
        assert r["requests"] == r["scheduled"] and r["non_2xx"] == 0, name
        assert r["achieved_rps"] >= 0.9 * r["rate"], name
        passed = r["envoy_counters"].get("ext_authz.ok", r["envoy_counters"]["downstream_rq_2xx"])
        if name == "jwt_authn":
            passed = r["envoy_counters"]["jwt_authn.allowed"]
        assert passed >= r["requests"], name


def _check_memory_and_scaling(report: dict[str, Any]) -> None:
    memory = report["memory"]
    assert memory["checks"] == 2000 and memory["processes"]
    assert all(p["rss_after_mib"] > 10 for p in memory["processes"])
    # two workers: each answered part of the Checks (bench.py checks their CPU time)
    runs = report["scaling"]["runs"]
    assert [r["workers"] for r in runs] == [1, 2]
    for r in runs:
        assert r["requests"] > 0 and r["envoy_counters"]["ext_authz.ok"] >= r["requests"]
        assert len(r["worker_cpu_s"]) == r["workers"] and min(r["worker_cpu_s"].values()) > 0


def _check_outputs(report: dict[str, Any], report_md: Path, plots: Path) -> None:
    text = report_md.read_text()
    for heading in ("## Targets", "## Throughput", "## One connection", "## Open loop",
                    "## Scaling", "## Memory", "## Latency distributions"):  # fmt: skip
        assert heading in text, heading
    names = {Path(p).name for p in report["plots"]}
    assert {f"latency-{name}.png" for name in bench.SCENARIOS} == names
    for name in names:
        assert (plots / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
        assert f"]({plots.name}/{name})" in text  # linked relative to the report
