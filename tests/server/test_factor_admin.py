"""``extauthz.v1.FactorAdmin`` over a real gRPC socket, and ``extauthz users mfa list|reset``
through it: the admin token guards every call, lists carry no secret or digest, a reset
removes the factors and revokes every session of the user (and nobody else's)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from extauthz import cli
from extauthz._proto.extauthz.v1 import admin_pb2, admin_pb2_grpc
from extauthz.login.mfa.account import FactorAdmin
from extauthz.login.mfa.factors import MemoryFactorStore
from extauthz.login.mfa.recovery import RecoveryKind
from extauthz.login.mfa.sealing import SecretBox
from extauthz.login.mfa.totp import TotpKind
from extauthz.server.admin import AdminGuard, SessionAdminServicer, StatusServicer
from extauthz.server.factor_admin import FactorAdminServicer
from extauthz.server.grpc_server import build_server
from extauthz.server.health import HealthServicer
from tests.fixtures.core import ADMIN_METADATA, ADMIN_TOKEN, Harness, build_harness
from tests.support import free_port


@dataclass
class Node:
    harness: Harness
    factors: MemoryFactorStore
    target: str
    stub: admin_pb2_grpc.FactorAdminStub
    secret: str


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[Node]:
    harness = build_harness(tmp_path)
    factors = MemoryFactorStore()
    totp, secret = TotpKind(SecretBox()).new_factor("alice", harness.clock())
    await factors.put("alice", totp)
    await factors.put("alice", RecoveryKind().new_factor("alice", harness.clock())[0])
    guard = AdminGuard(ADMIN_TOKEN)
    server, port = build_server(
        f"127.0.0.1:{free_port()}",
        harness.authorizer,
        SessionAdminServicer(harness.sessions, guard),
        StatusServicer(harness.sessions, harness.keyring, strategy="sticky", node_id="n1"),
        HealthServicer(),
        factor_admin=FactorAdminServicer(FactorAdmin(factors, harness.store), guard),
    )
    await server.start()
    target = f"127.0.0.1:{port}"
    try:
        async with grpc.aio.insecure_channel(target) as channel:
            yield Node(harness, factors, target, admin_pb2_grpc.FactorAdminStub(channel), secret)
    finally:
        await server.stop(0)


async def test_every_call_needs_the_admin_token(node: Node) -> None:
    for call in (node.stub.ListFactors(admin_pb2.ListFactorsRequest(user="alice"), timeout=10),
                 node.stub.ResetFactors(admin_pb2.ResetFactorsRequest(user="alice"), timeout=10)):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await call
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert len(await node.factors.factors("alice")) == 2


async def test_list_shows_factors_without_secrets_and_reset_revokes_the_users_sessions(
    node: Node,
) -> None:
    listed = await node.stub.ListFactors(admin_pb2.ListFactorsRequest(user="alice"),
                                         metadata=ADMIN_METADATA, timeout=10)
    by_kind = {f.kind: f for f in listed.factors}  # created in the same second: any order
    assert sorted(by_kind) == ["recovery", "totp"] and len(listed.factors) == 2
    assert not by_kind["totp"].confirmed and by_kind["recovery"].confirmed
    assert by_kind["recovery"].codes_left == 10 and not by_kind["totp"].HasField("last_used_at")
    assert node.secret not in str(listed) and "digest" not in str(listed)
    a1, _ = await node.harness.login("alice")
    a2, _ = await node.harness.login("alice")
    b, _ = await node.harness.login("bob")
    reset = await node.stub.ResetFactors(admin_pb2.ResetFactorsRequest(user="alice"),
                                         metadata=ADMIN_METADATA, timeout=10)
    assert (reset.factors_removed, reset.sessions_revoked) == (2, 2)
    assert await node.factors.factors("alice") == []
    for token in (a1, a2):
        assert await node.harness.sessions.was_revoked(token)
    assert (await node.harness.sessions.lookup(b)).sub == "bob"
    with pytest.raises(grpc.aio.AioRpcError) as bad:
        await node.stub.ListFactors(admin_pb2.ListFactorsRequest(user="no/such"),
                                    metadata=ADMIN_METADATA, timeout=10)
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_the_users_mfa_cli_lists_and_resets_through_the_admin_api(
    node: Node, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    token_file = tmp_path / "admin-token"
    token_file.write_text(ADMIN_TOKEN + "\n")
    token_file.chmod(0o600)
    options = ["--target", node.target, "--admin-token-file", str(token_file)]
    token, _ = await node.harness.login("alice")
    status = await asyncio.to_thread(cli.main, ["users", "mfa", "list", "alice", *options])
    out = capsys.readouterr().out
    assert status == 0 and "\ttotp\tconfirmed=false" in out and "codes_left=10" in out
    assert node.secret not in out
    status = await asyncio.to_thread(cli.main, ["users", "mfa", "reset", "alice", *options])
    assert status == 0
    assert "reset alice: factors_removed=2 sessions_revoked=1" in capsys.readouterr().out
    assert await node.harness.sessions.was_revoked(token)
    status = await asyncio.to_thread(cli.main, ["users", "mfa", "list", "alice",
                                                "--target", node.target])
    assert status == 1 and "UNAUTHENTICATED" in capsys.readouterr().err
