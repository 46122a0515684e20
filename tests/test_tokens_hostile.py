"""Regression tests from the break-it review of the tagged token shape: ``token_hash`` is also
given text nobody checked (an OAuth authorization code, RFC 6749 §4.1.3), and must neither crash
on it nor let it choose a part of a Redis key."""

from __future__ import annotations

import hashlib
import time

import pytest

from extauthz import tokens
from extauthz.oauth.issuer import Lifetimes, TokenIssuer
from extauthz.oauth.records import MemoryOAuthRecords
from extauthz.store.manager import SessionManager
from extauthz.store.memory import MemorySessionStore


@pytest.mark.parametrize("tag", ["{x}z", "a:b}", "{}{}", "ab.c", "é123", "١٢٣٤"])
def test_any_57_characters_put_no_brace_or_colon_in_a_store_key(tag: str) -> None:
    """A 57-character string took its 5th-8th characters as a tag: ``"{x}z"`` reached a Redis
    key (a hash tag the sender chose on a Redis Cluster)."""
    hashed = tokens.token_hash("abcd" + tag + "a" * 49)
    assert tokens.token_tag("abcd" + tag + "a" * 49) is None
    assert not set("{}:") & set(hashed) and tokens.hash_tag(hashed) is None and len(hashed) == 64


def test_a_tagged_token_still_hashes_under_its_tag() -> None:
    token = tokens.mint_token(tag="Ab3d")
    assert tokens.token_tag(token) == "Ab3d"
    assert tokens.hash_tag(tokens.token_hash(token)) == "Ab3d"
    untagged = tokens.mint_token()
    assert tokens.token_hash(untagged) == hashlib.sha256(untagged.encode()).hexdigest()


@pytest.mark.parametrize("code", ["é" * 10, "\ud800", "ab\x00", "é" * 57])
async def test_a_non_ascii_oauth_code_is_no_code_not_a_crash(code: str) -> None:
    """``token_hash`` encoded as ASCII: a non-ASCII code raised UnicodeEncodeError out of
    :meth:`TokenIssuer.take_code`."""
    clock = time.time
    sessions = SessionManager(
        MemorySessionStore(clock), idle_timeout=600, absolute_timeout=3600, clock=clock
    )
    issuer = TokenIssuer(
        sessions, MemoryOAuthRecords(clock), Lifetimes(access=300, refresh=7200, code=60),
        clock=clock,
    )  # fmt: skip
    assert await issuer.take_code(code, "client") is None
