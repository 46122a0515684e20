"""The cached Check in-process, without gRPC or Envoy: what the pipeline itself costs.

    .venv/bin/python -m benchmarks.check_loop [CALLS]

The composition root's pipeline (``build_components``) on an in-memory store, one session;
each call parses the ``CheckRequest`` bytes Envoy would send (Bearer, a few headers), runs
``AuthorizationServicer.Check`` and serializes the response. 2 000 calls of warm-up, then 7
batches of ``CALLS / 7``; prints the CPU time per call of the fastest batch and the median
(docs/benchmarks.md, 'The cached Check's hot path'). Run from the tree to measure (the current
directory comes first on ``sys.path``).
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from envoy.service.auth.v3.external_auth_pb2 import CheckRequest

from harness.extauthz import ensure_signing_key

SETTINGS = """[server]
node_id = "loop"
[store]
backend = "memory"
strategy = "sticky"
[session]
cookie_secure = false
[admin]
enabled = false
[jwt]
issuer = "http://127.0.0.1"
audience = "loop"
keys_dir = "{keys}"
"""


class _Context:
    async def abort(self, *args: Any) -> None:
        raise RuntimeError(args)


async def pipeline() -> tuple[Any, bytes]:
    """The composition root's ``AuthorizationServicer`` on an in-memory store with one
    session, and the bytes of a ``CheckRequest`` Envoy would send for it (shared with
    :mod:`benchmarks.check_hosted`)."""
    from extauthz.server.app import build_components
    from extauthz.server.grpc_server import AuthorizationServicer
    from extauthz.settings import load_settings

    work = Path(tempfile.mkdtemp(prefix="check-loop-"))
    ensure_signing_key(work / "keys")
    (work / "extauthz.toml").write_text(SETTINGS.format(keys=work / "keys"))
    components = build_components(load_settings(work / "extauthz.toml", environ={}))
    token, _ = await components.sessions.create("loop")
    request = CheckRequest()
    http = request.attributes.request.http
    http.method, http.path, http.host, http.scheme = "GET", "/api/items", "127.0.0.1", "http"
    http.headers.update({"authorization": f"Bearer {token}", "accept": "*/*",
                         "referer": "http://127.0.0.1/app", "sec-fetch-site": "same-origin"})
    request.attributes.context_extensions["client"] = "auto"
    request.attributes.source.address.socket_address.address = "127.0.0.1"
    wire = request.SerializeToString()
    servicer = AuthorizationServicer(components.authorizer)
    first = await servicer.Check(CheckRequest.FromString(wire), _Context())
    if first.status.code != 0:
        raise SystemExit(f"the Check did not allow: {first}")
    return servicer, wire


async def run(calls: int) -> tuple[float, float]:
    """(fastest, median) CPU microseconds per call."""
    servicer, wire = await pipeline()
    context = _Context()
    for _ in range(2000):
        (await servicer.Check(CheckRequest.FromString(wire), context)).SerializeToString()
    batch, results = max(calls // 7, 1), []
    for _ in range(7):
        started = time.process_time()
        for _ in range(batch):
            (await servicer.Check(CheckRequest.FromString(wire), context)).SerializeToString()
        results.append((time.process_time() - started) / batch * 1e6)
    return min(results), statistics.median(results)


def main() -> None:
    fastest, median = asyncio.run(run(int(sys.argv[1]) if len(sys.argv) > 1 else 14_000))
    print(f"cached Check in-process: {fastest:.1f} us CPU (fastest batch), median {median:.1f}")


if __name__ == "__main__":
    main()
