"""A whole stack for the login flow: its own Redis, a user file made with ``extauthz users``,
small brute-force limits, Envoy running the repository's front proxy; plus a tiny HTTP client
that can pick its loopback source address (rate limits count per client address)."""

from __future__ import annotations

import http.client
import json
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any

from harness.extauthz import add_user
from harness.ports import LOOPBACK
from harness.process import ProcessError
from harness.redis import RedisServer
from harness.stack import Stack, start_stack

COOKIE_NAME = "extauthz_session"  # demo/extauthz.toml
# the users every test may sign in as: name -> (password, roles, scopes)
USERS: dict[str, tuple[str, list[str], list[str]]] = {
    "alice": ("alice-password-1", ["admin"], ["read", "write"]),
    "bob": ("bob-password-2", [], ["read"]),
    "carol": ("carol-password-3", [], ["read"]),
    "dave": ("dave-password-4", [], []),
    "erin": ("erin-password-5", [], []),
}
# small limits so that the tests reach them quickly; each test that provokes a limit uses its
# own loopback source address (127.0.0.x), so one test's failures do not throttle another
LIMITS = {
    "EXTAUTHZ_RATELIMIT_LOGIN_USER_LIMIT": "3",
    "EXTAUTHZ_RATELIMIT_LOGIN_USER_WINDOW_SECONDS": "3",
    "EXTAUTHZ_RATELIMIT_LOGIN_ADDR_LIMIT": "30",
    "EXTAUTHZ_RATELIMIT_LOGIN_ADDR_WINDOW_SECONDS": "60",
    "EXTAUTHZ_RATELIMIT_CHECK_ADDR_LIMIT": "10",
    "EXTAUTHZ_RATELIMIT_CHECK_ADDR_WINDOW_SECONDS": "60",
}


@dataclass
class AuthStack:
    stack: Stack
    redis: RedisServer
    users_file: Path

    @property
    def base_url(self) -> str:
        return self.stack.base_url

    @property
    def origin(self) -> str:
        return self.stack.base_url

    def client(self, source: str = LOOPBACK) -> Client:
        return Client(self.stack.ports.listener, source)

    def stop(self) -> None:
        self.stack.stop()
        self.redis.stop()


def start_auth_stack(envoy_binary: str, work_dir: Path) -> AuthStack:
    work_dir.mkdir(parents=True, exist_ok=True)
    redis = RedisServer(work_dir, name="redis-auth").start()
    try:
        users_file = work_dir / "users.json"
        for name, (password, roles, scopes) in USERS.items():
            add_user(users_file, name, password, roles, scopes)
        env = {"EXTAUTHZ_USERS_FILE": str(users_file), **LIMITS}
        stack = start_stack(envoy_binary, work_dir, redis_url=redis.url, env=env)
    except BaseException:
        redis.stop()
        raise
    return AuthStack(stack, redis, users_file)


@dataclass
class Response:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key.lower() == name.lower():
                return value
        return None

    def set_cookies(self) -> dict[str, str]:
        """``name -> raw Set-Cookie value`` of every cookie this response sets."""
        out = {}
        for key, value in self.headers:
            if key.lower() == "set-cookie":
                out[value.split("=", 1)[0]] = value
        return out

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


@dataclass
class Client:
    """A curl-like client: one request per connection, from ``source`` (a loopback address),
    with a cookie jar that stores what ``Set-Cookie`` says (Max-Age=0 deletes)."""

    port: int
    source: str = LOOPBACK
    cookies: dict[str, str] = field(default_factory=dict)

    def request(
        self,
        method: str,
        path: str,
        *,
        headers: dict[str, str] | None = None,
        body: bytes | str | None = None,
        json_body: Any = None,
        form: dict[str, str] | None = None,
        send_cookies: bool = True,
    ) -> Response:
        from urllib.parse import urlencode

        all_headers = dict(headers or {})
        if json_body is not None:
            body = json.dumps(json_body)
            all_headers.setdefault("Content-Type", "application/json")
        if form is not None:
            body = urlencode(form)
            all_headers.setdefault("Content-Type", "application/x-www-form-urlencoded")
        if send_cookies and self.cookies and "Cookie" not in all_headers:
            all_headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        conn = http.client.HTTPConnection(LOOPBACK, self.port, timeout=10,
                                          source_address=(self.source, 0))  # fmt: skip
        try:
            conn.request(method, path, body=body, headers=all_headers)
            resp = conn.getresponse()
            result = Response(resp.status, resp.getheaders(), resp.read())
        finally:
            conn.close()
        for name, raw in result.set_cookies().items():
            parsed = SimpleCookie()
            parsed.load(raw)
            morsel = parsed[name]
            if morsel["max-age"] == "0" or not morsel.value:
                self.cookies.pop(name, None)
            else:
                self.cookies[name] = morsel.value
        return result

    def login(self, name: str, password: str | None = None) -> Response:
        return self.request("POST", "/auth/login", json_body={
            "username": name, "password": password or USERS[name][0]})  # fmt: skip


def redis_config_set(redis: RedisServer, key: str, value: str) -> None:
    """``CONFIG SET`` on a test Redis (raw RESP, no client library)."""
    import socket

    parts = [b"CONFIG", b"SET", key.encode(), value.encode()]
    command = b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%s\r\n" % (len(p), p) for p in parts)
    with socket.create_connection((LOOPBACK, redis.port), timeout=2) as sock:
        sock.sendall(command)
        reply = sock.recv(64)
    if not reply.startswith(b"+OK"):
        raise ProcessError(f"CONFIG SET {key} {value}: {reply!r}")


__all__ = [
    "COOKIE_NAME",
    "USERS",
    "AuthStack",
    "Client",
    "Response",
    "redis_config_set",
    "start_auth_stack",
]
