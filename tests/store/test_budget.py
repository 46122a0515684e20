"""The store's budget for one Check (extauthz.store.budget): a body that outlives it ends with
``StoreUnavailable``; a cancellation from outside stays a cancellation."""

from __future__ import annotations

import asyncio

import pytest

from extauthz.errors import StoreUnavailable
from extauthz.store.budget import store_budget


async def test_a_body_that_outlives_the_budget_is_cut_off_as_unavailable() -> None:
    reached_end = False

    async def lookup() -> None:
        nonlocal reached_end
        async with store_budget(0.01):
            await asyncio.Event().wait()  # a server that never answers
            reached_end = True

    with pytest.raises(StoreUnavailable, match="budget of 10 ms"):
        await asyncio.wait_for(lookup(), timeout=5)
    assert not reached_end


async def test_a_timeout_of_the_body_itself_is_not_taken_for_the_budget() -> None:
    with pytest.raises(TimeoutError):
        async with store_budget(5.0):
            raise TimeoutError("the body's own")


async def test_a_cancelled_handler_is_cancelled_not_answered_unavailable() -> None:
    started = asyncio.Event()

    async def handler() -> None:
        async with store_budget(5.0):
            started.set()
            await asyncio.Event().wait()

    task = asyncio.create_task(handler())
    await asyncio.wait_for(started.wait(), timeout=5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, timeout=5)


async def test_no_budget_leaves_the_body_alone() -> None:
    async with store_budget(None):
        await asyncio.sleep(0)
