"""``extauthz.v1.FactorAdmin``: users' second factors over the admin API
(``protos/extauthz/v1/admin.proto``), behind the same admin token as ``SessionAdmin``
(:class:`~extauthz.server.admin.AdminGuard`). Lists never carry a secret, a code or a digest;
a reset removes every factor and revokes every session of the user
(:class:`~extauthz.login.mfa.account.FactorAdmin`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

import grpc

from extauthz._proto.extauthz.v1 import admin_pb2, admin_pb2_grpc
from extauthz.login.mfa.account import FactorAdmin
from extauthz.login.mfa.factors import FACTOR_STORE_ERRORS, Factor
from extauthz.login.mfa.recovery import RecoveryKind
from extauthz.login.users.records import validate_name
from extauthz.server.admin import AdminGuard, CallContext, _call, _timestamp

T = TypeVar("T")


def factor_message(factor: Factor) -> admin_pb2.Factor:
    """The factor as the admin API shows it: never its secret or digests."""
    message = admin_pb2.Factor(
        id=factor.id, kind=factor.kind, confirmed=factor.confirmed,
        created_at=_timestamp(factor.created_at), codes_left=RecoveryKind.remaining(factor),
    )
    if factor.last_used_at is not None:
        message.last_used_at.CopyFrom(_timestamp(factor.last_used_at))
    return message


class FactorAdminServicer(admin_pb2_grpc.FactorAdminServicer):
    """``ListFactors``, ``ResetFactors``. Status codes: ``UNAUTHENTICATED``/
    ``PERMISSION_DENIED`` from the guard; ``INVALID_ARGUMENT`` for a bad user name;
    ``UNAVAILABLE`` when the factor store or the session store cannot answer."""

    def __init__(self, admin: FactorAdmin, guard: AdminGuard) -> None:
        self._admin = admin
        self._guard = guard

    async def _call(self, context: CallContext, fn: Callable[[], Awaitable[T]]) -> T:
        return await _call(context, self._guard, fn, unavailable=FACTOR_STORE_ERRORS,
                           what="factor or session store")

    async def ListFactors(
        self, request: admin_pb2.ListFactorsRequest, context: CallContext
    ) -> admin_pb2.ListFactorsResponse:
        async def run() -> admin_pb2.ListFactorsResponse:
            factors = await self._admin.list(validate_name(request.user))
            return admin_pb2.ListFactorsResponse(factors=[factor_message(f) for f in factors])

        return await self._call(context, run)

    async def ResetFactors(
        self, request: admin_pb2.ResetFactorsRequest, context: CallContext
    ) -> admin_pb2.ResetFactorsResponse:
        async def run() -> admin_pb2.ResetFactorsResponse:
            removed, revoked = await self._admin.reset(validate_name(request.user))
            return admin_pb2.ResetFactorsResponse(
                factors_removed=removed, sessions_revoked=revoked
            )

        return await self._call(context, run)


def add_factor_admin(server: grpc.aio.Server, servicer: FactorAdminServicer) -> str:
    """Register ``servicer`` on ``server``; returns the service's full name (for reflection)."""
    admin_pb2_grpc.add_FactorAdminServicer_to_server(servicer, server)
    return str(admin_pb2.DESCRIPTOR.services_by_name["FactorAdmin"].full_name)
