"""One named regression test per security case (as PyJWT's tests/test_advisory.py does).

Each test says which attack it stops; none may be weakened without a replacement."""

from __future__ import annotations

import itertools
import logging
import os
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import redis.asyncio as aioredis
from aiohttp import test_utils, web
from cryptography.hazmat.primitives.asymmetric import ec
from envoy.service.auth.v3.external_auth_pb2 import CheckRequest, CheckResponse
from google.rpc import code_pb2
from jwt.algorithms import ECAlgorithm

from demo.echo_upstream import create_app
from extauthz import tokens
from extauthz.check.context import RequestContext
from extauthz.check.decisions import Deny
from extauthz.check.denials import DenialRenderer, safe_return_to
from extauthz.check.envoy_adapter import to_request_context
from extauthz.check.policy import Policy
from extauthz.check.resolver import SessionResolver
from extauthz.check.throttle import LookupThrottle
from extauthz.errors import Reason, StoreUnavailable, TooManyRequests, Unauthenticated
from extauthz.login.cookies import SessionCookie
from extauthz.login.ratelimit import MemoryRateLimiter
from extauthz.login.service import LoginService
from extauthz.login.users import FileUserStore, PasswordVerifier
from extauthz.server.grpc_server import AuthorizationServicer
from extauthz.store.memory import MemorySessionStore
from extauthz.store.model import Session, SessionStore
from extauthz.store.redis.store import RedisSessionStore
from harness.extauthz import extauthz_cli
from harness.process import ProcessError
from tests.fixtures.core import (
    ADMIN_METADATA,
    ADMIN_TOKEN,
    COOKIE,
    LOGIN_URL,
    Aborted,
    FakeClock,
    FakeServicerContext,
    Harness,
    build_harness,
    http_request,
    metadata,
    ok_headers,
    response_headers,
)
from tests.support import RedisServer


class ProbeStore(MemorySessionStore):
    """The in-memory store with a switchable outage and a count of lookups."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__(clock)
        self.down = False
        self.gets = 0

    async def get(self, token_hash: str) -> Session | None:
        self.gets += 1
        if self.down:
            raise StoreUnavailable("probe: store down")
        return await super().get(token_hash)

    async def ping(self) -> None:
        if self.down:
            raise StoreUnavailable("probe: store down")


@pytest.fixture
def h(tmp_path: Path) -> Harness:
    clock = FakeClock()
    return build_harness(tmp_path, store=ProbeStore(clock), clock=clock)


def probe(h: Harness) -> ProbeStore:
    assert isinstance(h.store, ProbeStore)
    return h.store


async def check(h: Harness, request: CheckRequest) -> CheckResponse:
    return await AuthorizationServicer(h.authorizer).Check(request, FakeServicerContext())


def allowed(response: CheckResponse) -> bool:
    return bool(response.status.code == code_pb2.OK and response.HasField("ok_response"))


def raw(response: CheckResponse) -> str:
    wire: bytes = response.SerializeToString()
    return wire.decode("latin-1")


# -- credentials ---------------------------------------------------------------------------------


async def test_jwt_as_opaque_token_is_rejected_without_store_lookup(h: Harness) -> None:
    """A JWT that leaked from upstream must not be accepted (or even looked up) at the edge."""
    token, _ = await h.login()
    minted = ok_headers(await check(h, http_request({"authorization": f"Bearer {token}"})))[0][1]
    jwt_value = minted.removeprefix("Bearer ")
    before = probe(h).gets
    for headers in ({"authorization": f"Bearer {jwt_value}"}, {"cookie": f"{COOKIE}={jwt_value}"}):
        response = await check(h, http_request(headers))
        assert not allowed(response)
        assert response.denied_response.status.code == 401
        assert metadata(response)["reason"] == "malformed_credential"
    assert probe(h).gets == before


async def test_query_string_token_is_ignored(h: Harness) -> None:
    """RFC 6750 §2.3 query tokens end up in logs and Referer headers: never accepted."""
    token, _ = await h.login()
    for path in (
        f"/api?access_token={token}",
        f"/api?{COOKIE}={token}",
        f"/api?authorization=Bearer%20{token}",
    ):
        response = await check(h, http_request({"accept": "application/json"}, path=path))
        assert not allowed(response)
        assert response.denied_response.status.code == 401
        assert metadata(response)["reason"] == "no_credential"
    assert probe(h).gets == 0


async def test_guessed_token_with_a_wrong_checksum_never_reaches_the_store(h: Harness) -> None:
    """Random guesses are rejected by the CRC before costing a store round trip."""
    for _ in range(20):
        guess = tokens.PREFIX + tokens.mint_token()[4:-6] + "000000"
        if tokens.has_token_shape(guess):
            continue
        response = await check(h, http_request({"authorization": f"Bearer {guess}"}))
        assert response.denied_response.status.code == 401
    assert probe(h).gets == 0


async def test_header_case_duplicates_cannot_smuggle_a_second_credential(h: Harness) -> None:
    alice, _ = await h.login("alice")
    bob, _ = await h.login("bob")
    response = await check(
        h, http_request({"Authorization": f"Bearer {alice}", "authorization": f"Bearer {bob}"})
    )
    assert not allowed(response)
    assert metadata(response)["reason"] == "ambiguous_credential"


async def test_bearer_and_cookie_of_different_sessions_are_denied(h: Harness) -> None:
    """Cookie tossing: a planted cookie must not silently win over (or lose to) a bearer."""
    alice, _ = await h.login("alice")
    mallory, _ = await h.login("mallory")
    response = await check(
        h, http_request({"authorization": f"Bearer {alice}", "cookie": f"{COOKIE}={mallory}"})
    )
    assert not allowed(response)
    assert metadata(response)["reason"] == "ambiguous_credential"


async def test_tossed_parent_domain_cookie_of_another_user_is_denied(h: Harness) -> None:
    """Two live session cookies of different users (host + parent domain): no guessing."""
    alice, _ = await h.login("alice")
    mallory, _ = await h.login("mallory")
    for cookie in (
        f"{COOKIE}={alice}; {COOKIE}={mallory}",
        f"{COOKIE}={mallory}; {COOKIE}={alice}",
    ):
        response = await check(h, http_request({"cookie": cookie}))
        assert not allowed(response)
        assert metadata(response)["reason"] == "ambiguous_credential"


async def test_cookie_tossing_cannot_log_the_user_out(h: Harness) -> None:
    """A sibling subdomain that plants session cookies (another user's live one, or more
    copies than allowed) gets the request denied, but never a Set-Cookie that would delete
    the victim's own cookie."""
    alice, _ = await h.login("alice")
    mallory, _ = await h.login("mallory")
    tossed = [f"{COOKIE}={alice}; {COOKIE}={mallory}"]
    tossed.append("; ".join([f"{COOKIE}={alice}"] + [f"{COOKIE}=junk{i}" for i in range(8)]))
    for cookie in tossed:
        response = await check(h, http_request({"cookie": cookie}))
        assert not allowed(response)
        assert metadata(response)["reason"] == "ambiguous_credential"
        assert "set-cookie" not in [k for k, _ in response_headers(response)]
    assert allowed(await check(h, http_request({"cookie": f"{COOKIE}={alice}"})))


async def test_oversized_cookie_header_is_refused_before_parsing(h: Harness) -> None:
    response = await check(h, http_request({"cookie": "a=" + "x" * 70_000}))
    assert response.denied_response.status.code == 401
    assert probe(h).gets == 0


# -- what goes upstream ----------------------------------------------------------------------------


async def test_opaque_token_is_never_forwarded_upstream(h: Harness) -> None:
    token, _ = await h.login()
    for headers in (
        {"authorization": f"Bearer {token}"},
        {"cookie": f"a=1; {COOKIE}={token}; b=2"},
        {"cookie": f'{COOKIE}="{token}"'},
        {"cookie": f"{COOKIE}={token}, {COOKIE}={token}"},
    ):
        response = await check(h, http_request(headers))
        assert allowed(response)
        assert token not in raw(response)
        names = [k for k, _, _ in ok_headers(response)]
        assert "authorization" in names
        if "cookie" in headers and "cookie" not in names:
            assert list(response.ok_response.headers_to_remove) == ["cookie"]


async def test_client_supplied_jwt_header_is_replaced(tmp_path: Path) -> None:
    """A client cannot forge the identity header upstream trusts."""
    h = build_harness(tmp_path, jwt_header="x-jwt")
    token, sid = await h.login()
    response = await check(
        h, http_request({"cookie": f"{COOKIE}={token}", "x-jwt": "eyJhbGciOiJub25lIn0.e30."})
    )
    assert allowed(response)
    (header,) = [(k, v, a) for k, v, a in ok_headers(response) if k == "x-jwt"]
    assert header[2] == 2  # OVERWRITE_IF_EXISTS_OR_ADD
    assert h.verify(header[1])["sid"] == sid


async def test_revocation_is_immediate_despite_the_jwt_cache(h: Harness) -> None:
    token, _ = await h.login()
    request = http_request({"authorization": f"Bearer {token}"})
    assert allowed(await check(h, request))
    await h.sessions.revoke_token(token)
    response = await check(h, request)
    assert response.denied_response.status.code == 401
    assert metadata(response)["reason"] == "revoked_session"


async def test_jwt_never_outlives_the_absolute_session_expiry(tmp_path: Path) -> None:
    h = build_harness(tmp_path, idle_timeout=600, absolute_timeout=700)
    token, _ = await h.login()
    created = h.clock()
    h.clock.advance(550)
    await check(h, http_request({"authorization": f"Bearer {token}"}))
    h.clock.advance(40)
    response = await check(h, http_request({"authorization": f"Bearer {token}"}))
    claims = h.verify(ok_headers(response)[0][1].removeprefix("Bearer "))
    assert claims["exp"] <= created + 700


# -- denials -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "candidate",
    [
        "//evil.example",
        "//evil.example/path",
        "///evil.example",
        "/\\evil.example",
        "\\\\evil.example",
        "%2F%2Fevil.example",
        "https://evil.example",
        "javascript:alert(1)",
        "/\t/evil.example",
        "/\n/evil.example",
        "/\r\nSet-Cookie: x=1",
        "/\x00/evil.example",
        "/\x7f/evil.example",
        " //evil.example",
        "",
    ],
)
def test_return_to_cannot_leave_the_host(candidate: str) -> None:
    target = safe_return_to(candidate)
    assert target == "/" or (
        target.startswith("/") and not target.startswith("//") and "\\" not in target
    )
    assert urlsplit(target).netloc == "" and urlsplit(target).scheme == ""
    assert target == "/"  # every candidate above is hostile or empty


@pytest.mark.parametrize(
    "path",
    ["//evil.example", "/\\evil.example", "/%2F%2Fevil.example", "/\r\nSet-Cookie:%20x=1", "/a\tb"],
)
async def test_login_redirect_stays_on_the_host(h: Harness, path: str) -> None:
    response = await check(h, http_request({"accept": "text/html"}, path=path))
    assert response.denied_response.status.code == 302
    (location,) = [v for k, v in response_headers(response) if k == "location"]
    assert not any(c in location for c in "\r\n\t\\")
    assert location.startswith(f"{LOGIN_URL}?return_to=%2F")
    (target,) = parse_qs(urlsplit(location).query)["return_to"]
    # what the login page does with it: validate again, then redirect there
    final = safe_return_to(target)
    assert final.startswith("/") and not final.startswith("//")
    assert urlsplit(final).netloc == ""


async def test_unsafe_methods_are_never_redirected(h: Harness) -> None:
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        response = await check(
            h,
            http_request(
                {"accept": "text/html"}, method=method, context_extensions={"client": "browser"}
            ),
        )
        assert response.denied_response.status.code == 401


async def test_forbidden_keeps_the_cookie_and_authentication_failures_clear_it(h: Harness) -> None:
    token, _ = await h.login(scopes=["read"])
    forbidden = await check(
        h,
        http_request(
            {"cookie": f"{COOKIE}={token}"}, context_extensions={"required_scopes": "admin"}
        ),
    )
    assert forbidden.denied_response.status.code == 403
    assert "set-cookie" not in [k for k, _ in response_headers(forbidden)]
    await h.sessions.revoke_token(token)
    gone = await check(h, http_request({"cookie": f"{COOKIE}={token}"}))
    assert ("set-cookie", f"{COOKIE}=; Max-Age=0; Path=/; HttpOnly; SameSite=Lax; Secure") in (
        response_headers(gone)
    )


# -- store outages and revocation races ------------------------------------------------------------


async def test_store_outage_is_not_a_logout(h: Harness) -> None:
    """A store that cannot answer fails the RPC (Envoy answers 503); nothing clears the cookie
    and the session works again once the store is back."""
    token, sid = await h.login()
    request = http_request({"cookie": f"a=1; {COOKIE}={token}", "accept": "text/html"})
    probe(h).down = True
    with pytest.raises(StoreUnavailable):
        await h.authorizer.authorize(to_request_context(request))
    context = FakeServicerContext()
    with pytest.raises(Aborted) as caught:
        await AuthorizationServicer(h.authorizer).Check(request, context)
    assert caught.value.code.name == "UNAVAILABLE"
    assert caught.value.details == "session store unavailable"
    probe(h).down = False
    response = await check(h, request)
    assert allowed(response)
    assert metadata(response)["sid"] == sid


class LogoutDuringLookup:
    """Wraps a store: right after ``get`` answers, a concurrent logout revokes the session."""

    def __init__(self, inner: SessionStore) -> None:
        self.inner = inner
        self.backend = inner.backend

    async def get(self, token_hash: str) -> Session | None:
        session = await self.inner.get(token_hash)
        await self.inner.revoke(token_hash)
        return session

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)


@pytest.mark.parametrize("backend", ["memory", pytest.param("redis", marks=pytest.mark.e2e)])
async def test_touch_after_revoke_does_not_resurrect(
    tmp_path: Path, backend: str, request: pytest.FixtureRequest
) -> None:
    clock = FakeClock()
    client = None
    inner: SessionStore
    if backend == "memory":
        inner = MemorySessionStore(clock)
    else:
        server: RedisServer = request.getfixturevalue("redis_process")
        client = aioredis.Redis.from_url(server.url)
        inner = RedisSessionStore(client, "adv:", clock=clock)
    try:
        h = build_harness(tmp_path, store=LogoutDuringLookup(inner), clock=clock)  # type: ignore[arg-type]
        token, _ = await h.login()
        clock.advance(5)  # the lookup will want to slide the idle deadline
        with pytest.raises(Unauthenticated) as caught:
            await h.sessions.lookup(token)
        assert caught.value.reason is Reason.REVOKED_SESSION
        assert await inner.get(tokens.token_hash(token)) is None
    finally:
        if client is not None:
            await client.aclose()


@pytest.mark.e2e
async def test_a_retried_revocation_does_not_succeed_before_the_first_one_landed(
    redis_process: RedisServer,
) -> None:
    """A revocation whose first try deleted the record but failed its barrier (a node had not
    acknowledged) leaves nothing for a retry to find; the retry must still wait for that
    first invalidation, never answer "nothing to revoke" while a node can allow the token."""
    from extauthz.errors import StoreWriteNotDurable

    client = aioredis.Redis.from_url(redis_process.url)
    acknowledged = 0  # what every node has applied
    waited: list[int] = []

    async def barrier(seq: int) -> None:
        waited.append(seq)
        if seq > acknowledged:
            raise StoreWriteNotDurable(f"invalidation {seq} not acknowledged")

    store = RedisSessionStore(client, "adv-retry:", replica_barrier=barrier)
    try:
        now = time.time()
        session = Session("sid-r", "victim", now, now, 600, now + 3600)
        await store.create("h" * 64, session)
        with pytest.raises(StoreWriteNotDurable):
            await store.revoke_sid("sid-r")  # deleted on the primary, not yet everywhere
        first = waited[-1]
        for retry in (store.revoke_sid("sid-r"), store.revoke_subject("victim")):
            with pytest.raises(StoreWriteNotDurable):
                await retry
            assert waited[-1] >= first
        acknowledged = first  # the partitioned node caught up
        assert await store.revoke_sid("sid-r") is None
        assert await store.revoke_subject("victim") == 0
    finally:
        await client.aclose()


# -- logs ------------------------------------------------------------------------------------------


async def test_token_never_logged(h: Harness, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    token, _ = await h.login()
    other, _ = await h.login("bob")
    seen_jwts: list[str] = []
    requests = [
        http_request({"authorization": f"Bearer {token}"}),
        http_request({"cookie": f"a=1; {COOKIE}={token}"}),
        http_request({"cookie": f"{COOKIE}={token}; {COOKIE}={other}"}),
        http_request({"authorization": f"Bearer {token}", "cookie": f"{COOKIE}={other}"}),
        http_request({"authorization": f"Bearer {token[:-1]}x"}),
        http_request(
            {"authorization": f"Bearer {token}"}, context_extensions={"required_scopes": "x"}
        ),
        http_request({"cookie": f"{COOKIE}={token}", "accept": "text/html"}, path="/p"),
    ]
    for request in requests:
        response = await check(h, request)
        seen_jwts += [v.removeprefix("Bearer ") for k, v, _ in ok_headers(response)]
    await h.sessions.revoke_token(token)
    await check(h, requests[0])
    probe(h).down = True
    with pytest.raises(Aborted):
        await AuthorizationServicer(h.authorizer).Check(requests[1], FakeServicerContext())
    assert seen_jwts, "an allow was expected"
    assert caplog.records, "the pipeline was expected to log"
    secrets = [token, other, token[:-1] + "x", tokens.token_hash(token), *seen_jwts]
    for record in caplog.records:
        text = record.getMessage() + repr(record.args) + str(record.exc_info or "")
        for secret in secrets:
            assert secret not in text, record.getMessage()


# -- attacks on the running stack (H1, M3 and M4 also in tests/login/test_auth_service.py) ------


async def test_advisory_m3_a_valid_cookie_does_not_hide_the_guesses_next_to_it(
    h: Harness,
) -> None:
    """M3: Check looks up to 4 session cookies; misses next to a live cookie were never
    counted, so one's own cookie carried 3 free guesses per request (a hit on another user's
    session shows as ``ambiguous_credential``). Every failed candidate counts now."""
    from extauthz.check.decisions import Allow

    throttle = LookupThrottle(MemoryRateLimiter(5, 60, clock=h.clock), clock=h.clock)
    h.authorizer.resolver.throttle = throttle
    own, _ = await h.login("mallory")

    def request() -> RequestContext:
        guesses = "; ".join(f"{COOKIE}={tokens.mint_token()}" for _ in range(3))
        return RequestContext(
            method="GET", scheme="https", host="app.test", path="/api",
            headers={"cookie": f"{guesses}; {COOKIE}={own}"}, peer_address="198.51.100.9",
        )

    assert isinstance(await h.authorizer.authorize(request()), Allow)  # 3 misses
    throttled = await h.authorizer.authorize(request())  # 6 misses: over the limit of 5
    assert isinstance(throttled, Deny) and throttled.status == 429
    assert throttle.retry_after("198.51.100.9") >= 1


@pytest.mark.parametrize(
    ("candidate", "expected"),
    [
        ("/\u2028/evil.com", "/"),  # line separator: refused, no longer encoded
        ("/\u2029x", "/"),
        ("/\u0085x", "/"),  # C1 control (NEL)
        ("/\uff0f\uff0fevil.example", "/%EF%BC%8F%EF%BC%8Fevil.example"),  # fullwidth solidus
        ("/\u202eevil", "/"),  # bidi override
        ("/caf\u00e9?q=\u00fc#fr\u00e4g", "/caf%C3%A9?q=%C3%BC#fr%C3%A4g"),
        ("/already%20encoded/%E2%80%A8", "/already%20encoded/%E2%80%A8"),  # left alone
        ("/\ud800", "/"),  # a lone surrogate is not text
        ("//\u00e9vil.example", "/"),
        ("/\\\u00e9vil.example", "/"),
    ],
)
def test_advisory_l5_return_to_is_ascii_with_non_ascii_percent_encoded(
    candidate: str, expected: str
) -> None:
    """L5: non-ASCII went through unchanged, so the login's ``Location`` carried raw UTF-8."""
    target = safe_return_to(candidate)
    assert target == expected
    assert target.isascii() and target.isprintable()
    assert target.startswith("/") and not target.startswith("//") and "\\" not in target
    assert urlsplit(target).netloc == "" and urlsplit(target).scheme == ""


@pytest.mark.parametrize(
    "sub",
    ["alice\r\nsid=forged", "alice\n", "a\x00b", "a\x1b[31mb", "a\x7fb", "a\x85b",
     "a\u2028b", "a\u2029b", "a\u202eb", "a\u2066b", "a\ud800b"],
)
async def test_advisory_l5_subject_with_control_characters_is_refused(
    h: Harness, sub: str, caplog: pytest.LogCaptureFixture
) -> None:
    """L5: the admin ``CreateSession`` took a subject with CR/LF/controls, which then landed
    in log lines and the JWT ``sub``. ``SessionManager.create`` refuses it (ValueError), the
    admin API answers ``INVALID_ARGUMENT``, and nothing is stored."""
    from extauthz._proto.extauthz.v1 import admin_pb2
    from extauthz.server.admin import AdminGuard, SessionAdminServicer

    with pytest.raises(ValueError, match="control characters"):
        await h.sessions.create(sub)
    if "\ud800" in sub:
        return  # protobuf cannot even carry it
    caplog.set_level(logging.INFO)
    servicer = SessionAdminServicer(h.sessions, AdminGuard(ADMIN_TOKEN))
    context = FakeServicerContext(ADMIN_METADATA)
    with pytest.raises(Aborted) as caught:
        await servicer.CreateSession(admin_pb2.CreateSessionRequest(sub=sub), context)
    assert caught.value.code.name == "INVALID_ARGUMENT"
    assert await h.store.list_subject(sub) == []
    # the other admin calls log what they were sent escaped, never raw
    await servicer.RevokeSubjectSessions(
        admin_pb2.RevokeSubjectSessionsRequest(sub=sub), FakeServicerContext(ADMIN_METADATA)
    )
    await servicer.RevokeSession(
        admin_pb2.RevokeSessionRequest(sid=sub), FakeServicerContext(ADMIN_METADATA)
    )
    for record in caplog.records:
        assert record.getMessage().isprintable(), record.getMessage()


async def test_ordinary_subjects_are_still_accepted(h: Harness) -> None:
    for sub in ("alice", "user@example.com", "Zo\u00eb", "\u7528\u6237", "a b", "x" * 256):
        _, session = await h.sessions.create(sub)
        assert session.sub == sub
    for bad in ("", "x" * 257):
        with pytest.raises(ValueError):
            await h.sessions.create(bad)


def _admin_calls() -> list[tuple[str, Any]]:
    """Every ``SessionAdmin`` method, each with an empty request of its type."""
    from extauthz._proto.extauthz.v1 import admin_pb2

    service = admin_pb2.DESCRIPTOR.services_by_name["SessionAdmin"]
    return [(m.name, getattr(admin_pb2, m.input_type.name)()) for m in service.methods]


def _serve_as_before(work: Path, keys: Path) -> str:
    """Start ``extauthz serve`` the way a loopback node was configured before the admin API
    needed its token (no admin settings at all) and say what happened: ``refused to start:
    <stderr>``, or, when it serves, what an admin call without a credential got. The process
    is killed after."""
    import subprocess
    import sys

    import grpc

    from extauthz._proto.extauthz.v1 import admin_pb2, admin_pb2_grpc
    from harness.extauthz import grpc_health_serving
    from harness.ports import free_port

    grpc_port = free_port()
    config = work / "extauthz.toml"
    work.mkdir(parents=True)
    config.write_text(
        f'[server]\ngrpc_listen = "127.0.0.1:{grpc_port}"\n'
        f'http_listen = "127.0.0.1:{free_port()}"\n'
        f'[store]\nstrategy = "sticky"\nbackend = "memory"\n[jwt]\nkeys_dir = "{keys}"\n'
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("EXTAUTHZ_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "extauthz", "serve", "--config", str(config)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env, cwd=work,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                assert proc.stderr is not None
                return f"refused to start (exit {proc.returncode}): {proc.stderr.read()}"
            if grpc_health_serving(grpc_port):
                with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
                    stub = admin_pb2_grpc.SessionAdminStub(channel)
                    try:
                        stub.CreateSession(admin_pb2.CreateSessionRequest(sub="root"), timeout=5)
                    except grpc.RpcError as exc:
                        return f"served; CreateSession without a credential: {exc.code().name}"
                return "served; CreateSession without a credential: OK, a session for root"
            time.sleep(0.1)
        return "neither exited nor served within 30 s"
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
        assert proc.stderr is not None
        proc.stderr.close()


@pytest.mark.e2e
def test_advisory_admin_api_refuses_calls_without_a_credential_on_loopback(
    tmp_path: Path,
) -> None:
    """``SessionAdmin`` (create a session for any subject, revoke, list) needed
    no credential when the gRPC listener was on loopback, the port Envoy calls for Check. In a
    sidecar deployment the application's container shares that loopback: a compromised
    application could mint a session for any user. Now every admin call needs the admin token,
    whatever the peer: a node without ``admin.token_file`` refuses to start, and a node on
    127.0.0.1 refuses calls without the token or with another one. Check, Health and Status
    stay open (Envoy and probes call them without a credential)."""
    import grpc
    from envoy.service.auth.v3 import external_auth_pb2_grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from extauthz._proto.extauthz.v1 import admin_pb2, admin_pb2_grpc
    from extauthz.keys.keyring import generate_key
    from harness.extauthz import ExtauthzProcess
    from harness.stack import DEMO_SETTINGS
    from tests.fixtures.core import bearer_request

    keys = tmp_path / "keys"
    generate_key(keys)
    outcome = _serve_as_before(tmp_path / "before", keys)
    assert outcome.startswith("refused to start (exit 2)"), outcome
    (line,) = outcome.split(": ", 1)[1].strip().splitlines()
    assert line.startswith("extauthz: admin.token_file: ") and "admin.enabled = false" in line

    env = {"EXTAUTHZ_STORE_BACKEND": "memory", "EXTAUTHZ_STORE_STRATEGY": "sticky",
           "EXTAUTHZ_JWT_KEYS_DIR": str(keys)}  # fmt: skip
    node = ExtauthzProcess(DEMO_SETTINGS, tmp_path / "logs", env=env).start()
    try:
        assert node.grpc_target.startswith("127.0.0.1:")
        ((_, right),) = node.admin_metadata
        token = right.removeprefix("Bearer ")
        wrong: list[tuple[tuple[str, str], ...]] = [
            (),
            (("authorization", f"Bearer {'0' * len(token)}"),),
            (("authorization", f"Bearer {token[:-1]}"),),
            (("authorization", f"Bearer {token}0"),),
            (("authorization", f"Basic {token}"),),
            (("authorization", token),),
            (("x-admin-token", token),),
            (("authorization", f"Bearer {token}"), ("authorization", "Bearer other")),
        ]
        with grpc.insecure_channel(node.grpc_target) as channel:
            admin = admin_pb2_grpc.SessionAdminStub(channel)
            for name, request in _admin_calls():
                for metadata in wrong:
                    with pytest.raises(grpc.RpcError) as refused:
                        getattr(admin, name)(request, metadata=metadata, timeout=5)
                    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED, (name, metadata)
            # with the token: create, list, revoke work
            right_metadata = node.admin_metadata
            created = admin.CreateSession(
                admin_pb2.CreateSessionRequest(sub="alice"), metadata=right_metadata, timeout=5
            )
            listed = admin.ListSessions(
                admin_pb2.ListSessionsRequest(sub="alice"), metadata=right_metadata, timeout=5
            )
            assert [s.sid for s in listed.sessions] == [created.session.sid]
            # Check, Health and Status need no credential
            authz = external_auth_pb2_grpc.AuthorizationStub(channel)
            reply = authz.Check(bearer_request(created.access_token), timeout=5)
            assert reply.status.code == code_pb2.OK
            health = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=5
            )
            assert health.status == health_pb2.HealthCheckResponse.SERVING
            status = admin_pb2_grpc.StatusStub(channel).GetStatus(
                admin_pb2.GetStatusRequest(), timeout=5
            )
            assert status.store_backend == "memory"
            revoked = admin.RevokeSession(
                admin_pb2.RevokeSessionRequest(sid=created.session.sid),
                metadata=right_metadata, timeout=5,
            )  # fmt: skip
            assert revoked.revoked
            reply = authz.Check(bearer_request(created.access_token), timeout=5)
            assert reply.status.code != code_pb2.OK
            # a CLI without the token is refused too, and says where the token comes from
            cli_env = {k: v for k, v in node.env.items() if k != "EXTAUTHZ_ADMIN_TOKEN_FILE"}
            with pytest.raises(ProcessError) as cli_refused:
                extauthz_cli("sessions", "create", "--sub", "mallory", "--target",
                             node.grpc_target, env=cli_env)  # fmt: skip
            assert "UNAUTHENTICATED" in str(cli_refused.value)
            assert "EXTAUTHZ_ADMIN_TOKEN_FILE" in str(cli_refused.value)
            assert node.cli("sessions", "list", "--sub", "mallory",
                            "--target", node.grpc_target) == "{}"  # fmt: skip
    finally:
        node.stop()


@pytest.mark.parametrize(
    "listen", ["127.0.0.1:9001", "[::1]:9001", "localhost:9001", "0.0.0.0:9001"]
)
def test_advisory_admin_api_without_a_token_file_does_not_start(listen: str) -> None:
    """The start-up rule: with the admin API enabled (the default) and no
    ``admin.token_file``, ``serve`` stops before anything starts, wherever it listens."""
    from extauthz.errors import SettingsError
    from extauthz.server.app import _admin_guard
    from extauthz.settings import ServerSettings, Settings

    with pytest.raises(SettingsError, match=r"^admin\.token_file: .*admin\.enabled = false"):
        _admin_guard(Settings(server=ServerSettings(grpc_listen=listen)))


async def test_advisory_a_disabled_admin_api_refuses_every_call(h: Harness) -> None:
    """``admin.enabled = false`` needs no token file and refuses every
    ``SessionAdmin`` call, even one that carries a token."""
    from extauthz.server.admin import SessionAdminServicer
    from extauthz.server.app import _admin_guard
    from extauthz.settings import AdminSettings, Settings

    guard = _admin_guard(Settings(admin=AdminSettings(enabled=False, token_file="/nonexistent")))
    servicer = SessionAdminServicer(h.sessions, guard)
    for name, request in _admin_calls():
        if name == "CreateSession":
            request.sub = "alice"
        with pytest.raises(Aborted) as refused:
            await getattr(servicer, name)(request, FakeServicerContext(ADMIN_METADATA))
        assert refused.value.code.name == "PERMISSION_DENIED", name
    assert await h.store.list_subject("alice") == []


@pytest.mark.parametrize(
    "query",
    [
        "access_token={token}",
        "a=1&access_token={token}&b=2",
        "ACCESS_TOKEN={token}",
        "t={token}",
        "jwt=eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhIn0.c2ln",
    ],
)
async def test_login_redirect_never_copies_a_credential_into_location(
    h: Harness, query: str
) -> None:
    """A token a client put in the query string (never used as a credential) must not be
    echoed into the redirect's Location, the browser history and the login form."""
    token, _ = await h.login()
    response = await check(
        h, http_request({"accept": "text/html"}, path="/page?" + query.format(token=token))
    )
    assert response.denied_response.status.code == 302
    location = dict(response_headers(response))["location"]
    assert token not in location and "eyJ" not in location
    return_to = parse_qs(urlsplit(location).query)["return_to"][0]
    assert return_to.startswith("/page")
    if "a=1" in query:
        assert parse_qs(urlsplit(return_to).query) == {"a": ["1"], "b": ["2"]}


@pytest.mark.parametrize("scope", ["read admin", "a\r\nb", 'a"b', "a\\b", "", "é"])
async def test_a_scope_that_is_not_a_scope_token_is_refused(h: Harness, scope: str) -> None:
    """The JWT joins scopes with spaces: one admin-created scope "read admin" would reach
    upstreams as two, one of them admin (RFC 6749 §3.3 scope-token)."""
    with pytest.raises(ValueError, match="scope token"):
        await h.sessions.create("alice", scopes=[scope])
    with pytest.raises(ValueError, match="scope token"):
        await h.sessions.create("alice", roles=[scope])


# -- one session resolver for Check and /auth/* ---------------------------------------------------


def auth_service(h: Harness, tmp_path: Path) -> LoginService:
    """The login rules over the Check harness's own resolver (no HTTP needed)."""
    verifier = PasswordVerifier(FileUserStore(tmp_path / "users.json"))
    return LoginService(h.authorizer.resolver, verifier)


def lookup_context(peer: str = "198.51.100.20", **headers: str) -> RequestContext:
    return RequestContext(
        method="GET", scheme="https", host="app.test", path="/auth/session",
        headers=headers, peer_address=peer,
    )


async def test_advisory_host_prefixed_cookie_is_cleared_without_a_domain() -> None:
    """RFC 6265bis §4.1.3.2: Check's denials cleared the session cookie with ``Domain`` even
    for a ``__Host-`` name (the logout did not), and a browser ignores such a ``Set-Cookie``:
    the dead cookie stayed. Both now use one builder that never sends it for ``__Host-``."""
    cookie = SessionCookie("__Host-s", secure=True, domain="app.test")
    denial = DenialRenderer(realm="r", login_url=LOGIN_URL, cookie=cookie).render(
        lookup_context(cookie=f"__Host-s={tokens.mint_token()}"),
        Policy(client="api"),
        Unauthenticated(Reason.UNKNOWN_SESSION, "unknown or revoked session"),
        saw_cookie=True,
        metadata={},
    )
    (cleared,) = [v for k, v in denial.headers if k == "set-cookie"]
    assert cleared == "__Host-s=; Max-Age=0; Path=/; HttpOnly; SameSite=Lax; Secure"
    assert (cleared,) == cookie.clearing()  # the logout's clearing, byte for byte


async def test_advisory_m3_a_live_token_first_does_not_hide_guesses_at_auth_session(
    h: Harness, tmp_path: Path
) -> None:
    """M3 at ``GET /auth/session``: it stopped at the first live cookie, so guesses placed
    after one's own cookie were never looked up nor counted. It now resolves like Check."""
    throttle = LookupThrottle(MemoryRateLimiter(5, 60, clock=h.clock), clock=h.clock)
    h.authorizer.resolver.throttle = throttle
    service = auth_service(h, tmp_path)
    own, _ = await h.login("mallory")
    guesses = "; ".join(f"{COOKIE}={tokens.mint_token()}" for _ in range(3))
    ctx = lookup_context(cookie=f"{COOKIE}={own}; {guesses}")
    assert (await service.session(ctx)).sub == "mallory"  # 3 misses
    with pytest.raises(TooManyRequests):  # 6 misses: over the limit of 5
        await service.session(ctx)
    assert throttle.retry_after(ctx.peer_address) >= 1


async def test_advisory_auth_session_and_check_agree_on_who_is_signed_in(
    h: Harness, tmp_path: Path
) -> None:
    """``GET /auth/session`` answered with the first live session where Check denied: live
    cookies of two users (one tossed in by a sibling subdomain), a bearer token and a cookie
    of different sessions, a malformed bearer next to a live cookie. Both ask one resolver."""
    service = auth_service(h, tmp_path)
    alice, _ = await h.login("alice")
    mallory, _ = await h.login("mallory")
    for headers, reason in (
        ({"cookie": f"{COOKIE}={alice}; {COOKIE}={mallory}"}, Reason.AMBIGUOUS_CREDENTIAL),
        ({"cookie": f"{COOKIE}={alice}", "authorization": f"Bearer {mallory}"},
         Reason.AMBIGUOUS_CREDENTIAL),
        ({"cookie": f"{COOKIE}={alice}", "authorization": "Bearer !!"},
         Reason.MALFORMED_CREDENTIAL),
    ):
        ctx = lookup_context(**headers)
        decision = await h.authorizer.authorize(ctx)
        assert isinstance(decision, Deny) and decision.metadata["reason"] == reason
        with pytest.raises(Unauthenticated) as denied:
            await service.session(ctx)
        assert denied.value.reason is reason


async def test_advisory_a_removed_signing_key_is_refused_by_the_reference_upstream(
    h: Harness,
) -> None:
    """A compromised key taken out of the JWKS was still accepted by demo/echo_upstream.py for
    its 300 s JWKS cache. Now a key set is used for at most ``jwks_max_age`` seconds after
    the last successful fetch: a token signed by the removed key is refused within that bound,
    and past it an unreachable JWKS refuses everything rather than trusting the old set."""
    published = {"keys": h.keyring.jwks()["keys"]}
    reachable = [True]

    async def serve_jwks(request: web.Request) -> web.Response:
        if not reachable[0]:
            raise web.HTTPServiceUnavailable()
        return web.json_response(published)

    jwks_app = web.Application()
    jwks_app.router.add_get("/jwks.json", serve_jwks)
    async with test_utils.TestServer(jwks_app) as jwks_server:
        _, session = await h.sessions.create("alice")
        captured = h.minter.mint(session)
        upstream = create_app(
            str(jwks_server.make_url("/jwks.json")), h.minter.issuer, h.minter.audience,
            jwks_max_age=0.3,
        )  # fmt: skip
        async with test_utils.TestClient(test_utils.TestServer(upstream)) as client:

            async def verdict() -> dict[str, object]:
                resp = await client.get("/", headers={"Authorization": f"Bearer {captured}"})
                body: dict[str, dict[str, object]] = await resp.json()
                return body["jwt"]

            assert (await verdict())["verified"] is True
            # the emergency removal: extauthz publishes only the replacement key
            replacement = ec.generate_private_key(ec.SECP256R1()).public_key()
            published["keys"] = [
                ECAlgorithm.to_jwk(replacement, as_dict=True)
                | {"kid": "replacement", "alg": "ES256", "use": "sig"}
            ]
            assert (await verdict())["verified"] is True  # inside the documented bound
            time.sleep(0.35)
            refused = await verdict()
            assert refused["verified"] is False and "kid" in str(refused["error"])
            # the key back in the JWKS but the JWKS unreachable: an old set is not trusted
            published["keys"] = h.keyring.jwks()["keys"]
            assert (await verdict())["verified"] is True
            reachable[0] = False
            time.sleep(0.35)
            assert (await verdict())["verified"] is False


# -- stale cookies, prefixes, origins, return_to ----------------------------------


def throttled_harness(tmp_path: Path, *, cookie_domain: str = "") -> Harness:
    """A Check harness whose lookups are throttled at 5 failures per minute per address."""
    clock = FakeClock()
    h = build_harness(tmp_path, clock=clock, cookie_domain=cookie_domain)
    h.authorizer.resolver.throttle = LookupThrottle(
        MemoryRateLimiter(5, 60, clock=clock), clock=clock
    )
    return h


def cookie_request(cookie: str, peer: str = "198.51.100.30") -> RequestContext:
    return RequestContext(
        method="GET", scheme="https", host="app.test", path="/api",
        headers={"cookie": cookie}, peer_address=peer,
    )


async def test_advisory_a_stale_revoked_cookie_does_not_lock_its_user_out(
    tmp_path: Path,
) -> None:
    """A revoked session's cookie that the browser kept (a host-only copy
    next to the ``Domain`` one) counted as a failed lookup on every request, and after a few
    requests the user's whole address got 429 although it also sent a live cookie. The store
    remembers revoked tokens until their absolute expiry: such a token is ``revoked_session``
    and no guess. Guessing stays throttled."""
    from extauthz.check.decisions import Allow

    h = throttled_harness(tmp_path, cookie_domain="app.test")
    stale, _ = await h.login("alice")
    await h.sessions.revoke_token(stale)
    live, _ = await h.login("alice")
    for _ in range(30):  # far over the budget of 5, were the stale cookie a guess
        allowed = await h.authorizer.authorize(cookie_request(f"{COOKIE}={stale}; {COOKIE}={live}"))
        assert isinstance(allowed, Allow), allowed
    alone = await h.authorizer.authorize(cookie_request(f"{COOKIE}={stale}"))
    assert isinstance(alone, Deny) and alone.status == 401
    assert alone.metadata["reason"] == "revoked_session"
    # guesses next to the live cookie still count: the sixth is refused
    outcomes = [
        await h.authorizer.authorize(
            cookie_request(f"{COOKIE}={tokens.mint_token()}; {COOKIE}={live}")
        )
        for _ in range(6)
    ]
    assert [isinstance(o, Allow) for o in outcomes] == [True] * 5 + [False]
    assert isinstance(outcomes[-1], Deny) and outcomes[-1].status == 429


async def test_advisory_a_stale_revoked_cookie_is_no_guess_at_login_or_logout(
    tmp_path: Path,
) -> None:
    """The same at ``/auth/*``: presenting one's own revoked cookie to the
    logout or the session endpoint counts nothing."""
    h = throttled_harness(tmp_path)
    service = auth_service(h, tmp_path)
    throttle = h.authorizer.resolver.throttle
    assert throttle is not None
    stale, _ = await h.login("alice")
    await h.sessions.revoke_token(stale)

    async def no() -> bool:
        return False

    ctx = lookup_context(cookie=f"{COOKIE}={stale}", origin="https://app.test")
    for _ in range(10):
        assert (await service.logout(ctx, no)).revoked == 0
        with pytest.raises(Unauthenticated) as caught:
            await service.session(ctx)
        assert caught.value.reason is Reason.REVOKED_SESSION
    assert throttle.retry_after(ctx.peer_address) == 0


@pytest.mark.parametrize("name", ["s", "__Secure-s"])
async def test_advisory_clearing_covers_every_cookie_variant(tmp_path: Path, name: str) -> None:
    """With ``cookie_domain`` set, logout and Check's denials cleared only
    the ``Domain`` variant, never a host-only cookie of the same name, which stayed in the
    browser for good. Every clearing now covers both, and a login clears the variant it
    does not set before setting its own."""
    cookie = SessionCookie(name, domain="app.test")
    host_only = f"{name}=; Max-Age=0; Path=/; HttpOnly; SameSite=Lax; Secure"
    with_domain = f"{host_only}; Domain=app.test"
    assert cookie.clearing() == (host_only, with_domain)
    setting = cookie.setting(tokens.mint_token(), 60)
    assert setting[0] == host_only and len(setting) == 2
    assert setting[1].startswith(f"{name}=xat_") and setting[1].endswith("; Domain=app.test")

    h = build_harness(tmp_path, cookie_domain="app.test")
    h.authorizer.resolver = SessionResolver(h.sessions, cookie)
    h.authorizer.denials = DenialRenderer("r", LOGIN_URL, cookie)
    denied = await h.authorizer.authorize(cookie_request(f"{name}={tokens.mint_token()}"))
    assert isinstance(denied, Deny)
    assert [v for k, v in denied.headers if k == "set-cookie"] == [host_only, with_domain]
    service = auth_service(h, tmp_path)

    async def no() -> bool:
        return False

    signed_out = await service.logout(lookup_context(origin="https://app.test"), no)
    assert signed_out.set_cookies == (host_only, with_domain)


@pytest.mark.parametrize(
    ("name", "secure_name"),
    [("__host-s", "__secure-s"), ("__HOST-s", "__SECURE-s"), ("__hOsT-s", "__sEcUrE-s")],
)
def test_advisory_cookie_prefixes_are_matched_in_any_case(name: str, secure_name: str) -> None:
    """Browsers match ``__Host-``/``__Secure-`` case-insensitively.
    ``__host-s`` with ``cookie_domain`` passed start-up, Chromium then dropped every cookie
    (each one carried a ``Domain``) and the user looped back to the login page. The settings
    refuse it now, and the builder never gives such a name a ``Domain`` or drops ``Secure``."""
    from extauthz.errors import SettingsError
    from extauthz.settings import load_settings

    with pytest.raises(SettingsError, match=r"^session\.cookie_domain: "):
        load_settings(environ={
            "EXTAUTHZ_SESSION_COOKIE_NAME": name, "EXTAUTHZ_SESSION_COOKIE_DOMAIN": "app.test",
        })  # fmt: skip
    for prefixed in (name, secure_name):
        with pytest.raises(SettingsError, match=r"^session\.cookie_secure: "):
            load_settings(environ={
                "EXTAUTHZ_SESSION_COOKIE_NAME": prefixed, "EXTAUTHZ_SESSION_COOKIE_SECURE": "false",
            })  # fmt: skip
    cookie = SessionCookie(name, secure=False, domain="app.test")
    for value in (cookie.set("t", 10), *cookie.clearing()):
        assert "Domain" not in value and value.endswith("; Secure"), value
    secure = SessionCookie(secure_name, secure=False)
    assert secure.set("t", 10).endswith("; Secure")


HOSTILE_RETURN_TO = [
    "/a b", "/a\tb", " /a", "/a ", "/a\u00a0b", "/a\u3000b", "/a\u2028b", "/a\u0085b",
    "/a\u202eb", "/a\u200bb", "/a\x7fb", "/a\r\nSet-Cookie: x=1",
]


def assert_safe_location(location: str) -> None:
    assert location.isascii() and location.isprintable() and " " not in location, location
    assert location.startswith("/") and not location.startswith("//"), location


async def test_advisory_no_location_carries_white_space_or_control_characters(
    h: Harness, tmp_path: Path
) -> None:
    """A ``return_to`` with a space was accepted and echoed raw into
    ``Location``. Every route that builds a ``Location`` (Check's login redirect and each
    ``/auth/*`` route, all of them driven here) refuses white space and control characters,
    ASCII or not, and falls back to the default target."""
    from aiohttp.test_utils import TestClient, TestServer
    from argon2 import PasswordHasher, Type

    from extauthz.login.http import AuthHandlers
    from extauthz.server.http_server import build_http_app

    for bad in HOSTILE_RETURN_TO:  # Check: the target comes from the request's own path
        ctx = RequestContext(method="GET", scheme="https", host="app.test", path=bad,
                             headers={"accept": "text/html"})  # fmt: skip
        denied = await h.authorizer.authorize(ctx)
        assert isinstance(denied, Deny) and denied.status == 302
        (location,) = [v for k, v in denied.headers if k == "location"]
        assert_safe_location(location)
        assert parse_qs(urlsplit(location).query)["return_to"] == ["/"]

    users = FileUserStore(tmp_path / "users.json")
    verifier = PasswordVerifier(
        users, hasher=PasswordHasher(time_cost=1, memory_cost=8, parallelism=1, type=Type.ID)
    )
    await users.put("alice", verifier.hash_password("pw"), [], [])
    handlers = AuthHandlers(LoginService(h.authorizer.resolver, verifier), realm="r")
    client = TestClient(TestServer(build_http_app(h.keyring, handlers)))
    await client.start_server()
    redirected: set[str] = set()
    try:
        origin = f"http://{client.host}:{client.port}"
        for route in handlers.routes():
            for bad, live in itertools.product(HOSTILE_RETURN_TO, (True, False)):
                token = (await h.login("alice"))[0] if live else tokens.mint_token()
                headers = {"Accept": "text/html", "Origin": origin, "Cookie": f"{COOKIE}={token}"}
                form = {"username": "alice", "password": "pw", "return_to": bad}
                response = await client.request(
                    route.method, route.path, params={"return_to": bad}, headers=headers,
                    data=form if route.method == "POST" else None, allow_redirects=False,
                )  # fmt: skip
                body = await response.text()
                assert response.status < 500, (route.method, route.path, body)
                if "name=\"return_to\"" in body:  # the login form posts it back: the default
                    assert 'name="return_to" value="/"' in body, body
                redirect = response.headers.get("Location")
                if redirect is None:
                    continue
                redirected.add(f"{route.method} {route.path}")
                assert_safe_location(redirect)
                if route.method == "POST" and route.path == "/auth/login":
                    assert redirect == "/"  # auth.default_return_to
    finally:
        await client.close()
    assert redirected == {"POST /auth/login", "POST /auth/logout", "GET /auth/session"}


NOT_AS_BROWSERS_SEND_IT = {
    "origin": [
        "https://evil@app.test", "https://app.test@evil.example",  # user info
        "https://app.test/", "https://app.test/x", "https://app.test?x", "https://app.test#x",
        "https://app.test:443",  # the default port, which browsers leave out
        "https://app.test:0443", "https://partner.test:08443",  # leading zeros
        "HTTPS://APP.TEST", "https://App.test", "NULL",  # another case
        " https://app.test", "https://app.test ", "https://app.test\t",  # spaces around
        "https://app.test.",
    ],
    "sec-fetch-site": ["Same-Origin", " same-origin"],
    "referer": [
        "https://evil@app.test/", "https://app.test@evil.example/", "https://app.test:0443/",
        "HTTPS://app.test/", " https://app.test/", "https://app.test.evil.example/",
        "https://app.testevil.example/",
    ],
}


@pytest.mark.parametrize(
    "evidence",
    [{name: value} for name, values in NOT_AS_BROWSERS_SEND_IT.items() for value in values],
)
def test_advisory_origin_evidence_is_compared_exactly(evidence: dict[str, str]) -> None:
    """The same-site check parsed ``Origin``/``Referer`` leniently, so
    values that no browser sends but that hold the right host somewhere were same-origin.
    Only the exact serialized origin (RFC 6454 §6.2) counts now."""
    from extauthz.login.csrf import SameSiteCheck

    check = SameSiteCheck.with_origins(["https://partner.test:8443"])
    for good in (
        {"origin": "https://app.test"},
        {"origin": "https://partner.test:8443"},
        {"referer": "https://app.test/page?x#y"},
        {"referer": "https://app.test"},
        {"sec-fetch-site": "same-origin"},
    ):
        assert check.violation("https", "App.Test:443", good) is None, good
    assert check.violation("https", "App.Test:443", evidence) is not None
