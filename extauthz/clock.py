"""The clock contract between extauthz nodes, the session store and upstream verifiers.

Every extauthz node and every upstream service that verifies the JWT keeps its clock within
:data:`MAX_CLOCK_OFFSET_SECONDS` of the store's clock (Redis ``TIME``); any two of them are then
at most ``2 * MAX_CLOCK_OFFSET_SECONDS`` apart. A minted JWT's ``iat`` and ``nbf`` (RFC 7519
§4.1.5, §4.1.6) lie :data:`JWT_BACKDATE_SECONDS` (that distance) in the past, so a verifier
that allows no leeway at all accepts it at once; ``exp`` is counted from the node's real time.
Each node measures its offset from the store's clock (start-up and every node heartbeat),
publishes it (``extauthz_clock_offset_seconds``, ``extauthz status``) and logs a warning while
it is outside the contract. Details: docs/operations.md, 'Clocks'.
"""

from __future__ import annotations

MAX_CLOCK_OFFSET_SECONDS = 2.5
JWT_BACKDATE_SECONDS = int(2 * MAX_CLOCK_OFFSET_SECONDS)
