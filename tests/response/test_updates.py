"""The session-update protocol's pure parts: parsing and limits, the allowlist, and the
RFC 7396 merge (the RFC's own examples, then properties with Hypothesis)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from extauthz.response.updates import (
    MAX_DEPTH,
    RESERVED_KEYS,
    Action,
    Allowlist,
    MergePatch,
    Refusal,
    Refused,
    check_keys,
    depth,
    merge_patch,
    parse,
)

_FAST = settings(deadline=None, database=None)
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=3), children, max_size=3)
    ),
    max_leaves=12,
)
_OBJECTS = st.dictionaries(st.text(max_size=3), _JSON, max_size=4)


def _refusal(value: bytes | str, **kw: Any) -> Refusal:
    with pytest.raises(Refused) as caught:
        parse(value, **kw)
    return caught.value.reason


def test_an_object_is_a_merge_patch_and_a_known_string_an_action() -> None:
    assert parse('{"theme": "dark", "cart": null}') == MergePatch({"theme": "dark", "cart": None})
    assert parse(b'"logout"') == Action("logout")
    assert parse('"rotate"') == Action("rotate")


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ('{"a": 1', Refusal.INVALID_JSON),
        ("", Refusal.INVALID_JSON),
        (b"\xff{}", Refusal.INVALID_JSON),
        ('{"a": 1, "a": 2}', Refusal.INVALID_JSON),  # duplicate names are ambiguous
        ('{"a": NaN}', Refusal.INVALID_JSON),
        ('{"a": 1} {"b": 2}', Refusal.INVALID_JSON),
        ("[1]", Refusal.NOT_AN_OBJECT),
        ("null", Refusal.NOT_AN_OBJECT),
        ("true", Refusal.NOT_AN_OBJECT),
        ("7", Refusal.NOT_AN_OBJECT),
        ('"Logout"', Refusal.UNKNOWN_ACTION),
        ('{"a": {"b": {"c": {"d": {}}}}}', Refusal.TOO_DEEP),
        ("[" * 2000 + "]" * 2000, Refusal.TOO_DEEP),  # beyond the parser's recursion
    ],
)
def test_what_is_refused(value: str | bytes, reason: Refusal) -> None:
    assert _refusal(value) == reason


@pytest.mark.parametrize(
    "value",
    [
        '{"theme": 1e999}',  # Python reads inf, which json.dumps writes as Infinity
        '{"theme": -1e400}',
        '{"theme": "\\ud800"}',  # a lone surrogate: no Unicode text (RFC 8259 section 8.2)
        '{"theme": {"\\udfff": 1}}',
    ],
)
def test_a_patch_without_a_json_text_form_is_refused(value: str) -> None:
    """What the store and the JWT would carry must be JSON again: no non-finite number
    (RFC 8259 section 6) and no lone surrogate, which cannot be written as UTF-8."""
    assert _refusal(value) == Refusal.INVALID_JSON


@pytest.mark.parametrize("levels", [400, 900, 2000])
def test_a_patch_nested_deeper_than_the_depth_check_can_recurse_is_too_deep(levels: int) -> None:
    """An object holding arrays nested a few hundred levels deep: within the size limit and
    read by the parser, it must still be refused (too_deep), not raise RecursionError (which
    turned the upstream's response into a 503)."""
    value = '{"a":' + "[" * levels + "]" * levels + "}"
    assert _refusal(value, max_bytes=len(value)) == Refusal.TOO_DEEP


def test_the_size_limit_counts_utf8_bytes() -> None:
    at_limit = '{"t": "' + "x" * (4096 - 9) + '"}'
    assert len(at_limit.encode()) == 4096
    assert isinstance(parse(at_limit), MergePatch)
    assert _refusal(at_limit.replace("x", "é", 1)) == Refusal.TOO_LARGE
    assert _refusal('{"t": 1}', max_bytes=5) == Refusal.TOO_LARGE


def test_depth() -> None:
    assert depth(1) == 0
    assert depth({}) == depth([]) == 1
    assert depth({"a": [{"b": 1}]}) == 3
    assert isinstance(parse('{"a": {"b": {"c": {}}}}'), MergePatch)  # exactly MAX_DEPTH
    assert MAX_DEPTH == 4


def test_keys_are_checked_against_the_allowlist_and_the_reserved_names() -> None:
    allowed = frozenset({"theme", "cart"})
    check_keys({"theme": 1, "cart": None}, allowed)
    check_keys({}, frozenset())
    with pytest.raises(Refused) as caught:
        check_keys({"theme": 1, "tenant": 2}, allowed)
    assert caught.value.reason == Refusal.KEY_NOT_ALLOWED
    for key in ("sub", "sid", "scopes", "roles", "exp", "expires_at"):
        with pytest.raises(Refused) as caught:
            check_keys({key: 1}, allowed | {key})
        assert caught.value.reason == Refusal.RESERVED_KEY
        assert key not in str(caught.value)  # logged: names no key, no value


def test_allowlist_entries() -> None:
    allowlist = Allowlist.from_entries(["shop=cart", "shop=theme", "a=b=c"])
    assert allowlist.keys_for("shop") == {"cart", "theme"}
    assert allowlist.keys_for("a=b") == {"c"}
    assert allowlist.keys_for("other") == frozenset()
    for bad in ("shop", "=cart", "shop=", "shop=roles"):
        with pytest.raises(ValueError):
            Allowlist.from_entries([bad])


# RFC 7396 Appendix A, every example
RFC_EXAMPLES = [
    ({"a": "b"}, {"a": "c"}, {"a": "c"}),
    ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
    ({"a": "b"}, {"a": None}, {}),
    ({"a": "b", "b": "c"}, {"a": None}, {"b": "c"}),
    ({"a": ["b"]}, {"a": "c"}, {"a": "c"}),
    ({"a": "c"}, {"a": ["b"]}, {"a": ["b"]}),
    ({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}),
    ({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}),
    (["a", "b"], ["c", "d"], ["c", "d"]),
    ({"a": "b"}, ["c"], ["c"]),
    ({"a": "foo"}, None, None),
    ({"a": "foo"}, "bar", "bar"),
    ({"e": None}, {"a": 1}, {"e": None, "a": 1}),
    ([1, 2], {"a": "b", "c": None}, {"a": "b"}),
    ({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
]


@pytest.mark.parametrize(("target", "patch", "result"), RFC_EXAMPLES)
def test_rfc_7396_examples(target: Any, patch: Any, result: Any) -> None:
    before = json.dumps([target, patch])
    assert merge_patch(target, patch) == result
    assert json.dumps([target, patch]) == before  # neither argument changed


@_FAST
@given(_OBJECTS, _OBJECTS)
def test_a_merge_patch_is_idempotent(target: dict[str, Any], patch: dict[str, Any]) -> None:
    """Applying the same patch twice changes nothing more: a retried update is harmless."""
    once = merge_patch(target, patch)
    assert merge_patch(once, patch) == once


@_FAST
@given(_OBJECTS, _OBJECTS)
def test_what_a_patch_does_to_each_top_level_key(
    target: dict[str, Any], patch: dict[str, Any]
) -> None:
    merged = merge_patch(target, patch)
    for key in set(target) | set(patch):
        if key not in patch:
            assert merged[key] == target[key]
        elif patch[key] is None:
            assert key not in merged
        else:
            assert key in merged


@_FAST
@given(st.text(max_size=60) | st.binary(max_size=60) | _JSON.map(json.dumps))
def test_parse_returns_a_request_or_refuses(value: str | bytes) -> None:
    try:
        request = parse(value)
    except Refused as refusal:
        assert refusal.reason in set(Refusal)
    else:
        assert isinstance(request, MergePatch | Action)


def test_reserved_keys_include_every_claim_of_the_jwt() -> None:
    claims = {
        "iss",
        "aud",
        "sub",
        "sid",
        "iat",
        "nbf",
        "exp",
        "jti",
        "auth_time",
        "scope",
        "roles",
        "auth_method",
        "client_id",
        "amr",
    }
    assert claims <= RESERVED_KEYS
