"""Supervised background loops, and the start/stop interface every long-lived component has.

A :class:`Loop` runs one ``step`` again and again until it is stopped (the first time after
``first_delay`` seconds). After a step that returns, it waits ``interval`` seconds (or the
delay the step returned); after a step that raised, it logs once and backs off exponentially
(``backoff`` = first and largest delay, seconds). An
:class:`~extauthz.errors.ExtauthzError` (a store that did not answer) is logged at
``log_level`` without a traceback; anything else is a bug and is logged with one, and the loop
goes on either way: a background task never dies silently. :meth:`Loop.stop` sets the
stop flag, cancels the step in progress and waits for the task at most ``grace`` seconds.

Every wait on a stopping task here is bounded (:func:`settle`): a cancellation can be swallowed
(on Python 3.11 inside redis-py's socket timeouts), and ``asyncio.wait_for`` waits for a task it
cancelled without any limit. What does not end in time is logged and left behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from extauthz.errors import ExtauthzError

log = logging.getLogger("extauthz.loops")

Step = Callable[[], Awaitable[float | None]]

RECANCEL_SECONDS = 0.1
"""How often :func:`settle` cancels again a task that has not ended yet."""


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

    @property
    def stopping(self) -> bool:
        """The stop flag: a step that loops inside itself ends when it is set."""
        return self._stopping.is_set()

    async def stop(self) -> None:
        """Stop: no further step starts, the one in progress is cancelled (again, when it
        swallowed the cancellation), and the task is waited for at most ``grace`` seconds;
        one that still runs then is logged and left behind."""
        task, self._task = self._task, None
        self._stopping.set()
        if task is None:
            return
        if not await settle(task, self._grace, cancel=True):
            self._log.warning("%s did not stop within %gs; left behind", self.name, self._grace)

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


async def settle(task: asyncio.Future[Any], within: float, *, cancel: bool = False) -> bool:
    """Wait at most ``within`` seconds (never longer) for ``task`` to end; return whether it
    did. With ``cancel``, cancel it first and again every :data:`RECANCEL_SECONDS`. Its result
    or exception is not raised here (a task left behind has its exception logged by asyncio's
    handler once retrieved, so it is retrieved here when it ends later)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + max(within, 0.0)
    while not task.done():
        left = deadline - loop.time()
        if left <= 0:
            task.add_done_callback(_retrieve)
            return False
        if cancel:
            task.cancel()
        await asyncio.wait({task}, timeout=min(left, RECANCEL_SECONDS) if cancel else left)
    return True


def _retrieve(task: asyncio.Future[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.warning("a task left behind ended with %r", task.exception())


async def bounded(what: str, work: Awaitable[Any], within: float) -> bool:
    """Run ``work`` in a task of its own for at most ``within`` seconds; return whether it
    finished. An exception it raised is logged with ``what``, not raised (shutdown goes on);
    one still running then is cancelled, logged and left behind (:func:`settle`)."""
    task = asyncio.ensure_future(work)
    if not await settle(task, within):
        task.cancel()
        log.warning("%s did not finish within %.1fs; left behind", what, max(within, 0.0))
        return False
    if not task.cancelled() and (exc := task.exception()) is not None:
        log.error("%s failed", what, exc_info=exc)
    return True


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


async def stop_all(services: list[Service], within: float | None = None) -> None:
    """Stop ``services`` in reverse order. With ``within`` (seconds), all of it ends by then:
    each stop gets what is left (at least :data:`RECANCEL_SECONDS`) and one that fails or
    does not finish is logged (:func:`bounded`) and the next is stopped all the same."""
    if within is None:
        for service in reversed(services):
            await service.stop()
        return
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    for service in reversed(services):
        left = max(deadline - loop.time(), RECANCEL_SECONDS)
        await bounded(f"stopping {type(service).__name__}", service.stop(), left)
