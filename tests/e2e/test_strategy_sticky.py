"""Strategy ``sticky``: three nodes, each with its own session store, behind a front Envoy that
pins users by consistent hashing on an affinity cookie it issues (envoy/sticky-front.yaml,
envoy/sidecar.yaml). Which node answered is read from the front Envoy's access log
(``upstream_host``); a 200 is itself proof of the right node, since only the node that
created a session has it.

After one node is killed (SIGKILL to its extauthz, upstream and sidecar), only that node's
users must log in again (401, never a 5xx), everyone else keeps their session; the test prints
the fraction.
"""

from __future__ import annotations

import http.client
import json
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.authz_client import AuthzClient
from tests.support.sticky import StickyCluster, StickyNode, start_sticky_cluster

pytestmark = pytest.mark.e2e

USERS = 30
REQUESTS_PER_USER = 5
AFFINITY_COOKIE = "extauthz_affinity"
SESSION_COOKIE = "extauthz_session"


@pytest.fixture
def cluster(envoy_binary: str, tmp_path: Path) -> Iterator[StickyCluster]:
    started = start_sticky_cluster(envoy_binary, tmp_path)
    yield started
    started.stop()


def _get(port: int, path: str, cookies: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
    headers = {"accept": "application/json"}
    if cookies:
        headers["cookie"] = "; ".join(f"{k}={v}" for k, v in cookies.items())
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path, headers=headers)
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def _issued_cookie(headers: dict[str, str]) -> str:
    """The affinity cookie value from ``Set-Cookie`` (exactly as Envoy wrote it)."""
    set_cookie = headers.get("set-cookie", "")
    name, _, rest = set_cookie.partition("=")
    assert name == AFFINITY_COOKIE, set_cookie
    return rest.split(";", 1)[0]


def _served_by(cluster: StickyCluster, path: str) -> str:
    """The sidecar address that answered the last request for ``path`` (front access log)."""
    found: list[dict[str, Any]] = []

    def logged() -> bool:
        found[:] = [e for e in cluster.front.access_log() if e.get("path") == path]
        return bool(found)

    cluster.front.wait_until(logged, 5, f"logging {path}")
    return str(found[-1]["upstream_host"])


async def _login(node: StickyNode, user: str) -> tuple[str, str]:
    """Stands in for the login page of the node the user is pinned to (the session lands in
    that node's store): ``(token, sid)``."""
    client = AuthzClient(node.extauthz.grpc_target, node.extauthz.admin_metadata)
    try:
        return await client.create_session(user)
    finally:
        await client.close()


def _wait_marked_unhealthy(cluster: StickyCluster, node: StickyNode, timeout: float = 10) -> float:
    t0 = time.monotonic()
    flag = f"{node.address}::health_flags::/failed_active_hc"

    def marked() -> bool:
        return flag in cluster.front.admin_get("/clusters")[1]

    cluster.front.wait_until(marked, timeout, f"marking {node.node_id} unhealthy")
    return time.monotonic() - t0


async def test_users_stick_to_one_node_and_a_lost_node_logs_out_only_its_users(
    cluster: StickyCluster,
) -> None:
    port = cluster.listener
    users: dict[str, dict[str, Any]] = {}
    for i in range(USERS):
        user = f"user-{i:02d}"
        status, headers, _ = _get(port, f"/whoami/{user}", {})
        assert status == 401  # no session yet, API client
        affinity = _issued_cookie(headers)
        node = cluster.node_at(_served_by(cluster, f"/whoami/{user}"))
        token, sid = await _login(node, user)
        users[user] = {"node": node, "sid": sid,
                       "cookies": {AFFINITY_COOKIE: affinity, SESSION_COOKIE: token}}  # fmt: skip

    per_node = Counter(u["node"].node_id for u in users.values())
    assert len(per_node) == 3, f"30 users should spread over all three nodes: {per_node}"

    # every request of a user reaches the node that holds the session
    for user, info in users.items():
        for k in range(REQUESTS_PER_USER):
            path = f"/data/{user}/{k}"
            status, _, body = _get(port, path, info["cookies"])
            assert status == 200, (user, status, body)
            echoed = json.loads(body)
            assert echoed["jwt"]["verified"] is True
            assert echoed["jwt"]["claims"]["sid"] == info["sid"]
        assert _served_by(cluster, f"/data/{user}/{REQUESTS_PER_USER - 1}") == info["node"].address

    victim = cluster.nodes[1]
    victim.kill9()
    marked_after = _wait_marked_unhealthy(cluster, victim)

    outcomes: Counter[str] = Counter()
    fallback: dict[str, StickyNode] = {}
    for user, info in users.items():
        path = f"/after/{user}"
        status, _, body = _get(port, path, info["cookies"])
        assert status < 500, (user, status, body)
        if info["node"] is victim:
            assert status == 401, (user, status, body)
            assert json.loads(body)["error"] == "invalid_token"
            fallback[user] = cluster.node_at(_served_by(cluster, path))
            assert fallback[user] is not victim
            outcomes["login again"] += 1
        else:
            assert status == 200, (user, status, body)
            assert json.loads(body)["jwt"]["claims"]["sid"] == info["sid"]
            outcomes["kept session"] += 1

    fraction = outcomes["login again"] / USERS
    print(
        f"\nsticky: {USERS} users over {dict(sorted(per_node.items()))}; killed "
        f"{victim.node_id} (marked unhealthy after {marked_after:.1f}s): "
        f"{outcomes['login again']}/{USERS} = {fraction:.2f} had to log in again, "
        f"{outcomes['kept session']} kept their session, 0 got a 5xx"
    )
    assert outcomes["login again"] == per_node[victim.node_id]

    # the victim's users log in again where they now land, and stay there
    for user, node in fallback.items():
        token, sid = await _login(node, user)
        users[user]["cookies"][SESSION_COOKIE] = token
        for k in range(3):
            status, _, body = _get(port, f"/again/{user}/{k}", users[user]["cookies"])
            assert status == 200, (user, status, body)
            assert json.loads(body)["jwt"]["claims"]["sid"] == sid
