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
from types import TracebackType

from extauthz.errors import StoreUnavailable


def store_budget(seconds: float | None) -> StoreBudget:
    """``async with store_budget(seconds)``: :class:`StoreBudget`."""
    return StoreBudget(seconds)


class StoreBudget:
    """Run the body of ``async with StoreBudget(seconds)`` for at most ``seconds`` (``None``:
    no bound).

    When they run out the body is cancelled where it waits (redis-py closes a connection whose
    reply was not read, so no later request can read it) and :class:`StoreUnavailable` is
    raised. A cancellation from outside (the RPC cancelled, the server stopping) is not
    turned into anything else: it propagates. (A class rather than an
    ``@asynccontextmanager``: it runs on every Check, and the generator machinery cost more
    than the timeout itself.)

    :raises StoreUnavailable: the budget ran out.
    """

    __slots__ = ("_seconds", "_scope")

    def __init__(self, seconds: float | None) -> None:
        self._seconds = seconds
        self._scope: asyncio.Timeout | None = None

    async def __aenter__(self) -> None:
        if self._seconds is not None:
            self._scope = asyncio.timeout(self._seconds)
            await self._scope.__aenter__()

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        scope = self._scope
        if scope is None:
            return
        try:
            await scope.__aexit__(kind, exc, tb)
        except TimeoutError:
            if not scope.expired():
                raise
            raise StoreUnavailable(
                f"session store: no answer within the Check's budget of "
                f"{self._seconds * 1000:g} ms"  # type: ignore[operator]
            ) from None
