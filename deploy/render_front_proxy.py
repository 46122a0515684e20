"""Render envoy/front-proxy.yaml for containers: the same file the tests run, with only its
socket addresses moved (the tests move them to free loopback ports, this to service names).

    python deploy/render_front_proxy.py --source envoy/front-proxy.yaml --out OUT \
        --listen 0.0.0.0:8080 --admin 0.0.0.0:9901 \
        --grpc extauthz-1:9001,extauthz-2:9001 --http extauthz-1:9002,extauthz-2:9002 \
        --upstream echo:9003

A cluster whose endpoints are host names becomes ``STRICT_DNS`` (IPv4), so Envoy follows the
containers' addresses. Needs only PyYAML.
"""

from __future__ import annotations

import argparse
import ipaddress
from pathlib import Path
from typing import Any

import yaml

CLUSTERS = {"extauthz_grpc": "grpc", "extauthz_http": "http", "upstream": "upstream"}


def _address(text: str) -> dict[str, Any]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise SystemExit(f"expected HOST:PORT, got {text!r}")
    return {"address": host, "port_value": int(port)}


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def render(
    source: Path, *, listen: str, admin: str, endpoints: dict[str, list[str]]
) -> dict[str, Any]:
    """The rewritten document. :raises SystemExit: the source has another shape."""
    doc: dict[str, Any] = yaml.safe_load(source.read_text())
    doc["admin"]["address"]["socket_address"] = _address(admin)
    (listener,) = doc["static_resources"]["listeners"]
    listener["address"]["socket_address"] = _address(listen)
    names = [c["name"] for c in doc["static_resources"]["clusters"]]
    if sorted(names) != sorted(CLUSTERS):
        raise SystemExit(f"{source}: expected clusters {sorted(CLUSTERS)}, found {names}")
    for cluster in doc["static_resources"]["clusters"]:
        addresses = [_address(a) for a in endpoints[CLUSTERS[cluster["name"]]]]
        cluster["load_assignment"]["endpoints"] = [
            {"lb_endpoints": [{"endpoint": {"address": {"socket_address": a}}} for a in addresses]}
        ]
        if not all(_is_ip(a["address"]) for a in addresses):
            cluster["type"] = "STRICT_DNS"
            cluster["dns_lookup_family"] = "V4_ONLY"
    return doc


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--listen", required=True)
    parser.add_argument("--admin", required=True)
    for name in ("grpc", "http", "upstream"):
        parser.add_argument(f"--{name}", required=True, help="HOST:PORT[,HOST:PORT...]")
    args = parser.parse_args(argv)
    endpoints = {n: getattr(args, n).split(",") for n in ("grpc", "http", "upstream")}
    doc = render(args.source, listen=args.listen, admin=args.admin, endpoints=endpoints)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(yaml.safe_dump(doc, sort_keys=False))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
