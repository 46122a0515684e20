"""Scopes and roles: RFC 6749 §3.3 scope tokens.

``scope-token = 1*( %x21 / %x23-5B / %x5D-7E )``: printable ASCII without space, ``"`` or
``\\``. The JWT carries scopes space-separated (``scope`` claim), so a value with a space
would turn into two scopes upstream.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

SCOPE_TOKEN = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]+")


def validate_scope_tokens(kind: str, values: Iterable[str]) -> tuple[str, ...]:
    """``values`` deduplicated in order. ``kind`` (``"scopes"``, ``"roles"``) names them in
    errors.

    :raises ValueError: one string instead of a list, or a value that is not a scope token.
    """
    if isinstance(values, str):
        raise ValueError(f"{kind} must be a list of strings, not one string")
    out: dict[str, None] = {}
    for value in values:
        if not isinstance(value, str) or not SCOPE_TOKEN.fullmatch(value):
            raise ValueError(
                f"invalid {kind[:-1]} {value!r}: must be an RFC 6749 §3.3 scope token"
            )
        out[value] = None
    return tuple(out)
