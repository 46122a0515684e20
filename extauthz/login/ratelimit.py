"""Rate limits: fixed-window counters in Redis or in memory, behind one protocol
(:class:`RateLimiter`), keyed by :class:`RateKey` (a namespace plus a hash of the subject).

Used by the authentication service to slow down password guessing (``login:user``,
``login:addr``) and by anything else that needs a per-client budget (``check:addr``). The
semantics of ``hit`` (count, and say whether *this* hit is over), ``blocked`` (count nothing;
would the *next* hit be over) and ``refund``: docs/authentication.md, 'The counters'.
"""

from __future__ import annotations

import hashlib
import ipaddress
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

LOGIN_USER = "login:user"
LOGIN_ADDR = "login:addr"
CHECK_ADDR = "check:addr"
MFA_USER = "mfa:user"
MFA_ADDR = "mfa:addr"

_NAMESPACE = re.compile(r"[a-z0-9_]+(?::[a-z0-9_]+)*")
_DIGEST_HEX = 32  # 128 bits of SHA-256: no practical collisions, short keys


@dataclass(frozen=True)
class RateKey:
    """What a counter is for: ``namespace`` (e.g. ``login:user``) and ``subject`` (the name).

    ``namespace`` is ours: lower-case ``[a-z0-9_]`` words joined by ``:`` (``ValueError``
    otherwise). ``subject`` is whatever the client sent and is only ever used hashed.
    """

    namespace: str
    subject: str

    def __post_init__(self) -> None:
        if not _NAMESPACE.fullmatch(self.namespace):
            raise ValueError(f"invalid rate-limit namespace {self.namespace!r}")

    @property
    def storage_key(self) -> str:
        """``<namespace>:<first 32 hex digits of SHA-256(subject as UTF-8)>``."""
        digest = hashlib.sha256(self.subject.encode("utf-8", "surrogatepass")).hexdigest()
        return f"{self.namespace}:{digest[:_DIGEST_HEX]}"

    @classmethod
    def for_address(cls, namespace: str, address: str) -> RateKey:
        """A key for a client address; see :func:`address_subject`."""
        return cls(namespace, address_subject(address))


def address_subject(address: str) -> str:
    """The part of a client IP address a limit should apply to.

    IPv4 addresses (also IPv4-mapped IPv6) count individually; IPv6 addresses count per /64,
    the smallest block a single site is normally given (RFC 6177), so one client cannot
    sidestep the limit by rotating through its own addresses. Anything that does not parse is
    returned unchanged (it is hashed anyway).
    """
    try:
        ip = ipaddress.ip_address(address.strip())
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


@dataclass(frozen=True)
class Verdict:
    """The answer for one key.

    ``blocked``: over the limit (see the module docstring for hit vs. check).
    ``retry_after_seconds``: whole seconds until the window ends; >= 1 when blocked, else 0.
    ``remaining``: hits left in the current window (0 when blocked).
    """

    blocked: bool
    retry_after_seconds: int
    remaining: int


class RateLimiter(Protocol):
    """A counter per :class:`RateKey`. A backend that cannot answer raises
    :class:`~extauthz.errors.StoreUnavailable`."""

    limit: int
    window_seconds: int

    async def hit(self, key: RateKey) -> Verdict:
        """Count one hit; ``blocked`` if this hit is beyond ``limit`` in the current window."""

    async def blocked(self, key: RateKey) -> Verdict:
        """Count nothing; ``blocked`` if ``limit`` hits are already spent in the window."""

    async def reset(self, key: RateKey) -> None:
        """Forget the key's hits (e.g. after a successful login)."""

    async def refund(self, key: RateKey) -> None:
        """Take back one hit of the current window (nothing if the count is zero or the
        window has ended); the window's end does not move."""


class CountedRateLimiter:
    """``inner``, and ``refused(key.namespace)`` for every :meth:`hit` over the limit (the
    ``extauthz_rate_limited_total`` metric)."""

    def __init__(self, inner: RateLimiter, refused: Callable[[str], None]) -> None:
        self.inner = inner
        self.limit = inner.limit
        self.window_seconds = inner.window_seconds
        self._refused = refused

    async def hit(self, key: RateKey) -> Verdict:
        verdict = await self.inner.hit(key)
        if verdict.blocked:
            self._refused(key.namespace)
        return verdict

    async def blocked(self, key: RateKey) -> Verdict:
        return await self.inner.blocked(key)

    async def reset(self, key: RateKey) -> None:
        await self.inner.reset(key)

    async def refund(self, key: RateKey) -> None:
        await self.inner.refund(key)


def _check_config(limit: int, window_seconds: int) -> None:
    for name, value in (("limit", limit), ("window_seconds", window_seconds)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, not {value!r}")


def _verdict(count: int, limit: int, ttl_seconds: float, *, is_hit: bool) -> Verdict:
    over = count > limit if is_hit else count >= limit
    if not over:
        return Verdict(False, 0, max(limit - count, 0))
    return Verdict(True, max(1, math.ceil(ttl_seconds)), 0)


class MemoryRateLimiter:
    """The same counters in this process (embedded mode and tests); nothing is shared.

    ``clock`` returns seconds (default ``time.monotonic``). Expired counters are swept
    when the table has doubled since the last sweep, so memory stays proportional to the
    keys active in one window.
    """

    def __init__(self, limit: int, window_seconds: int,
                 clock: Callable[[], float] = time.monotonic) -> None:
        _check_config(limit, window_seconds)
        self.limit = limit
        self.window_seconds = window_seconds
        self._clock = clock
        self._counters: dict[str, tuple[int, float]] = {}  # storage key -> (count, window end)
        self._sweep_at = 1024

    async def hit(self, key: RateKey) -> Verdict:
        now = self._clock()
        skey = key.storage_key
        count, ends = self._current(skey, now)
        if count == 0:
            ends = now + self.window_seconds
        count += 1
        self._counters[skey] = (count, ends)
        if len(self._counters) >= self._sweep_at:
            self._sweep(now)
        return _verdict(count, self.limit, ends - now, is_hit=True)

    async def blocked(self, key: RateKey) -> Verdict:
        now = self._clock()
        count, ends = self._current(key.storage_key, now)
        return _verdict(count, self.limit, ends - now, is_hit=False)

    async def reset(self, key: RateKey) -> None:
        self._counters.pop(key.storage_key, None)

    async def refund(self, key: RateKey) -> None:
        skey = key.storage_key
        count, ends = self._current(skey, self._clock())
        if count > 0:
            self._counters[skey] = (count - 1, ends)

    def _current(self, skey: str, now: float) -> tuple[int, float]:
        entry = self._counters.get(skey)
        if entry is None or entry[1] <= now:
            return 0, now
        return entry

    def _sweep(self, now: float) -> None:
        self._counters = {k: v for k, v in self._counters.items() if v[1] > now}
        self._sweep_at = max(1024, 2 * len(self._counters))
