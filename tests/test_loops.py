"""The supervised background loop (extauthz.loops): its error policy, backoff and stop."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from extauthz.errors import StoreUnavailable
from extauthz.loops import Loop, start_all, stop_all


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
