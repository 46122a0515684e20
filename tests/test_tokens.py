"""Opaque access tokens: format, shape check, hashing (extauthz.tokens)."""

from __future__ import annotations

import base64
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
    assert tokens.hash_tag(tokens.token_hash(token)) is None
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


# -- tags: every key of a session in one Redis Cluster slot --------------------------------------


def test_a_tagged_token_has_the_documented_format() -> None:
    tag = tokens.subject_tag("alice")
    token = tokens.mint_token(tag=tag)
    assert len(token) == tokens.TAGGED_TOKEN_LENGTH == 57
    assert re.fullmatch(r"xat_[0-9A-Za-z]{53}", token) and token[4:8] == tag
    assert token[-6:] == _crc_field(token[:-6])  # the checksum covers the tag
    assert tokens.has_token_shape(token) and tokens.token_tag(token) == tag
    key = tokens.mint_token(tokens.API_KEY_PREFIX, tag=tag)
    assert tokens.has_token_shape(key, tokens.SESSION_PREFIXES) and not tokens.has_token_shape(key)


def test_a_tagged_token_keeps_256_random_bits() -> None:
    tag = tokens.subject_tag("alice")
    bodies = {tokens.mint_token(tag=tag)[8:51] for _ in range(200)}
    assert len(bodies) == 200 and all(len(b) == 43 for b in bodies)


def test_every_body_character_is_equally_likely() -> None:
    # 4,000 bodies: 172,000 characters, 2,774 expected of each (standard deviation 52); a
    # modulo bias (a random byte taken modulo 62 without rejecting the 8 above 247) gives the
    # first 8 characters 21 % more, a short alphabet leaves characters out
    counts = dict.fromkeys(ALPHABET, 0)
    for _ in range(4000):
        for character in tokens.mint_token(tag="Ab3d")[8:51]:
            counts[character] += 1
    expected = 4000 * 43 / 62
    assert all(abs(n - expected) < 0.1 * expected for n in counts.values()), counts


def test_a_changed_tag_fails_the_checksum() -> None:
    token = tokens.mint_token(tag="AAAA")
    assert not tokens.has_token_shape(token[:4] + "AAAB" + token[8:])
    # and the untagged shape of the same characters does not pass either
    assert not tokens.has_token_shape(token[:4] + token[8:])


@pytest.mark.parametrize("tag", ["", "abc", "abcde", "ab-c", "ab.c", "äbcd"])
def test_a_bad_tag_is_refused(tag: str) -> None:
    with pytest.raises(ValueError):
        tokens.mint_token(tag=tag)


def test_the_subject_tag_is_stable_and_spread() -> None:
    assert tokens.subject_tag("alice") == tokens.subject_tag("alice")
    assert re.fullmatch(r"[0-9A-Za-z]{4}", tokens.subject_tag("é\u202e" * 200))
    assert len({tokens.subject_tag(f"user-{n}") for n in range(1000)}) > 990


def test_a_tagged_hash_carries_the_tag_and_the_digest() -> None:
    token = tokens.mint_token(tag="Ab3d")
    token_hash = tokens.token_hash(token)
    digest = base64.urlsafe_b64encode(hashlib.sha256(token.encode()).digest()).rstrip(b"=")
    assert token_hash == "Ab3d." + digest.decode()
    assert tokens.hash_tag(token_hash) == "Ab3d"
    assert tokens.hash_tag(tokens.token_hash(tokens.mint_token())) is None
    assert tokens.hash_tag("Ab3d." + "x" * 42) is None  # not a hash this module makes


def test_a_session_id_carries_the_tag() -> None:
    sid = tokens.mint_sid("Ab3d")
    assert re.fullmatch(r"Ab3d-[0-9A-Za-z_-]{22}", sid) and tokens.sid_tag(sid) == "Ab3d"
    assert tokens.sid_tag("Ab3d." + sid[5:]) == "Ab3d"  # minted before slot indexes
    old = tokens.mint_sid(None)
    assert len(old) == 22 and tokens.sid_tag(old) is None
    for other in ("", "Ab3d-", "Ab3d." + "x" * 23, "Ab3d_" + "x" * 22, "Ab3d-x{y}" + "x" * 15):
        assert tokens.sid_tag(other) is None


def test_a_session_id_indexed_by_tag_has_the_dot_of_the_version_before() -> None:
    """``store.session_index = "tag"`` (a rolling upgrade): the sid that version mints."""
    sid = tokens.mint_sid("Ab3d", separator=tokens.TAG_INDEX_SID_SEPARATOR)
    assert re.fullmatch(r"Ab3d\.[0-9A-Za-z_-]{22}", sid) and tokens.sid_tag(sid) == "Ab3d"
    for separator in ("", "_", ":", "{", "--"):
        with pytest.raises(ValueError, match="separator"):
            tokens.mint_sid("Ab3d", separator=separator)
