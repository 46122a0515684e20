"""Same-site checks (extauthz.login.csrf)."""

from __future__ import annotations

import pytest

from extauthz.login.csrf import SameSiteCheck, normalize_origin


@pytest.mark.parametrize(
    ("url", "origin"),
    [
        ("https://App.Example:443/x?y", "https://app.example"),
        ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
        ("http://[::1]:80/", "http://[::1]"),
        ("ftp://x", None),
        ("null", None),
        ("https://x:99999", None),
    ],
)
def test_normalize_origin(url: str, origin: str | None) -> None:
    assert normalize_origin(url) == origin


CHECK = SameSiteCheck.with_origins(["https://login.example"])


@pytest.mark.parametrize(
    ("headers", "same_site"),
    [
        ({"origin": "https://app.example"}, True),
        ({"origin": "https://login.example"}, True),
        ({"origin": "http://app.example"}, False),  # a different scheme is another origin
        ({"origin": "https://app.example.evil"}, False),
        ({"origin": "null"}, False),
        # Origin wins over the other evidence
        ({"origin": "https://evil.example", "sec-fetch-site": "same-origin"}, False),
        ({"sec-fetch-site": "same-origin"}, True),
        ({"sec-fetch-site": "none"}, True),
        ({"sec-fetch-site": "same-site"}, False),
        ({"referer": "https://app.example/page"}, True),
        ({"referer": "https://evil.example/https://app.example"}, False),
        ({"content-type": "application/x-www-form-urlencoded"}, False),
        ({"content-type": "multipart/form-data; boundary=x"}, False),
        ({"content-type": "text/plain"}, False),
        ({"content-type": "application/json"}, True),  # needs a CORS preflight cross-site
        ({}, True),  # no body and no browser evidence: not a browser
    ],
)
def test_violation(headers: dict[str, str], same_site: bool) -> None:
    assert (CHECK.violation("https", "app.example", headers) is None) is same_site
