"""Talking to a running extauthz over gRPC: ``Authorization/Check`` and the admin API.

Small async helpers for end-to-end tests that need many calls quickly (no subprocess per call,
unlike the CLI): one :class:`AuthzClient` per node, each with its own channel.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import grpc
from envoy.service.auth.v3 import external_auth_pb2_grpc
from google.rpc import code_pb2

from extauthz._proto.extauthz.v1 import admin_pb2, admin_pb2_grpc
from tests.fixtures.core import bearer_request


@dataclass(frozen=True)
class CheckResult:
    """What a Check answered: the gRPC-level outcome and the decision metadata."""

    allowed: bool
    code: int  # google.rpc.Code of CheckResponse.status
    metadata: dict[str, str]

    @property
    def cache(self) -> str:
        """``hit``, ``miss``, ``bypass`` or ``off`` (see extauthz.store.cache)."""
        return self.metadata.get("session_cache", "")


class AuthzClient:
    """Async gRPC client of one extauthz node (``target`` is ``HOST:PORT``)."""

    def __init__(
        self, target: str, admin_metadata: list[tuple[str, str]], timeout: float = 5.0
    ) -> None:
        self.target = target
        self.timeout = timeout
        self._admin_metadata = admin_metadata  # the node's admin token (ExtauthzProcess)
        self._channel = grpc.aio.insecure_channel(target)
        self._authz = external_auth_pb2_grpc.AuthorizationStub(self._channel)
        self._admin = admin_pb2_grpc.SessionAdminStub(self._channel)

    async def check(self, token: str, path: str = "/resource") -> CheckResult:
        """:raises grpc.aio.AioRpcError: the RPC itself failed (e.g. ``UNAVAILABLE``)."""
        resp = await self._authz.Check(bearer_request(token, path), timeout=self.timeout)
        metadata = {k: str(v) for k, v in resp.dynamic_metadata.items()}
        return CheckResult(resp.status.code == code_pb2.OK, resp.status.code, metadata)

    async def warm(self, token: str, deadline: float) -> None:
        """Check until the node answers ``token`` from its cache (its channel may still be
        proving itself alive right after start or after a cut), by ``deadline``
        (``time.monotonic()``); every answer must allow."""
        while True:
            result = await self.check(token)
            assert result.allowed, result
            if result.cache == "hit":
                return
            assert time.monotonic() < deadline, f"{self.target} never answered from its cache"
            await asyncio.sleep(0.02)

    async def create_session(self, sub: str) -> tuple[str, str]:
        """``(opaque token, sid)`` of a new session for ``sub``."""
        resp = await self._admin.CreateSession(
            admin_pb2.CreateSessionRequest(sub=sub), metadata=self._admin_metadata,
            timeout=self.timeout,
        )  # fmt: skip
        return resp.access_token, resp.session.sid

    async def revoke(self, sid: str) -> bool:
        resp = await self._admin.RevokeSession(
            admin_pb2.RevokeSessionRequest(sid=sid), metadata=self._admin_metadata,
            timeout=self.timeout,
        )  # fmt: skip
        return bool(resp.revoked)

    async def close(self) -> None:
        await self._channel.close(grace=None)
