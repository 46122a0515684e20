"""Supervised background loops, and the start/stop interface every long-lived component has.

A :class:`Loop` runs one ``step`` again and again until it is stopped (the first time after
``first_delay`` seconds). After a step that returns, it waits ``interval`` seconds (or the
delay the step returned); after a step that raised, it logs once and backs off exponentially
(``backoff`` = first and largest delay, seconds). An
:class:`~extauthz.errors.ExtauthzError` (a store that did not answer) is logged at
``log_level`` without a traceback; anything else is a bug and is logged with one, and the loop
goes on either way: a background task never dies silently. :meth:`Loop.stop` sets the
stop flag, cancels the step in progress and waits for the task at most ``grace`` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Protocol

from extauthz.errors import ExtauthzError

log = logging.getLogger("extauthz.loops")

Step = Callable[[], Awaitable[float | None]]


class Service(Protocol):
    """A component with background work: started once by the composition root, stopped once
    (in reverse order) on shutdown. Both are idempotent."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


class Loop:
    """``step`` run until :meth:`stop` (module docstring). ``name`` names the task and the
    log lines; durations are seconds."""

    def __init__(
        self,
        name: str,
        step: Step,
        *,
        interval: float,
        backoff: tuple[float, float] = (0.05, 1.0),
        log_level: int = logging.WARNING,
        logger: logging.Logger = log,
        grace: float = 1.0,
        first_delay: float = 0.0,
    ) -> None:
        self.name = name
        self._step = step
        self.interval = interval
        self._backoff = backoff
        self._delay = backoff[0]
        self._log_level = log_level
        self._log = logger
        self._grace = grace
        self._first_delay = first_delay
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.failures = 0

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def reset_backoff(self) -> None:
        """The step made progress: the next failure waits the shortest delay again."""
        self._delay = self._backoff[0]

    async def start(self) -> None:
        """Run the loop in a task of its own (idempotent)."""
        if self._task is None:
            self._stopping.clear()
            self._task = asyncio.create_task(self.run(), name=self.name)

    async def stop(self) -> None:
        """Stop: no further step starts, the one in progress is cancelled, and the task is
        waited for at most ``grace`` seconds."""
        task, self._task = self._task, None
        self._stopping.set()
        if task is None:
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, TimeoutError):
            await asyncio.wait_for(task, self._grace)

    async def run(self) -> None:
        """The loop itself, in the caller's task; returns once stopped."""
        await self._wait(self._first_delay)
        while not self._stopping.is_set():
            try:
                delay = await self._step()
            except ExtauthzError as exc:
                delay = self._failed()
                self._log.log(self._log_level, "%s: %s", self.name, exc)
            except Exception:  # the supervisor: a bug in a step must not end the loop
                delay = self._failed()
                self._log.exception("%s failed", self.name)
            else:
                self.failures = 0
                self.reset_backoff()
                delay = self.interval if delay is None else delay
            await self._wait(delay)

    async def _wait(self, delay: float) -> None:
        """Sleep ``delay`` seconds, or less when stopped meanwhile."""
        if delay > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)
        else:
            await asyncio.sleep(0)

    def _failed(self) -> float:
        self.failures += 1
        delay = self._delay
        self._delay = min(self._delay * 2, self._backoff[1])
        return delay


async def start_all(services: list[Service]) -> None:
    """Start ``services`` in order; when one fails, stop those already started and raise."""
    started: list[Service] = []
    try:
        for service in services:
            await service.start()
            started.append(service)
    except BaseException:
        await stop_all(started)
        raise


async def stop_all(services: list[Service]) -> None:
    """Stop ``services`` in reverse order."""
    for service in reversed(services):
        await service.stop()
