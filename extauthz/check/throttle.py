"""Throttling of failed token lookups (``check:addr``), per client address.

One :class:`LookupThrottle`, through the one :class:`~extauthz.check.resolver.SessionResolver`,
serves ``Check`` and the auth service's ``/auth/*``. Every failed candidate counts; an address
over the limit is answered 429 without a store lookup; the block is remembered in this process;
a failing rate limiter counts as "not blocked" (docs/authentication.md, 'Brute force').
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from extauthz.errors import StoreUnavailable
from extauthz.login.ratelimit import CHECK_ADDR, RateKey, RateLimiter, address_subject

log = logging.getLogger("extauthz.check.throttle")


class LookupThrottle:
    """Counts failed lookups per address (``limiter``'s limit and window apply).

    At most ``max_blocked`` blocked addresses are remembered locally; past that the oldest
    entries are dropped (they are still blocked in a shared limiter). ``refused(CHECK_ADDR)``
    is told of every lookup refused by a block remembered here (one the limiter itself
    reports is its own to count: :class:`~extauthz.login.ratelimit.CountedRateLimiter`).
    """

    def __init__(
        self,
        limiter: RateLimiter,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_blocked: int = 65536,
        refused: Callable[[str], None] | None = None,
    ) -> None:
        self.limiter = limiter
        self._refused = refused
        self._clock = clock
        self._max_blocked = max_blocked
        self._blocked_until: dict[str, float] = {}

    def retry_after(self, address: str) -> int:
        """Seconds until ``address`` may try again (0: not blocked; anything else is a refusal,
        counted). No I/O."""
        if not address or not self._blocked_until:  # the hot path: nobody is blocked
            return 0
        subject = address_subject(address)
        until = self._blocked_until.get(subject)
        if until is None:
            return 0
        left = until - self._clock()
        if left <= 0:
            del self._blocked_until[subject]
            return 0
        if self._refused is not None:
            self._refused(CHECK_ADDR)
        return max(1, int(left + 0.999))

    async def failed(self, address: str, times: int = 1) -> int:
        """Count ``times`` failed lookups from ``address``; the seconds to wait if it is now
        over the limit, else 0."""
        if not address or times < 1:
            return 0
        subject = address_subject(address)
        key = RateKey(CHECK_ADDR, subject)
        try:
            for _ in range(times):
                verdict = await self.limiter.hit(key)
                if verdict.blocked:
                    break
        except StoreUnavailable:
            log.warning("cannot count a failed lookup: rate limiter unavailable", exc_info=True)
            return 0
        if not verdict.blocked:
            return 0
        if len(self._blocked_until) >= self._max_blocked:
            self._blocked_until.pop(next(iter(self._blocked_until)))
        self._blocked_until[subject] = self._clock() + verdict.retry_after_seconds
        log.warning(
            "throttling token lookups from one address for %ds (over %d failures in %ds)",
            verdict.retry_after_seconds,
            self.limiter.limit,
            self.limiter.window_seconds,
        )
        return verdict.retry_after_seconds
