"""Shutdown (extauthz.server.shutdown): bounded steps, and the watchdog that ends the process
at the deadline whatever is still running."""

from __future__ import annotations

import asyncio
import logging
import threading

import pytest

from extauthz.server.shutdown import EXIT_RESERVE_SECONDS, Shutdown


async def test_a_step_that_never_ends_is_left_behind_and_the_watchdog_exits(
    caplog: pytest.LogCaptureFixture,
) -> None:
    exited = threading.Event()
    codes: list[int] = []

    def hard_exit(code: int) -> None:
        codes.append(code)
        exited.set()

    release = asyncio.Event()

    async def stubborn() -> None:
        while not release.is_set():
            try:
                await asyncio.sleep(0.01)
            except asyncio.CancelledError:
                continue  # swallowed, as redis-py can on Python 3.11

    shutdown = Shutdown(0.2, lambda: 3, margin=EXIT_RESERVE_SECONDS + 0.3, hard_exit=hard_exit)
    with caplog.at_level(logging.WARNING):
        shutdown.begin()
        done, _ = await asyncio.wait(
            {asyncio.ensure_future(shutdown.run({"Redis goodbye": stubborn()}))}, timeout=5
        )
        assert done, "Shutdown.run waited past its deadline"
        assert "shutdown: Redis goodbye did not finish within" in caplog.text
        shutdown.running.append("event loop teardown")  # as if the exit itself hung
        assert await asyncio.to_thread(exited.wait, 5)
    release.set()
    assert codes == [3]
    assert "shutdown did not end within 1.0s (still running: event loop teardown)" in caplog.text
