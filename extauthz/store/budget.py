"""The time one Check may spend on the session store, every attempt included.

Envoy's ext_authz filter gives a Check ``grpc_service.timeout`` (0.5 s in envoy/*.yaml); when it
runs out first, Envoy answers with its own 503, which carries none of extauthz's dynamic
metadata. :func:`store_budget` ends the store's part earlier with
:class:`~extauthz.errors.StoreUnavailable` (gRPC ``UNAVAILABLE``), whatever the store was doing:
a retry, its backoff, a wait for a pooled connection, a read from a server that never answers.
The rule between the two: docs/strategies.md, 'A Check's budget'.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from extauthz.errors import StoreUnavailable


@asynccontextmanager
async def store_budget(seconds: float | None) -> AsyncIterator[None]:
    """Run the body for at most ``seconds`` (``None``: no bound).

    When they run out the body is cancelled where it waits (redis-py closes a connection whose
    reply was not read, so no later request can read it) and :class:`StoreUnavailable` is
    raised. A cancellation from outside (the RPC cancelled, the server stopping) is not
    turned into anything else: it propagates.

    :raises StoreUnavailable: the budget ran out.
    """
    if seconds is None:
        yield
        return
    scope = asyncio.timeout(seconds)
    try:
        async with scope:
            yield
    except TimeoutError:
        if not scope.expired():
            raise
        raise StoreUnavailable(
            f"session store: no answer within the Check's budget of {seconds * 1000:g} ms"
        ) from None
