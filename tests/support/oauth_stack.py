"""The OAuth 2.0 stack of tests/e2e/test_oauth_flow.py: two extauthz nodes on one Redis (the
session cache on, as in production), each behind its own Envoy running the repository's front
proxy, a users file, registered applications; plus the pieces of a third-party application
that are not the OAuth client library itself: the small HTTP listener its ``redirect_uri``
points at, and a user agent that signs in and answers the consent form without a browser.
"""

from __future__ import annotations

import html.parser
import http.server
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from harness.extauthz import add_user, extauthz_cli
from harness.ports import LOOPBACK
from harness.process import ManagedProcess, ProcessError
from harness.redis import RedisServer
from harness.stack import Stack, start_stack
from tests.support.auth_stack import Client, Response

# name -> (password, roles, scopes)
USERS: dict[str, tuple[str, list[str], list[str]]] = {
    "alice": ("alice-password-1", ["admin"], ["read", "write"]),
    "bob": ("bob-password-2", [], ["read", "write"]),
}
CALLBACK_PATH = "/callback"


class CallbackListener:
    """The application's ``redirect_uri``: an HTTP listener on a free loopback port that records
    every request (path and query) it gets and answers a small page."""

    def __init__(self) -> None:
        self.requests: list[str] = []
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        listener = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                with listener._arrived:
                    listener.requests.append(self.path)
                    listener._arrived.notify_all()
                body = b"<!doctype html><title>done</title><p id=done>done</p>"
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass  # the query carries codes: never printed

        self._server = http.server.ThreadingHTTPServer((LOOPBACK, 0), Handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def redirect_uri(self) -> str:
        return f"http://{LOOPBACK}:{self.port}{CALLBACK_PATH}"

    def wait_for(self, count: int, timeout: float = 15.0) -> str:
        """The ``count``-th request's full URL (1-based); :raises TimeoutError: none came."""
        deadline = time.monotonic() + timeout
        with self._arrived:
            while len(self.requests) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"the redirect_uri got {len(self.requests)} of {count}")
                self._arrived.wait(left)
            return f"http://{LOOPBACK}:{self.port}{self.requests[count - 1]}"

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@dataclass(frozen=True)
class RegisteredClient:
    client_id: str
    secret: str | None
    name: str
    redirect_uris: tuple[str, ...]
    scopes: tuple[str, ...]


@dataclass
class OAuthStack:
    redis: RedisServer
    nodes: list[Stack]
    users_file: Path
    callback: CallbackListener
    # every credential a test saw (tokens, codes, client secrets): none may appear in a log
    secrets: set[str] = field(default_factory=set)

    @property
    def base_url(self) -> str:
        return self.nodes[0].base_url

    def url(self, path: str, node: int = 0) -> str:
        return self.nodes[node].base_url + path

    def client(self, node: int = 0) -> Client:
        return Client(self.nodes[node].ports.listener)

    def remember(self, *values: object) -> None:
        """Note credentials (strings; other values are ignored) for the log check."""
        self.secrets.update(v for v in values if isinstance(v, str) and v)

    def processes(self) -> Iterator[ManagedProcess]:
        yield self.redis
        for node in self.nodes:
            yield from node.processes()

    def cli(self, *args: str) -> str:
        """An ``extauthz`` subcommand with node 1's environment (its Redis, keys, admin token)."""
        return self.nodes[0].extauthz.cli(*args)

    def stop(self) -> None:
        for node in reversed(self.nodes):
            node.stop()
        self.redis.stop()
        self.callback.stop()


def start_oauth_stack(
    envoy_binary: str, work_dir: Path, env: dict[str, str] | None = None, nodes: int = 2
) -> OAuthStack:
    """Redis, the users of :data:`USERS`, and ``nodes`` stacks (extauthz + echo upstream +
    Envoy) sharing that Redis and one signing key; ``env``: more ``EXTAUTHZ_*`` settings."""
    work_dir.mkdir(parents=True, exist_ok=True)
    callback = CallbackListener()
    redis = RedisServer(work_dir, name="redis-oauth")
    started: list[Stack] = []
    try:
        redis.start()
        users_file = work_dir / "users.json"
        for name, (password, roles, scopes) in USERS.items():
            add_user(users_file, name, password, roles, scopes)
        for n in range(1, nodes + 1):
            node_env = {
                "EXTAUTHZ_USERS_FILE": str(users_file),
                "EXTAUTHZ_OAUTH_ENABLED": "true",
                # the registered applications, shared by every node
                "EXTAUTHZ_OAUTH_CLIENTS_BACKEND": "redis",
                "EXTAUTHZ_SERVER_NODE_ID": f"oauth-{n}",
                **(env or {}),
            }
            started.append(start_stack(
                envoy_binary, work_dir / f"node-{n}", redis_url=redis.url, env=node_env,
                keys_dir=work_dir / "keys", log_dir=work_dir / "logs",
                name_prefix=f"node{n}-", envoy_name=f"node{n}-envoy",
            ))  # fmt: skip
    except BaseException:
        for stack in reversed(started):
            stack.stop()
        redis.stop()
        callback.stop()
        raise
    return OAuthStack(redis, started, users_file, callback)


# -- a user agent without a browser ---------------------------------------------------------------


class _FormParser(html.parser.HTMLParser):
    """The fields of the first ``<form>``: its inputs (hidden ones included) and buttons."""

    def __init__(self) -> None:
        super().__init__()
        self.action: str | None = None
        self.method = "get"
        self.fields: list[tuple[str, str]] = []
        self.buttons: list[tuple[str, str]] = []
        self._forms = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form":
            self._forms += 1
            if self._forms == 1:
                self.action, self.method = a.get("action", ""), a.get("method", "get").lower()
        elif self._forms == 1 and "name" in a:
            if tag == "button" or a.get("type", "").lower() == "submit":
                self.buttons.append((a["name"], a.get("value", "")))
            elif tag == "input" and a.get("type", "text").lower() in ("hidden", "text"):
                self.fields.append((a["name"], a.get("value", "")))


def consent_form(page: str) -> _FormParser:
    """:raises AssertionError: the page has no form with a ``decision`` button."""
    parser = _FormParser()
    parser.feed(page)
    assert parser.action is not None, f"no form on the page:\n{page[:2000]}"
    assert {v for n, v in parser.buttons if n == "decision"} >= {"allow", "deny"}, parser.buttons
    return parser


def decide(stack: OAuthStack, client: Client, authorize_url: str, decision: str) -> Response:
    """As a signed-in user (``client`` holds the session cookie) open ``authorize_url`` and
    answer its consent form with ``decision`` from the same site; the final response (a
    redirect toward the redirect_uri, or the first answer when there was no consent form).
    A remembered consent needs no form: then the first answer is that redirect already."""
    parts = urlsplit(authorize_url)
    page = client.request("GET", f"{parts.path}?{parts.query}", headers={"Accept": "text/html"})
    if page.status != 200:
        return page
    form = consent_form(page.text)
    fields = dict(form.fields)
    fields["decision"] = decision
    action = form.action or parts.path
    headers = {"Origin": stack.base_url, "Accept": "text/html"}
    return client.request("POST", action, headers=headers, form=fields)


def query_of(url: str) -> dict[str, str]:
    """The query parameters of ``url`` (each name once: :raises AssertionError: otherwise)."""
    parsed = parse_qs(urlsplit(url).query, keep_blank_values=True)
    assert all(len(v) == 1 for v in parsed.values()), parsed
    return {k: v[0] for k, v in parsed.items()}


def parse_added(output: str) -> tuple[str, str | None]:
    """``extauthz clients add``'s output (``client_id=<id>``, ``client_secret=<secret>`` for a
    confidential client) as (client_id, secret)."""
    fields = dict(line.split("=", 1) for line in output.splitlines() if "=" in line)
    return fields["client_id"], fields.get("client_secret")


def register_client(
    stack: OAuthStack, name: str, redirect_uris: list[str], scopes: list[str], *,
    confidential: bool = True, via: str = "admin",
) -> RegisteredClient:
    """Register an application as an operator does: ``via="cli"``: ``extauthz clients add``
    straight into the client store of node 1's settings; ``via="admin"``: the admin API
    (``extauthz.v1.ClientAdmin/AddClient`` on node 1, with its admin token). The client_id
    and the secret shown once."""
    import grpc

    from extauthz._proto.extauthz.v1 import admin_pb2, admin_pb2_grpc

    node = stack.nodes[0].extauthz
    if via == "cli":
        config = node.argv[node.argv.index("--config") + 1]
        argv = ["clients", "add", "--config", config, "--name", name]
        argv += [f"--redirect-uri={u}" for u in redirect_uris]
        argv += [f"--scope={s}" for s in scopes]
        if not confidential:
            argv.append("--public")
        client_id, secret = parse_added(node.cli(*argv))
        return RegisteredClient(client_id, secret, name, tuple(redirect_uris), tuple(scopes))
    request = admin_pb2.AddClientRequest(
        name=name, redirect_uris=redirect_uris, scopes=scopes, public_client=not confidential
    )
    with grpc.insecure_channel(node.grpc_target) as channel:
        reply = admin_pb2_grpc.ClientAdminStub(channel).AddClient(
            request, metadata=node.admin_metadata, timeout=10
        )
    client = reply.client
    return RegisteredClient(
        client.client_id, reply.client_secret or None, client.name,
        tuple(client.redirect_uris), tuple(client.scopes),
    )


__all__ = [
    "CALLBACK_PATH",
    "USERS",
    "CallbackListener",
    "OAuthStack",
    "ProcessError",
    "RegisteredClient",
    "consent_form",
    "decide",
    "extauthz_cli",
    "parse_added",
    "query_of",
    "register_client",
    "start_oauth_stack",
]
