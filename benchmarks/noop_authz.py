"""A no-op ``envoy.service.auth.v3.Authorization`` server: the "bare gRPC round trip" of the
hot-path budget (docs/benchmarks.md), on the same stack as extauthz (Python, grpc.aio, one event
loop).

    python benchmarks/noop_authz.py --listen 127.0.0.1:PORT

Check answers OK when the request carries an ``authorization`` header and 401 otherwise (so
the benchmark can check it like every other scenario); it reads nothing else, touches no store,
signs nothing and sets no header. The gap between this scenario and extauthz's is what the
pipeline itself costs. Like extauthz it serves ``grpc.health.v1.Health``, with the
``liveness`` service that Envoy's cluster health check asks (envoy-bench.yaml).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path
from typing import Any

import grpc
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from envoy.type.v3.http_status_pb2 import HttpStatus
from google.rpc import code_pb2, status_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from extauthz.server.health import HealthServicer  # noqa: E402 (grpc's asyncio servicer, typed)

_OK = external_auth_pb2.CheckResponse(
    status=status_pb2.Status(code=code_pb2.OK), ok_response=external_auth_pb2.OkHttpResponse()
)
_DENIED = external_auth_pb2.CheckResponse(
    status=status_pb2.Status(code=code_pb2.UNAUTHENTICATED),
    denied_response=external_auth_pb2.DeniedHttpResponse(
        status=HttpStatus(code=401)
    ),
)


# xds-protos ships no type information, so its servicer base class is Any to mypy
class NoopAuthorization(external_auth_pb2_grpc.AuthorizationServicer):  # type: ignore[misc]
    async def Check(self, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        if "authorization" in request.attributes.request.http.headers:
            return _OK
        return _DENIED


async def serve(listen: str) -> None:
    server = grpc.aio.server()
    external_auth_pb2_grpc.add_AuthorizationServicer_to_server(NoopAuthorization(), server)
    health = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    for service in ("", "liveness"):
        await health.set(service, health_pb2.HealthCheckResponse.SERVING)
    if server.add_insecure_port(listen) == 0:
        raise SystemExit(f"noop_authz: cannot bind {listen}")
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    await server.stop(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", required=True, help="HOST:PORT")
    asyncio.run(serve(parser.parse_args().listen))


if __name__ == "__main__":
    main()
