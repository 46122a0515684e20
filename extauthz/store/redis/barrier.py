"""The acknowledgement barrier of revocations, both ends.

- :class:`SequenceAcks`, the acknowledging end: a member (a caching node, a node reading from
  its replica) has applied revocation ``seq`` and says so through ``send``. Acknowledgements
  are monotonic, so only the newest number pending is sent; a failed send is retried (until
  then the revoker waits or fails, never reports success early).
- :class:`AckBarrier`, the revoker's end: wait until every live member of a
  :class:`~extauthz.store.redis.membership.Role` acknowledged ``seq``. What happens at the
  deadline depends on the role: caching nodes have stopped trusting their caches by then, so
  the barrier returns (``strict=False``); a replica that may still answer for the revoked
  session makes it raise :class:`~extauthz.errors.StoreWriteNotDurable` (``strict=True``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from extauthz.loops import Loop
from extauthz.store.redis.errors import StoreUnavailable, StoreWriteNotDurable

log = logging.getLogger("extauthz.store.barrier")


class SequenceAcks:
    """Sends the newest wanted sequence number through ``send`` from a loop of its own
    (:meth:`start`/:meth:`stop`); ``what`` names it in logs."""

    def __init__(self, send: Callable[[int], Awaitable[None]], what: str) -> None:
        self._send = send
        self.acked = 0
        self._wanted = 0
        self._event = asyncio.Event()
        self._loop = Loop(f"{what}-acks", self._step, interval=0, backoff=(0.01, 0.01))

    def want(self, seq: int) -> None:
        if seq > self._wanted:
            self._wanted = seq
            self._event.set()

    async def _step(self) -> None:
        if self._wanted <= self.acked:
            await self._event.wait()
            self._event.clear()
        seq = self._wanted
        if seq > self.acked:
            await self._send(seq)  # StoreUnavailable: the loop retries 10 ms later
            self.acked = seq

    async def start(self) -> None:
        await self._loop.start()

    async def stop(self) -> None:
        await self._loop.stop()


class AckBarrier:
    """Wait until ``pending(seq)`` (the live members that have not acknowledged ``seq``) is
    empty, at most ``timeout`` seconds; see the module docstring for the deadline.

    :param pending: raises :class:`StoreUnavailable` when Redis cannot be asked (the barrier
        then keeps trying until the deadline).
    """

    def __init__(
        self,
        pending: Callable[[int], Awaitable[list[str]]],
        *,
        timeout: float,
        strict: bool,
        clock: Callable[[], float] = time.monotonic,
        observe: Callable[[float], None] | None = None,
    ) -> None:
        self.pending = pending
        self.observe = observe  # seconds from the call to the last acknowledgement (or deadline)
        self.timeout = timeout
        self._strict = strict
        self._clock = clock
        self.stats = {"waits": 0, "timeouts": 0}

    async def __call__(self, seq: int) -> None:
        """Return once ``seq`` is acknowledged everywhere, or the deadline passed.

        :raises StoreWriteNotDurable: the deadline passed and the barrier is strict.
        """
        started = self._clock()
        deadline = started + self.timeout
        self.stats["waits"] += 1
        delay = 0.0005
        while True:
            try:
                waiting = await asyncio.wait_for(
                    self.pending(seq), timeout=max(0.001, deadline - self._clock())
                )
            except (StoreUnavailable, TimeoutError) as exc:
                cause = exc.__cause__ if exc.__cause__ is not None else exc
                waiting = [f"? ({cause.__class__.__name__})"]
            if not waiting:
                if self.observe is not None:
                    self.observe(self._clock() - started)
                return
            left = deadline - self._clock()
            if left <= 0:
                self.stats["timeouts"] += 1
                if self.observe is not None:
                    self.observe(self._clock() - started)
                self._expired(seq, waiting)
                return
            await asyncio.sleep(min(delay, left))
            delay = min(delay * 2, 0.01)

    def _expired(self, seq: int, waiting: list[str]) -> None:
        if self._strict:
            raise StoreWriteNotDurable(
                f"revocation {seq} not applied within {self.timeout * 1000:.0f} ms by the "
                f"replicas that nodes {', '.join(waiting)} read from: they may still answer "
                "for it; retry"
            )
        log.warning(
            "revocation %d not acknowledged by %s within %.0f ms; they stopped trusting "
            "their caches by now",
            seq,
            ",".join(waiting),
            self.timeout * 1000,
        )
