"""The asyncio servicer of ``grpc.health.v1.Health``, with types.

grpcio-health-checking ships it as ``grpc_health.v1.health.aio.HealthServicer``; grpc-stubs
1.53 describes only the thread-based servicer of that module. The class is declared here for
the type checker with the method the server calls, and is the library's class at run time.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from grpc_health.v1 import health_pb2

    class HealthServicer:
        """``grpc_health.v1.health.aio.HealthServicer``: the overall service (``""``) starts
        ``SERVING``, any other service is unknown (``NOT_FOUND``) until :meth:`set`."""

        async def set(
            self, service: str, status: health_pb2.HealthCheckResponse.ServingStatus
        ) -> None:
            """Set the status of ``service`` and notify its ``Watch`` streams (ignored once
            :meth:`enter_graceful_shutdown` ran)."""

        async def enter_graceful_shutdown(self) -> None:
            """Every service ``NOT_SERVING`` for good: later :meth:`set` calls are ignored."""

else:
    from grpc_health.v1.health import aio

    HealthServicer = aio.HealthServicer

__all__ = ["HealthServicer"]
