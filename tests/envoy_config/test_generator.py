"""``extauthz envoy-config``: what the settings and options change in the bootstrap, the route
table file, and the refusals. Structural: the generated YAML read back as Envoy's messages."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from envoy.config.bootstrap.v3.bootstrap_pb2 import Bootstrap
from google.protobuf import json_format

from extauthz.check.context import CHECK_HEADERS
from extauthz.cli import main
from extauthz.envoy_config import filters  # noqa: F401 (registers the typed_config types)

EXT_AUTHZ = "envoy.filters.http.ext_authz"


def _run(tmp_path: Path, *args: str, settings: str = "") -> dict[str, Any]:
    out = tmp_path / "out.yaml"
    config = tmp_path / "extauthz.toml"
    config.write_text(settings)
    assert main(["envoy-config", *args, "--config", str(config), "--out", str(out)]) == 0
    doc: dict[str, Any] = yaml.safe_load(out.read_text())
    json_format.ParseDict(doc, Bootstrap())  # every field is one of Envoy's
    return doc


def _hcm(doc: dict[str, Any]) -> dict[str, Any]:
    (listener,) = doc["static_resources"]["listeners"]
    typed: dict[str, Any] = listener["filter_chains"][0]["filters"][0]["typed_config"]
    return typed


def _filter(doc: dict[str, Any], name: str) -> dict[str, Any]:
    found: dict[str, Any]
    (found,) = [f["typed_config"] for f in _hcm(doc)["http_filters"] if f["name"] == name]
    return found


def _clusters(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in doc["static_resources"]["clusters"]}


def _hosts(cluster: dict[str, Any]) -> list[str]:
    return [
        f"{e['endpoint']['address']['socket_address']['address']}:"
        f"{e['endpoint']['address']['socket_address']['port_value']}"
        for e in cluster["load_assignment"]["endpoints"][0]["lb_endpoints"]
    ]


def test_the_settings_reach_the_filters_and_clusters(tmp_path: Path) -> None:
    settings = """
[server]
grpc_listen = "0.0.0.0:7001"
http_listen = "127.0.0.2:7002"
[session]
cookie_name = "sid.v2"
[jwt]
header = "x-jwt"
[session_updates]
header = "x-app-session-patch"
"""
    doc = _run(tmp_path, "front", settings=settings)
    clusters = _clusters(doc)
    assert _hosts(clusters["extauthz_grpc"]) == ["127.0.0.1:7001"]  # a wildcard: this host
    assert _hosts(clusters["extauthz_http"]) == ["127.0.0.2:7002"]
    assert _hcm(doc)["route_config"]["response_headers_to_remove"] == ["x-jwt"]

    matcher = _filter(doc, "extauthz_session_update")
    proc = matcher["extension_config"]["typed_config"]
    allowed = [p["exact"] for p in proc["forward_rules"]["allowed_headers"]["patterns"]]
    assert allowed == ["x-app-session-patch", "set-cookie"]
    header_input, cookie_input = matcher["xds_matcher"]["matcher_list"]["matchers"][0][
        "predicate"]["not_matcher"]["or_matcher"]["predicate"]  # fmt: skip
    assert header_input["single_predicate"]["input"]["typed_config"]["header_name"] == (
        "x-app-session-patch"
    )
    regex = re.compile(cookie_input["single_predicate"]["value_match"]["safe_regex"]["regex"])
    assert regex.fullmatch("a=1; Path=/, sid.v2=abc; HttpOnly")
    assert not regex.fullmatch("sidXv2=abc")  # the "." is literal
    # an update header outside x-extauthz-* gets its own backstop
    removals = _filter(doc, "envoy.filters.http.header_mutation")["mutations"]["response_mutations"]
    assert {"remove": "x-app-session-patch"} in removals
    assert {"remove_on_match": {"key_matcher": {"prefix": "x-extauthz-"}}} in removals


def test_ext_authz_sends_only_the_headers_the_check_reads(tmp_path: Path) -> None:
    doc = _run(tmp_path, "front", settings='[api_keys]\nheader = "x-service-key"\n')
    allowed = [p["exact"] for p in _filter(doc, EXT_AUTHZ)["allowed_headers"]["patterns"]]
    assert allowed == [*CHECK_HEADERS, "x-service-key"]
    assert {"authorization", "cookie", "accept", "origin", "traceparent"} <= set(allowed)


def test_host_names_make_a_dns_cluster(tmp_path: Path) -> None:
    doc = _run(tmp_path, "front", "--upstream", "app:8000,10.0.0.5:8000",
               "--extauthz-grpc", "extauthz-1:9001,extauthz-2:9001")  # fmt: skip
    clusters = _clusters(doc)
    assert clusters["upstream"]["type"] == "STRICT_DNS"
    assert clusters["upstream"]["dns_lookup_family"] == "V4_ONLY"
    assert _hosts(clusters["upstream"]) == ["app:8000", "10.0.0.5:8000"]
    assert _hosts(clusters["extauthz_grpc"]) == ["extauthz-1:9001", "extauthz-2:9001"]
    assert clusters["extauthz_http"]["type"] == "STATIC"


def test_the_route_table_in_order_after_extauthzs_own_routes(tmp_path: Path) -> None:
    table = tmp_path / "routes.toml"
    table.write_text("""
[[routes]]
path = "/admin"
context_extensions = { client = "api", required_scopes = "admin" }
[[routes]]
prefix = "/"
""")
    doc = _run(tmp_path, "sidecar", "--routes", str(table))
    routes = _hcm(doc)["route_config"]["virtual_hosts"][0]["routes"]
    assert [r["match"] for r in routes] == [
        {"path": "/healthz"}, {"prefix": "/.well-known/"}, {"path": "/auth/verify"},
        {"prefix": "/auth/"}, {"path": "/admin"}, {"prefix": "/"},
    ]  # fmt: skip
    admin, catch_all = routes[-2:]
    assert admin["typed_per_filter_config"][EXT_AUTHZ]["check_settings"] == {
        "context_extensions": {"client": "api", "required_scopes": "admin"}
    }
    assert catch_all["route"] == {"cluster": "upstream"}
    assert "disabled" not in catch_all["typed_per_filter_config"][EXT_AUTHZ]


def test_without_a_table_one_catch_all_needs_a_session(tmp_path: Path) -> None:
    routes = _hcm(_run(tmp_path, "front"))["route_config"]["virtual_hosts"][0]["routes"]
    last = routes[-1]
    assert last["match"] == {"prefix": "/"}
    assert last["typed_per_filter_config"][EXT_AUTHZ]["check_settings"]["context_extensions"] == {
        "client": "auto", "same_site": "required",
    }  # fmt: skip


def test_the_sticky_front_lists_its_nodes(tmp_path: Path) -> None:
    doc = _run(tmp_path, "sticky", "--nodes", "127.0.0.1:1,127.0.0.1:2", "--listen", "0.0.0.0:80")
    (nodes,) = doc["static_resources"]["clusters"]
    assert nodes["lb_policy"] == "RING_HASH"
    assert _hosts(nodes) == ["127.0.0.1:1", "127.0.0.1:2"]
    assert "ext_authz" not in yaml.safe_dump(doc).replace("extauthz", "")


def test_same_inputs_same_bytes(tmp_path: Path) -> None:
    first = yaml.safe_dump(_run(tmp_path, "front"))
    assert yaml.safe_dump(_run(tmp_path, "front")) == first


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ('[[routes]]\ncontext_extensions = { client = "api" }', "exactly one of prefix and path"),
        ('[[routes]]\nprefix = "/"\npath = "/x"', "exactly one of prefix and path"),
        ('[[routes]]\nprefix = "x/"', "starts with '/'"),
        ('[[routes]]\nprefix = "/"\ncontext_extensions = { n = 1 }', "names to strings"),
        ('[[routes]]\nprefix = "/"\ncluster = "other"', "unknown keys"),
        ("[routes]\nprefix = 1", "one or more [[routes]]"),
        ("routes = [", "cannot read"),
    ],
)
def test_a_bad_route_table_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], table: str, message: str
) -> None:
    path = tmp_path / "routes.toml"
    path.write_text(table)
    assert main(["envoy-config", "front", "--routes", str(path)]) == 2
    captured = capsys.readouterr()
    assert message in captured.err
    assert captured.out == ""


@pytest.mark.parametrize("address", ["9001", "host:", "host:70000", ":80", "host:x"])
def test_a_bad_address_is_refused(capsys: pytest.CaptureFixture[str], address: str) -> None:
    assert main(["envoy-config", "front", "--upstream", address]) == 2
    assert "expected HOST:PORT" in capsys.readouterr().err


@pytest.mark.parametrize(
    "args",
    [["sticky", "--upstream", "127.0.0.1:1"], ["sticky", "--routes", "r.toml"],
     ["front", "--nodes", "127.0.0.1:1"]],
)  # fmt: skip
def test_an_option_of_another_kind_is_refused(
    capsys: pytest.CaptureFixture[str], args: list[str]
) -> None:
    assert main(["envoy-config", *args]) == 2
    assert "does not apply" in capsys.readouterr().err
