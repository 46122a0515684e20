"""A real ``extauthz serve`` from start to exit: a taken listen address stops start-up, SIGTERM
drains at once (``NOT_SERVING``, no new Checks) and the process ends within
``server.shutdown_grace_seconds`` plus the shutdown margin whatever Redis does (down, hanging,
slow, reset), with every in-flight Check answered.

Redis is reached through a :class:`~tests.support.tcp_proxy.TcpProxy`. The fault runs are
random; ``EXTAUTHZ_TEST_SEED`` repeats one (the seed is in the failure message).
"""

from __future__ import annotations

import os
import queue
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from envoy.service.auth.v3 import external_auth_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from extauthz._proto.extauthz.v1 import admin_pb2, admin_pb2_grpc
from extauthz.keys.keyring import generate_key
from extauthz.server.shutdown import MARGIN_SECONDS
from harness.extauthz import write_admin_token
from tests.fixtures.core import bearer_request
from tests.support import ManagedProcess, RedisServer, free_port, grpc_health_serving
from tests.support.tcp_proxy import TcpProxy

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
EXIT_SLACK_SECONDS = 1.5  # the kernel reaping the process on a busy 2-core machine


@dataclass
class Node:
    """One ``python -m extauthz serve`` with its own config file."""

    proc: ManagedProcess
    grpc_port: int
    http_port: int
    grace: float

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def bound(self) -> float:
        """Seconds from SIGTERM to the exit, at most."""
        return self.grace + MARGIN_SECONDS + EXIT_SLACK_SECONDS

    def sigterm(self) -> float:
        """SIGTERM; return the monotonic time it was sent."""
        assert self.proc.pid is not None
        sent = time.monotonic()
        os.kill(self.proc.pid, signal.SIGTERM)
        return sent

    def exit_within_bound(self, sent: float) -> int:
        try:
            status = self.proc.wait(max(self.bound - (time.monotonic() - sent), 0.1))
        except subprocess.TimeoutExpired:
            pytest.fail(f"still running {self.bound:.1f}s after SIGTERM\n{self.proc.tail(60)}")
        assert status is not None
        return status


def write_config(
    directory: Path, grpc_port: int, http_port: int, *, store: str = "", grace: float = 2.0,
    extra: str = "",
) -> Path:  # fmt: skip
    keys = directory / "keys"
    if not keys.exists():
        generate_key(keys)
    token = directory / "admin-token"
    if not token.exists():
        write_admin_token(token)
    store = store or '[store]\nstrategy = "sticky"\nbackend = "memory"\n'
    config = directory / f"extauthz-{grpc_port}.toml"
    config.write_text(
        f'[server]\ngrpc_listen = "127.0.0.1:{grpc_port}"\n'
        f'http_listen = "127.0.0.1:{http_port}"\nnode_id = "node-{grpc_port}"\n'
        f"shutdown_grace_seconds = {grace}\n{extra}\n{store}\n"
        f'[jwt]\nkeys_dir = "{keys}"\n[admin]\ntoken_file = "{token}"\n'
    )
    return config


def serve_argv(config: Path) -> list[str]:
    return [sys.executable, "-m", "extauthz", "serve", "--config", str(config)]


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("EXTAUTHZ_")}


def start_node(
    directory: Path, *, store: str = "", grace: float = 2.0, extra: str = "",
    grpc_port: int | None = None,
) -> Node:  # fmt: skip
    grpc_port = grpc_port or free_port()
    http_port = free_port()
    config = write_config(directory, grpc_port, http_port, store=store, grace=grace, extra=extra)
    proc = ManagedProcess(f"serve-{grpc_port}", serve_argv(config), directory,
                          env=clean_env(), cwd=directory, ready_port=grpc_port)  # fmt: skip
    proc.start()
    proc.wait_until(lambda: grpc_health_serving(grpc_port), 20, "SERVING")
    return Node(proc, grpc_port, http_port, grace)


def redis_store(
    url: str, *, timeout: float = 0.5, cache: bool = True, check_budget_ms: int = 400
) -> str:
    prefix = f"lifecycle-{uuid.uuid4().hex[:8]}:"
    return (
        f'[store]\nstrategy = "central"\nbackend = "redis"\nredis_url = "{url}"\n'
        f'key_prefix = "{prefix}"\ntimeout_seconds = {timeout}\n'
        f"check_budget_ms = {check_budget_ms}\n"
        f"[cache]\nenabled = {'true' if cache else 'false'}\n"
    )


def create_session(channel: grpc.Channel, directory: Path) -> str:
    """A session for alice, created with the admin token :func:`write_config` wrote."""
    token = (directory / "admin-token").read_text().strip()
    reply = admin_pb2_grpc.SessionAdminStub(channel).CreateSession(
        admin_pb2.CreateSessionRequest(sub="alice", scopes=["read"]),
        metadata=(("authorization", f"Bearer {token}"),),
        timeout=10,
    )
    return str(reply.access_token)


@pytest.fixture
def proxy(redis_server: RedisServer) -> Iterator[TcpProxy]:
    with TcpProxy(redis_server.address) as relay:
        yield relay


@pytest.fixture
def nodes() -> Iterator[list[Node]]:
    started: list[Node] = []
    yield started
    for node in started:
        node.proc.kill9()


# -- two servers on one port ----------------------------------------------------------------


@pytest.mark.e2e
@pytest.mark.parametrize("key", ["server.grpc_listen", "server.http_listen"])
def test_a_taken_listen_address_stops_start_up_with_an_error_naming_it(
    tmp_path: Path, nodes: list[Node], key: str
) -> None:
    first = start_node(tmp_path)
    nodes.append(first)
    if key == "server.grpc_listen":
        ports, taken = (first.grpc_port, free_port()), first.grpc_port
    else:
        ports, taken = (free_port(), first.http_port), first.http_port
    config = write_config(tmp_path, *ports)
    try:
        second = subprocess.run(serve_argv(config), capture_output=True, text=True, timeout=30,
                                env=clean_env(), cwd=tmp_path, check=False)  # fmt: skip
    except subprocess.TimeoutExpired:
        pytest.fail(f"a second serve on {key} = 127.0.0.1:{taken} kept running")
    assert second.returncode == 2, second.stderr
    assert f"{key}: cannot listen on 127.0.0.1:{taken}" in second.stderr
    assert "Traceback" not in second.stderr
    assert grpc_health_serving(first.grpc_port)  # the running node is untouched


# -- draining -------------------------------------------------------------------------------


@pytest.mark.e2e
def test_sigterm_reports_not_serving_and_refuses_new_checks_before_it_talks_to_redis(
    tmp_path: Path, proxy: TcpProxy, nodes: list[Node]
) -> None:
    """Redis hangs from just before SIGTERM: whatever the node still had to say to it, the
    health Watch turns NOT_SERVING and a new Check is refused at once, while the Check in
    flight is still waiting for Redis; that one is answered once Redis answers again (Redis's
    timeout and the Check's store budget are far above the test's pauses, so a slow machine
    cannot end the wait early; Envoy's timeout to match)."""
    node = start_node(
        tmp_path, grace=5.0,
        store=redis_store(proxy.url, timeout=10.0, cache=False, check_budget_ms=15000),
        extra="health_check_interval_seconds = 5\next_authz_timeout_ms = 16000",
    )  # fmt: skip
    nodes.append(node)
    channel = grpc.insecure_channel(node.target)
    token = create_session(channel, tmp_path)
    authz = external_auth_pb2_grpc.AuthorizationStub(channel)
    health = health_pb2_grpc.HealthStub(channel)
    statuses: queue.Queue[int] = queue.Queue()

    def watch() -> None:
        try:
            for reply in health.Watch(health_pb2.HealthCheckRequest(service=""), timeout=30):
                statuses.put(reply.status)
        except grpc.RpcError:
            statuses.put(-1)

    threading.Thread(target=watch, daemon=True).start()
    assert statuses.get(timeout=10) == SERVING

    proxy.freeze()
    in_flight = authz.Check.future(bearer_request(token), timeout=30)
    time.sleep(0.3)
    sent = node.sigterm()
    assert statuses.get(timeout=2) == NOT_SERVING, node.proc.tail(60)
    assert not in_flight.done()  # still waiting for Redis: NOT_SERVING came first
    with pytest.raises(grpc.RpcError) as refused:
        authz.Check(bearer_request(token), timeout=2)
    # refused at once, not waiting on Redis: UNAVAILABLE, or CANCELLED when it raced the GOAWAY
    assert refused.value.code() in {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED}
    assert not in_flight.done()

    proxy.thaw()
    reply = in_flight.result(timeout=node.bound)
    assert reply.status.code == 0 and reply.HasField("ok_response")
    assert node.exit_within_bound(sent) == 0
    channel.close()


# -- SIGTERM under Redis faults ---------------------------------------------------------------

FAULTS = ("none", "freeze", "down", "slow", "reset", "freeze-later")


def apply_fault(proxy: TcpProxy, fault: str, rng: random.Random) -> None:
    if fault == "freeze":
        proxy.freeze()
    elif fault == "down":
        proxy.cut()
    elif fault == "slow":
        proxy.set_latency(rng.uniform(0.2, 1.0))
    elif fault == "reset":
        proxy.reset()
    elif fault == "freeze-later":  # on the proxy's loop: heal() cancels it if still pending
        proxy.freeze_later(rng.uniform(0.05, 0.5))


def heal(proxy: TcpProxy) -> None:
    proxy.heal()
    proxy.restore()


@pytest.mark.e2e
def test_sigterm_under_random_redis_faults_exits_within_the_bound(
    tmp_path: Path, proxy: TcpProxy, nodes: list[Node]
) -> None:
    seed = int(os.environ.get("EXTAUTHZ_TEST_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    faults = [FAULTS[i % len(FAULTS)] for i in range(10)]
    rng.shuffle(faults)
    store = redis_store(proxy.url)
    token = ""
    for run, fault in enumerate(faults):
        what = f"run {run} fault {fault} (EXTAUTHZ_TEST_SEED={seed})"
        heal(proxy)
        node = start_node(tmp_path / f"run-{run}", store=store, grace=2.0)
        nodes.append(node)
        channel = grpc.insecure_channel(node.target)
        token = token or create_session(channel, tmp_path / f"run-{run}")
        authz = external_auth_pb2_grpc.AuthorizationStub(channel)
        assert authz.Check(bearer_request(token), timeout=10).status.code == 0, what

        apply_fault(proxy, fault, rng)
        in_flight = [authz.Check.future(bearer_request(token), timeout=60) for _ in range(4)]
        time.sleep(rng.uniform(0.0, 0.3))
        sent = node.sigterm()
        status = node.exit_within_bound(sent)
        assert status == 0, f"{what}: exit status {status}\n{node.proc.tail(60)}"
        for call in in_flight:
            assert call.done(), f"{what}: a Check in flight got no answer"
            if call.exception() is None:
                assert call.result().status.code == 0, what
            else:
                # from the server (the store did not answer), not a connection cut by the exit
                answer = f"{call.code()}: {call.details()}"
                assert answer == "StatusCode.UNAVAILABLE: session store unavailable", (
                    f"{what}: {answer}\n{node.proc.tail()}"
                )
        channel.close()


def _bound_by_someone(port: int) -> bool:
    """Whether another socket holds 127.0.0.1:``port``, listening or not (this probe does not
    set ``SO_REUSEADDR``, so any bound socket conflicts)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


@pytest.mark.e2e
@pytest.mark.parametrize("fault", ["freeze", "half_open"])
def test_sigterm_during_start_up_against_a_redis_that_does_not_answer_exits_within_the_bound(
    tmp_path: Path, proxy: TcpProxy, nodes: list[Node], fault: str
) -> None:
    """Start-up waits for Redis (registering the node, measuring the clock); SIGTERM then
    comes before the node serves. The bound runs from the signal, not from the end of a
    start-up that takes as long as Redis's timeouts make it."""
    getattr(proxy, fault)()
    grpc_port, http_port = free_port(), free_port()
    config = write_config(tmp_path, grpc_port, http_port, store=redis_store(proxy.url), grace=1.0)
    proc = ManagedProcess(f"serve-{grpc_port}", serve_argv(config), tmp_path,
                          env=clean_env(), cwd=tmp_path)  # fmt: skip
    proc.start()
    node = Node(proc, grpc_port, http_port, 1.0)
    nodes.append(node)
    # the HTTP address is bound after the signal handlers are set and before the node's
    # components start (and meet the Redis that does not answer)
    proc.wait_until(lambda: _bound_by_someone(http_port), 20, "HTTP address bound")
    time.sleep(0.2)
    assert not grpc_health_serving(grpc_port)  # still starting
    sent = node.sigterm()
    node.exit_within_bound(sent)
