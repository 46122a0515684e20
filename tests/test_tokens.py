"""Opaque access tokens: format, shape check, hashing (extauthz.tokens)."""

from __future__ import annotations

import hashlib
import re
import zlib

import pytest

from extauthz import tokens

ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def _crc_field(head: str) -> str:
    """The CRC32 of ``head`` in 6 base62 digits, computed independently of the module."""
    value = zlib.crc32(head.encode())
    digits = ""
    for _ in range(6):
        value, digit = divmod(value, 62)
        digits = ALPHABET[digit] + digits
    return digits


def test_minted_token_has_the_documented_format() -> None:
    token = tokens.mint_token()
    assert len(token) == tokens.TOKEN_LENGTH == 53
    assert re.fullmatch(r"xat_[0-9A-Za-z]{49}", token)
    assert token[-6:] == _crc_field(token[:-6])
    assert tokens.has_token_shape(token)


def test_minted_tokens_are_distinct() -> None:
    assert len({tokens.mint_token() for _ in range(200)}) == 200


def _with_checksum(head: str) -> str:
    return head + _crc_field(head)


@pytest.mark.parametrize(
    "candidate",
    [
        "",
        "xat_",
        "Bearer",
        "xat_" + "A" * 49,  # right length and alphabet, wrong checksum (almost surely)
        "XAT_" + "A" * 49,
        "xat-" + "A" * 49,
        "xat_" + "A" * 48,
        "xat_" + "A" * 50,
        "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhIn0.c2ln",  # a JWT
        _with_checksum("xat_" + "A" * 42 + "-"),  # right checksum, '-' not in the alphabet
        _with_checksum("xat_" + "A" * 42 + "é"),
        _with_checksum("xat_" + "A" * 42 + "٣"),  # a non-ASCII digit
    ],
)
def test_shape_check_rejects(candidate: str) -> None:
    assert not tokens.has_token_shape(candidate)


def test_shape_check_rejects_every_single_character_change() -> None:
    token = tokens.mint_token()
    for index in range(len(tokens.PREFIX), len(token)):
        replacement = "a" if token[index] != "a" else "b"
        mutated = token[:index] + replacement + token[index + 1 :]
        assert not tokens.has_token_shape(mutated), index


def test_shape_check_rejects_trailing_newline_and_spaces() -> None:
    token = tokens.mint_token()
    for candidate in (token + "\n", " " + token, token + " ", token[:-1] + "\n"):
        assert not tokens.has_token_shape(candidate)


def test_a_token_with_a_recomputed_checksum_passes_the_shape_check() -> None:
    # the checksum is integrity, not secrecy: it is recomputable by anyone
    head = "xat_" + "Z" * 43
    assert tokens.has_token_shape(_with_checksum(head))


def test_token_hash_is_sha256_hex_and_log_id_differs() -> None:
    token = tokens.mint_token()
    assert tokens.token_hash(token) == hashlib.sha256(token.encode()).hexdigest()
    log_id = tokens.log_id(token)
    assert re.fullmatch(r"[0-9a-f]{12}", log_id)
    assert log_id not in tokens.token_hash(token)
    assert log_id not in token


def test_log_id_accepts_any_text() -> None:
    assert len(tokens.log_id("é\x00\ud800")) == 12


@pytest.mark.parametrize("prefix", [tokens.API_KEY_PREFIX, tokens.REFRESH_TOKEN_PREFIX])
def test_a_token_is_accepted_only_where_its_prefix_belongs(prefix: str) -> None:
    """An API key or a refresh token is no access token, and the other way round, although
    all three share the length, alphabet and checksum."""
    other = tokens.mint_token(prefix)
    assert other.startswith(prefix) and other[-6:] == _crc_field(other[:-6])
    assert tokens.has_token_shape(other, prefix)
    assert not tokens.has_token_shape(other)
    assert not tokens.has_token_shape(tokens.mint_token(), prefix)
    # the same body under another prefix fails the checksum too
    assert not tokens.has_token_shape(tokens.PREFIX + other[4:])


def test_every_prefix_has_the_same_length() -> None:
    assert {len(p) for p in tokens.PREFIXES} == {len(tokens.PREFIX)}
    key = tokens.mint_token(tokens.API_KEY_PREFIX)
    assert tokens.has_token_shape(key, tokens.SESSION_PREFIXES)
    assert not tokens.has_token_shape(
        tokens.mint_token(tokens.REFRESH_TOKEN_PREFIX), tokens.SESSION_PREFIXES
    )


def test_an_unknown_prefix_is_refused() -> None:
    with pytest.raises(ValueError):
        tokens.mint_token("xyz_")
