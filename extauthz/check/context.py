"""The Check request in the pipeline's own types (no protobuf here)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

# RFC 9110 §5.3 joins repeated field lines with ","; a header with a list syntax of its own
# is joined with that: Cookie with "; " (RFC 6265 §5.4, RFC 9113 §8.2.3)
_SEPARATORS = {"cookie": "; "}

# Every request header the Check reads, besides ``api_keys.header``: the credentials
# (``authorization``, ``cookie``), the denial's form (``accept``), the same-site check of
# ``same_site: required`` routes (``origin``, ``sec-fetch-site``, ``referer``,
# ``content-type``: extauthz.login.csrf) and the W3C Trace Context a Check continues
# (``traceparent``, ``tracestate``). Method, scheme, host and path come in fields of their own.
# Envoy sends only these (ext_authz ``allowed_headers``, extauthz.envoy_config.filters).
CHECK_HEADERS = (
    "authorization",
    "cookie",
    "accept",
    "origin",
    "sec-fetch-site",
    "referer",
    "content-type",
    "traceparent",
    "tracestate",
)


def check_headers(api_key_header: str) -> tuple[str, ...]:
    """:data:`CHECK_HEADERS` and ``api_key_header`` (``api_keys.header``, lower case): the
    request headers a ``CheckRequest`` must carry for the Check to decide as it would with
    all of them."""
    name = api_key_header.lower()
    return CHECK_HEADERS if name in CHECK_HEADERS else (*CHECK_HEADERS, name)


def join_headers(lines: Iterable[tuple[str, str]]) -> dict[str, str]:
    """``(name, value)`` field lines → lower-case name → value; repeated lines are joined in
    order with the separator of their header's grammar (``; `` for ``cookie``, else ``,``)."""
    collected: dict[str, list[str]] = {}
    for key, value in lines:
        collected.setdefault(key.lower(), []).append(value)
    # one join per name: adding line by line copied the growing value each time (quadratic
    # in the number of lines, which a CheckRequest of up to 1 MiB can make some 80,000)
    return {name: _SEPARATORS.get(name, ",").join(values) for name, values in collected.items()}


@dataclass(frozen=True)
class RequestContext:
    """What the pipeline knows about one request.

    ``headers`` maps lower-case names to values; Envoy joins repeated headers with ``,``
    (``CheckRequest.attributes.request.http.headers``), cookies included;
    :func:`join_headers` joins lines it receives one by one with their own separator.
    ``path`` has the query split off into ``query``. ``context_extensions`` are the
    per-route settings from Envoy (``AttributeContext.context_extensions``).
    """

    method: str
    scheme: str
    host: str
    path: str
    query: str = ""
    headers: Mapping[str, str] = field(default_factory=dict)
    context_extensions: Mapping[str, str] = field(default_factory=dict)
    peer_address: str = ""

    def header(self, name: str) -> str | None:
        return self.headers.get(name)

    @property
    def path_and_query(self) -> str:
        return f"{self.path}?{self.query}" if self.query else self.path
