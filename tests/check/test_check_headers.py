"""The request headers Envoy sends to the Check (``CHECK_HEADERS``, ext_authz
``allowed_headers`` in the generated configs) are all it reads: a ``CheckRequest`` cut down to
them gets the same answer as one with every header of the request, for each way the headers
change a decision."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pytest
from envoy.service.auth.v3.external_auth_pb2 import CheckRequest, CheckResponse

from extauthz.check.context import CHECK_HEADERS, check_headers
from extauthz.server.grpc_server import AuthorizationServicer
from tests.fixtures.core import COOKIE, FakeServicerContext, Harness, build_harness, http_request

# what a browser sends besides the headers the Check reads
UNREAD = {
    "user-agent": "Mozilla/5.0 (X11; Linux x86_64) Chrome/131.0.0.0",
    "accept-language": "en-GB,en;q=0.9",
    "accept-encoding": "gzip, br",
    "sec-fetch-mode": "navigate",
    "sec-fetch-dest": "document",
    "x-forwarded-for": "203.0.113.9",
    "x-request-id": "5f0c",
}


@pytest.fixture
def h(tmp_path: Path) -> Harness:
    return build_harness(tmp_path)


async def _both(
    h: Harness, headers: Mapping[str, str], **request: object
) -> tuple[CheckResponse, CheckResponse]:
    """The answers to the request with every header and with only the Check's headers."""
    servicer = AuthorizationServicer(h.authorizer)
    full = http_request({**UNREAD, **headers}, **request)  # type: ignore[arg-type]
    allowed = set(check_headers("x-api-key"))
    cut = CheckRequest()
    cut.CopyFrom(full)
    fields = cut.attributes.request.http.headers
    for name in [n for n in fields if n not in allowed]:
        del fields[name]
    assert set(fields) < set(full.attributes.request.http.headers)
    return (
        await servicer.Check(full, FakeServicerContext()),
        await servicer.Check(cut, FakeServicerContext()),
    )


def test_the_list_names_the_credentials_and_the_api_key_header() -> None:
    assert {"authorization", "cookie", "accept", "origin", "referer"} <= set(CHECK_HEADERS)
    assert check_headers("X-Service-Key")[-1] == "x-service-key"
    assert check_headers("authorization") == CHECK_HEADERS


async def test_bearer_session(h: Harness) -> None:
    token, _ = await h.sessions.create("alice")
    full, cut = await _both(h, {"authorization": f"Bearer {token}", "accept": "*/*"})
    assert full.status.code == 0
    assert full == cut


async def test_cookie_session_among_other_cookies(h: Harness) -> None:
    token, _ = await h.sessions.create("alice")
    headers = {"cookie": f"theme=dark; {COOKIE}={token}; _ga=1", "accept": "text/html"}
    full, cut = await _both(h, headers)
    assert full.status.code == 0
    assert ("cookie", "theme=dark; _ga=1") in [
        (o.header.key, o.header.value) for o in full.ok_response.headers
    ]
    assert full == cut


async def test_api_key_header(h: Harness) -> None:
    key, _ = await h.sessions.create("svc", kind="api_key")
    full, cut = await _both(h, {"x-api-key": key})
    assert full.status.code == 0
    assert "x-api-key" in full.ok_response.headers_to_remove
    assert full == cut


@pytest.mark.parametrize("accept", ["text/html,application/xhtml+xml", "application/json"])
async def test_denial_for_a_browser_or_an_api_client(h: Harness, accept: str) -> None:
    full, cut = await _both(h, {"accept": accept})
    assert full.denied_response.status.code == (302 if accept.startswith("text/html") else 401)
    assert full == cut


@pytest.mark.parametrize(
    "signal",
    [
        {"origin": "https://evil.test"},
        {"sec-fetch-site": "cross-site"},
        {"referer": "https://evil.test/page"},
        {"content-type": "application/x-www-form-urlencoded"},
    ],
)
async def test_cross_site_request_on_a_same_site_route(
    h: Harness, signal: dict[str, str]
) -> None:
    token, _ = await h.sessions.create("alice")
    full, cut = await _both(
        h, {"cookie": f"{COOKIE}={token}", **signal}, method="POST",
        context_extensions={"same_site": "required"},
    )  # fmt: skip
    assert full.denied_response.status.code == 403
    assert full == cut
