"""The node's shutdown on SIGTERM or SIGINT: drain at once, then stop every part, the whole
of it within ``server.shutdown_grace_seconds`` plus :data:`MARGIN_SECONDS`, whatever Redis does
(down, hanging, slow, half-open). The order (README.md, 'Shutdown and draining'):

1. gRPC health answers ``NOT_SERVING`` for every service (store checks can no longer undo it),
   and the gRPC and HTTP servers stop taking new calls. None of this talks to Redis.
2. In-flight calls get the grace; the background loops stop meanwhile.
3. The components (the store's loops, the node's registration, the Redis clients) get what is
   left of the deadline.

Each step is bounded (:func:`extauthz.loops.bounded`): what does not finish is logged and left
behind. A watchdog thread ends the process at the deadline if it is still running (a task that
swallows its cancellation keeps ``asyncio.run`` from returning), naming what was still running.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

from extauthz.loops import bounded

log = logging.getLogger("extauthz")

MARGIN_SECONDS = 2.0
"""Seconds after the grace for the components and the exit itself."""

EXIT_RESERVE_SECONDS = 0.5
"""Of the margin, kept for the interpreter's exit after the last step."""


class Shutdown:
    """One shutdown: :meth:`begin` arms the watchdog, :meth:`run` runs bounded steps.

    ``exit_code`` gives the status the watchdog exits with; ``hard_exit`` is ``os._exit``
    (a test passes its own). Durations are seconds, ``clock`` monotonic.
    """

    def __init__(
        self,
        grace: float,
        exit_code: Callable[[], int],
        *,
        margin: float = MARGIN_SECONDS,
        hard_exit: Callable[[int], object] = os._exit,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.grace = grace
        self.limit = grace + margin
        self._exit_code = exit_code
        self._hard_exit = hard_exit
        self._clock = clock
        self._deadline = float("inf")
        self.running: list[str] = []
        self._watchdog: threading.Timer | None = None

    def begin(self) -> None:
        """Start the clock: the process ends ``grace + margin`` seconds from now at the latest.
        Only the first call counts."""
        if self._watchdog is not None:
            return
        self._deadline = self._clock() + self.limit
        self._watchdog = threading.Timer(self.limit, self._expire)
        self._watchdog.name = "shutdown-watchdog"
        self._watchdog.daemon = True
        self._watchdog.start()

    def left(self) -> float:
        """Seconds the steps still have (the exit reserve excluded)."""
        return max(self._deadline - EXIT_RESERVE_SECONDS - self._clock(), 0.0)

    async def run(self, steps: dict[str, Awaitable[Any]], within: float | None = None) -> None:
        """Run the named ``steps`` concurrently for at most ``within`` seconds (and never past
        the deadline); what fails or does not finish is logged."""
        limit = self.left() if within is None else min(within, self.left())

        async def one(name: str, work: Awaitable[Any]) -> None:
            self.running.append(name)
            try:
                await bounded(f"shutdown: {name}", work, limit)
            finally:
                self.running.remove(name)

        await asyncio.gather(*(one(name, work) for name, work in steps.items()))

    def _expire(self) -> None:
        still = ", ".join(self.running) or "the event loop's exit"
        log.error(
            "shutdown did not end within %.1fs (still running: %s); exiting now",
            self.limit,
            still,
        )
        for handler in logging.getLogger().handlers:
            handler.flush()
        self._hard_exit(self._exit_code())
