"""The Check request in the pipeline's own types (no protobuf here)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class RequestContext:
    """What the pipeline knows about one request.

    ``headers`` maps lower-case names to values; Envoy joins repeated headers with ``,``
    (``CheckRequest.attributes.request.http.headers``). ``path`` has the query split off
    into ``query``. ``context_extensions`` are the per-route settings from Envoy
    (``AttributeContext.context_extensions``).
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
