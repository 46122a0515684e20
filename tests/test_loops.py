"""The supervised background loop (extauthz.loops): its error policy, backoff and stop."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from extauthz.errors import StoreUnavailable
from extauthz.loops import Loop, Service, start_all, stop_all


async def test_failures_back_off_and_a_bug_does_not_end_the_loop(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls: list[float] = []
    failures = [StoreUnavailable("redis ping: down"), ValueError("bug"), None, None]

    async def step() -> None:
        calls.append(time.monotonic())
        failure = failures[len(calls) - 1] if len(calls) <= len(failures) else None
        if failure is not None:
            raise failure

    loop = Loop("test-loop", step, interval=0.2, backoff=(0.02, 0.04))
    with caplog.at_level(logging.WARNING, logger="extauthz.loops"):
        await loop.start()
        while len(calls) < 4:
            await asyncio.sleep(0.005)
        await loop.stop()
    gaps = [b - a for a, b in zip(calls, calls[1:], strict=False)]
    assert 0.02 <= gaps[0] < 0.15 and 0.04 <= gaps[1] < 0.15  # backed off, doubled
    assert gaps[2] >= 0.2  # a success waits the interval
    assert "test-loop: redis ping: down" in caplog.text
    (bug,) = [r for r in caplog.records if r.exc_info]
    assert "test-loop failed" in bug.getMessage()
    assert not loop.running


async def test_stop_is_bounded_even_when_a_step_hangs() -> None:
    started = asyncio.Event()

    async def hang() -> None:
        started.set()
        await asyncio.Event().wait()

    loop = Loop("hang", hang, interval=1.0, grace=0.5)
    await start_all([loop])
    await started.wait()
    t0 = time.monotonic()
    await stop_all([loop])
    assert time.monotonic() - t0 < 0.6 and not loop.running
    await loop.stop()  # idempotent


async def test_first_delay_postpones_the_first_step() -> None:
    calls: list[float] = []

    async def step() -> None:
        calls.append(time.monotonic())

    t0 = time.monotonic()
    loop = Loop("later", step, interval=10.0, first_delay=0.1)
    await loop.start()
    while not calls:
        await asyncio.sleep(0.005)
    await loop.stop()
    assert calls[0] - t0 >= 0.1 and len(calls) == 1


class _Stubborn:
    """A step (or a service's stop) that swallows every cancellation until ``release``:
    what redis-py's socket timeouts can do to a cancellation on Python 3.11."""

    def __init__(self) -> None:
        self.entered = asyncio.Event()
        self.released = False
        self.cancellations = 0

    async def run(self) -> None:
        self.entered.set()
        while not self.released:
            try:
                await asyncio.sleep(0.01)
            except asyncio.CancelledError:
                self.cancellations += 1


async def _ends_within(work: asyncio.Future[None] | asyncio.Task[None], seconds: float) -> bool:
    done, _ = await asyncio.wait({work}, timeout=seconds)
    return bool(done)


async def test_stop_is_bounded_when_the_step_swallows_every_cancellation(
    caplog: pytest.LogCaptureFixture,
) -> None:
    stubborn = _Stubborn()

    async def step() -> None:
        await stubborn.run()

    loop = Loop("stubborn", step, interval=1.0, grace=0.3)
    await loop.start()
    await stubborn.entered.wait()
    with caplog.at_level(logging.WARNING, logger="extauthz.loops"):
        stopping = asyncio.ensure_future(loop.stop())
        ended = await _ends_within(stopping, 5.0)
        stubborn.released = True  # let the task left behind end either way
        await asyncio.wait({stopping}, timeout=5.0)
    assert ended, "Loop.stop waited for a task that swallows its cancellation"
    assert stubborn.cancellations >= 2  # cancelled again, not once and waited for
    assert "stubborn did not stop within 0.3s; left behind" in caplog.text


async def test_stop_all_within_a_bound_stops_the_others_when_one_hangs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    stubborn = _Stubborn()
    stopped: list[str] = []

    class Hanging:
        async def start(self) -> None: ...

        async def stop(self) -> None:
            await stubborn.run()

    class Failing:
        async def start(self) -> None: ...

        async def stop(self) -> None:
            raise RuntimeError("bug in stop")

    class Quick:
        def __init__(self, name: str) -> None:
            self.name = name

        async def start(self) -> None: ...

        async def stop(self) -> None:
            stopped.append(self.name)

    services: list[Service] = [Quick("first"), Failing(), Hanging(), Quick("last")]
    with caplog.at_level(logging.WARNING, logger="extauthz.loops"):
        stopping = asyncio.ensure_future(stop_all(services, within=0.3))
        ended = await _ends_within(stopping, 5.0)
        stubborn.released = True
    assert ended
    assert stopped == ["last", "first"]  # reverse order, past the hanging and the failing one
    assert "stopping Hanging did not finish within" in caplog.text
    assert "stopping Failing failed" in caplog.text
