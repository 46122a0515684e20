"""Header-name rules shared by the settings checks: what a configurable header may be called."""

from __future__ import annotations

import re

HEADER_NAME = re.compile(r"^[!#$%&'*+\-.^_`|~0-9a-z]+$")  # RFC 9110 token, lower case
# headers the JWT must never be written into: their values mean something else to HTTP,
# to Envoy or to the upstream
RESERVED_HEADERS = frozenset(
    {
        "host", "cookie", "set-cookie", "content-length", "content-type", "content-encoding",
        "transfer-encoding", "connection", "keep-alive", "te", "trailer", "upgrade",
        "proxy-authorization", "proxy-connection", "forwarded", "via", "x-request-id",
        "expect", "range", "origin", "referer",
    }
)  # fmt: skip
RESERVED_PREFIXES = ("x-forwarded-", "x-envoy-", "sec-", ":")
