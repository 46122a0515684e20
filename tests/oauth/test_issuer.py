"""The token issuer's lifetimes on a fake clock: a code lives ``code`` seconds, an access
token ``access`` seconds (never sliding), a refresh family ends at its absolute end."""

from __future__ import annotations

import pytest

from extauthz.errors import Unauthenticated
from extauthz.oauth.issuer import Lifetimes, TokenIssuer, new_family
from extauthz.oauth.records import MemoryOAuthRecords
from extauthz.store.manager import SessionManager
from extauthz.store.memory import MemorySessionStore


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def issuer(clock: Clock) -> TokenIssuer:
    sessions = SessionManager(MemorySessionStore(clock), idle_timeout=600,
                              absolute_timeout=3600, clock=clock)
    return TokenIssuer(sessions, MemoryOAuthRecords(clock),
                       Lifetimes(access=300, refresh=7200, code=60), clock=clock)


async def test_a_code_expires_after_its_lifetime(issuer: TokenIssuer, clock: Clock) -> None:
    await issuer.save_code("c" * 48, client_id="a", sub="alice", redirect_uri="https://x/cb",
                           scope="read", code_challenge="x" * 43)
    clock.now += 61
    assert await issuer.take_code("c" * 48, "a") is None
    await issuer.save_code("d" * 48, client_id="a", sub="alice", redirect_uri="https://x/cb",
                           scope="read", code_challenge="x" * 43)
    clock.now += 59
    assert await issuer.take_code("d" * 48, "a") is not None


async def test_an_access_token_lives_exactly_its_lifetime(
    issuer: TokenIssuer, clock: Clock
) -> None:
    issued = await issuer.issue(client_id="a", sub="alice", scope="read", family=new_family())
    clock.now += 200
    await issuer.sessions.lookup(issued.access_token)  # use does not extend it
    clock.now += 101
    with pytest.raises(Unauthenticated):
        await issuer.sessions.lookup(issued.access_token)


async def test_a_refresh_family_ends_at_its_absolute_end(
    issuer: TokenIssuer, clock: Clock
) -> None:
    family = new_family()
    issued = await issuer.issue(client_id="a", sub="alice", scope="read", family=family,
                                with_refresh=True)
    assert issued.refresh_token is not None
    clock.now += 7199
    assert await issuer.peek_refresh(issued.refresh_token) is not None
    clock.now += 2
    assert await issuer.peek_refresh(issued.refresh_token) is None
    assert await issuer.take_refresh(issued.refresh_token, "a") is None


async def test_the_memory_records_forget_what_expired(clock: Clock) -> None:
    from extauthz.oauth.records import SWEEP_EVERY, CodeRecord

    records = MemoryOAuthRecords(clock)
    for n in range(SWEEP_EVERY - 1):
        await records.put_code(f"old{n}", CodeRecord("a", "s", "u", "", "x", "f", 0.0), 60)
    clock.now += 61
    await records.put_code("new", CodeRecord("a", "s", "u", "", "x", "f", 0.0), 60)
    assert len(records._codes) == 1
