"""Failed-login budgets (extauthz.login.limits) when a count cannot be taken back: a refund
that meets a store that does not answer is logged and the answer stands; a bug propagates."""

from __future__ import annotations

import logging

import pytest

from extauthz.errors import StoreUnavailable
from extauthz.login.limits import LoginLimits
from extauthz.login.ratelimit import MemoryRateLimiter, RateKey

ADDRESS = "203.0.113.5"


class RefundsFail(MemoryRateLimiter):
    """Counts in memory; every refund raises ``error``."""

    def __init__(self, error: Exception) -> None:
        super().__init__(limit=8, window_seconds=60)
        self.error = error

    async def refund(self, key: RateKey) -> None:
        raise self.error


async def spend_alices_budget(per_address: MemoryRateLimiter) -> LoginLimits:
    """Limits whose per-user budget (1) is spent by one reserved attempt for alice."""
    limits = LoginLimits(MemoryRateLimiter(limit=1, window_seconds=60), per_address)
    assert await limits.reserve("alice", ADDRESS) == 0
    return limits


async def test_a_refund_the_store_cannot_take_is_logged_and_the_refusal_stands(
    caplog: pytest.LogCaptureFixture,
) -> None:
    limits = await spend_alices_budget(RefundsFail(StoreUnavailable("redis rate limit refund")))
    with caplog.at_level(logging.WARNING, logger="extauthz.auth"):
        # refused: the per-user budget is spent; the address's count cannot be taken back
        assert await limits.reserve("alice", ADDRESS) >= 1
    assert "cannot take back a rate-limit count" in caplog.text


async def test_a_bug_in_a_refund_is_not_taken_for_an_outage() -> None:
    limits = await spend_alices_budget(RefundsFail(RuntimeError("a bug, not an outage")))
    with pytest.raises(RuntimeError, match="a bug"):
        await limits.reserve("alice", ADDRESS)
