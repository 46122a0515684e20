"""What the pipeline decided, in its own types; :mod:`extauthz.check.envoy_adapter` turns these
into ``CheckResponse`` messages."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Allow:
    """Forward the request upstream, changed as follows
    (``envoy.service.auth.v3.OkHttpResponse``):

    ``headers_to_set``   set with ``OVERWRITE_IF_EXISTS_OR_ADD`` (every client copy replaced)
    ``headers_to_remove`` removed from the upstream request
    ``response_headers_to_add`` added to the response toward the client
    ``metadata``         ``CheckResponse.dynamic_metadata`` (string values)
    """

    headers_to_set: tuple[tuple[str, str], ...] = ()
    headers_to_remove: tuple[str, ...] = ()
    response_headers_to_add: tuple[tuple[str, str], ...] = ()
    metadata: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Deny:
    """Answer the client directly (``envoy.service.auth.v3.DeniedHttpResponse``).

    ``headers`` are response headers (``Set-Cookie`` may repeat).
    """

    status: int
    headers: tuple[tuple[str, str], ...] = ()
    body: str = ""
    metadata: Mapping[str, str] = field(default_factory=dict)


Decision = Allow | Deny
