"""API keys end to end: the CLI against a real extauthz (Redis store, session cache on), the
repository's envoy/front-proxy.yaml with one more route that refuses API keys
(``credentials: session oauth``), the echo upstream verifying the JWT.

A key is shown once (the CLI's stdout), works as ``x-api-key`` and as ``Authorization: Bearer``,
never reaches the upstream, is listed with its last use, is refused at once when revoked and
after its expiry, is refused in the session cookie and on the route that refuses keys; no log
line of any process holds it.
"""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from extauthz import tokens
from tests.support import ROUTES, ProcessError, RedisServer, Stack, start_stack

pytestmark = pytest.mark.e2e

COOKIE = "extauthz_session"
ACCOUNT = "/account/"  # the route that refuses API keys


def with_account_route(out: Path) -> Path:
    """The route table of envoy/front-proxy.yaml plus a route for ``/account/`` (first) whose
    ``context_extensions`` accept login sessions and applications' tokens, not API keys."""
    account = f"""[[routes]]
prefix = "{ACCOUNT}"
context_extensions = {{ client = "api", credentials = "session oauth" }}

"""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(account + ROUTES["front"].read_text())
    return out


@pytest.fixture(scope="module")
def stack(
    envoy_binary: str, redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    work = tmp_path_factory.mktemp("apikeys-stack")
    started = start_stack(
        envoy_binary,
        work,
        redis_url=redis_server.url,
        envoy_routes=with_account_route(work / "front-proxy-account-routes.toml"),
        # its own keys in the shared Redis; every log line written, debug included
        env={"EXTAUTHZ_STORE_KEY_PREFIX": "apikeys-e2e:", "EXTAUTHZ_LOG_LEVEL": "debug"},
    )
    yield started
    started.stop()


def request(
    stack: Stack, path: str, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, Any]]:
    conn = http.client.HTTPConnection("127.0.0.1", stack.ports.listener, timeout=10)
    try:
        conn.request("GET", path, headers={"accept": "application/json", **(headers or {})})
        resp = conn.getresponse()
        body = resp.read()
    finally:
        conn.close()
    return resp.status, json.loads(body) if body else {}


def cli(stack: Stack, *args: str) -> str:
    return stack.extauthz.cli(*args, "--target", stack.extauthz.grpc_target)


def create_key(stack: Stack, sub: str, *args: str) -> str:
    key = cli(stack, "apikeys", "create", "--sub", sub, "--name", f"{sub} key", *args)
    assert tokens.has_token_shape(key, tokens.API_KEY_PREFIX), "stdout holds only the key"
    return key


def listed(stack: Stack, sub: str) -> list[dict[str, Any]]:
    keys: list[dict[str, Any]] = json.loads(cli(stack, "apikeys", "list", "--sub", sub)).get(
        "keys", []
    )
    return keys


def test_a_key_is_created_used_listed_refused_where_the_route_says_and_revoked(
    stack: Stack,
) -> None:
    key = create_key(stack, "svc-reports", "--scope", "reports:read", "--expires", "30d")
    [entry] = listed(stack, "svc-reports")
    assert entry["name"] == "svc-reports key" and entry["scopes"] == ["reports:read"]
    assert "lastUsedAt" not in entry
    assert key not in json.dumps(entry)

    status, echoed = request(stack, "/reports", {"x-api-key": key})
    assert status == 200, echoed
    assert echoed["jwt"]["verified"] is True, echoed["jwt"]["error"]
    claims = echoed["jwt"]["claims"]
    assert claims["auth_method"] == "api_key"
    assert claims["key_id"] == entry["keyId"] == claims["sid"]
    assert claims["sub"] == "svc-reports" and claims["scope"] == "reports:read"
    assert "x-api-key" not in echoed["headers"], "the key's header reached the upstream"
    assert key not in json.dumps(echoed)

    status, echoed = request(stack, "/reports", {"authorization": f"Bearer {key}"})
    assert status == 200, echoed
    assert echoed["jwt"]["claims"]["key_id"] == entry["keyId"]
    assert key not in json.dumps(echoed)

    [entry] = listed(stack, "svc-reports")
    assert "lastUsedAt" in entry  # written at the first use

    # the route that refuses API keys: 403 with the reason, for both ways of sending it
    for headers in ({"x-api-key": key}, {"authorization": f"Bearer {key}"}):
        status, body = request(stack, f"{ACCOUNT}settings", headers)
        assert (status, body["reason"]) == (403, "credential_kind_refused")
    login = cli(stack, "sessions", "create", "--sub", "alice")
    status, echoed = request(stack, f"{ACCOUNT}settings", {"authorization": f"Bearer {login}"})
    assert status == 200 and echoed["jwt"]["claims"]["auth_method"] == "session"

    assert cli(stack, "apikeys", "revoke", f"--id={entry['keyId']}") == "revoked"
    status, body = request(stack, "/reports", {"x-api-key": key})
    assert (status, body["reason"]) == (401, "revoked_session")
    assert listed(stack, "svc-reports") == []


def test_an_expired_key_is_refused(stack: Stack) -> None:
    key = create_key(stack, "svc-short", "--expires", "2s")
    status, _ = request(stack, "/short", {"x-api-key": key})
    assert status == 200
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        status, body = request(stack, "/short", {"x-api-key": key})
        if status != 200:
            break
        time.sleep(0.25)
    assert status == 401
    assert body["reason"] in ("session_expired", "unknown_session")


def test_a_lifetime_over_the_maximum_is_refused_by_the_cli(stack: Stack) -> None:
    with pytest.raises(ProcessError) as refused:
        cli(stack, "apikeys", "create", "--sub", "svc-long", "--name", "n", "--expires", "366d")
    assert "INVALID_ARGUMENT" in str(refused.value)
    assert "api_keys.max_lifetime_days" in str(refused.value)
    assert listed(stack, "svc-long") == []


def test_a_key_in_the_session_cookie_is_refused(stack: Stack) -> None:
    key = create_key(stack, "svc-cookie")
    status, body = request(stack, "/cookie", {"cookie": f"{COOKIE}={key}"})
    assert (status, body["reason"]) == (401, "bearer_only_credential")


def test_no_log_line_of_any_process_holds_a_key(stack: Stack) -> None:
    key = create_key(stack, "svc-logs")
    key_id = listed(stack, "svc-logs")[0]["keyId"]
    uses = [
        ("/logs/header", {"x-api-key": key}),
        ("/logs/bearer", {"authorization": f"Bearer {key}"}),
        (f"{ACCOUNT}logs", {"x-api-key": key}),
        ("/logs/cookie", {"cookie": f"{COOKIE}={key}"}),
        (f"/logs/query?api_key={key}", {}),
        ("/logs/typo", {"x-api-key": key[:-1] + ("A" if key[-1] != "A" else "B")}),
        ("/logs/both", {"x-api-key": key, "authorization": "Bearer " + tokens.mint_token()}),
    ]
    for target, headers in uses:
        request(stack, target, headers)
    assert cli(stack, "apikeys", "revoke", f"--id={key_id}") == "revoked"
    request(stack, "/logs/revoked", {"x-api-key": key})
    stack.envoy.wait_until(
        lambda: any(e.get("path") == "/logs/revoked" for e in stack.envoy.access_log()),
        5,
        "the access log line of the last request",
    )
    secret = key[len(tokens.API_KEY_PREFIX) :]
    logs = [p for proc in stack.processes() for p in (proc.stdout_path, proc.stderr_path)]
    debug_lines = stack.extauthz.stderr_path.read_text() + stack.extauthz.stdout_path.read_text()
    assert " DEBUG " in debug_lines, "extauthz did not log at debug level: the test sees too little"
    for path in logs:
        text = path.read_text(errors="replace")
        assert secret not in text, f"{path.name} holds the key"
        assert secret[:20] not in text, f"{path.name} holds part of the key"
