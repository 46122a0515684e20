"""Failed-login budgets: per user name (``login:user``) and per client address
(``login:addr``), counted **before** the password is checked, with an atomic increment, so
parallel attempts cannot all slip under a limit. Only failed attempts keep their count (see
:meth:`LoginLimits.reserve`). The counters are :class:`~extauthz.login.ratelimit.RateLimiter`
values; their backend's errors propagate.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

from extauthz.errors import StoreUnavailable
from extauthz.login.ratelimit import (
    LOGIN_ADDR,
    LOGIN_USER,
    MFA_ADDR,
    MFA_USER,
    RateKey,
    RateLimiter,
)

log = logging.getLogger("extauthz.auth")


@dataclass(frozen=True)
class LoginLimits:
    """Failed-login budgets: ``per_user`` (``login:user``) and ``per_address``
    (``login:addr``). A login without limits counts nothing."""

    per_user: RateLimiter
    per_address: RateLimiter
    # the counters' namespaces: second-factor attempts (``mfa:user``, ``mfa:addr``) count
    # apart from passwords, so a right password (which resets ``login:user``) never buys
    # more code guesses
    user_namespace: str = LOGIN_USER
    address_namespace: str = LOGIN_ADDR

    def _keys(self, name: str, address: str) -> list[tuple[RateLimiter, RateKey]]:
        keys = [(self.per_user, RateKey(self.user_namespace, name))]
        if address:
            keys.append((self.per_address, RateKey.for_address(self.address_namespace, address)))
        return keys

    async def reserve(self, name: str, address: str) -> int:
        """Count one attempt against both budgets *before* the password is checked; the
        seconds to wait when either budget was already spent (the attempt is refused), else 0.

        Each count is an atomic increment, so of N attempts in flight at once at most
        ``limit`` get through, whatever their timing. A refused attempt is not a guess: its
        count is taken back from the budget that still had room (the one over its limit keeps
        it, which changes nothing in a fixed window). After the password check the caller
        settles the attempt: a failure keeps both counts, :meth:`succeeded` or
        :meth:`release` take them back. Backend errors propagate (after taking back what was
        already counted).
        """
        taken: list[tuple[RateLimiter, RateKey]] = []
        wait = 0
        try:
            for limiter, key in self._keys(name, address):
                verdict = await limiter.hit(key)
                if verdict.blocked:
                    wait = max(wait, verdict.retry_after_seconds)
                else:
                    taken.append((limiter, key))
        except BaseException:
            await _refund_quietly(taken)
            raise
        if wait:
            await _refund_quietly(taken)
        return wait

    async def succeeded(self, name: str, address: str = "") -> None:
        """A reserved attempt with the right password: forget the user's failures, and take
        this attempt back from the address's budget (only this one: one known account must
        not buy an address more guesses at others)."""
        await self.per_user.reset(RateKey(self.user_namespace, name))
        if address:
            await self.per_address.refund(RateKey.for_address(self.address_namespace, address))

    def for_second_factors(self) -> LoginLimits:
        """The same budgets, counted apart for second-factor attempts (``mfa:user``,
        ``mfa:addr``)."""
        return LoginLimits(self.per_user, self.per_address, MFA_USER, MFA_ADDR)

    async def release(self, name: str, address: str) -> None:
        """Take a reserved attempt back from both budgets (no answer about the password was
        given: a backend failed)."""
        for limiter, key in self._keys(name, address):
            await limiter.refund(key)


async def _refund_quietly(taken: Iterable[tuple[RateLimiter, RateKey]]) -> None:
    for limiter, key in taken:
        try:
            await limiter.refund(key)
        except StoreUnavailable:
            log.warning("login: cannot take back a rate-limit count", exc_info=True)
