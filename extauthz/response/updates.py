"""The session-update protocol, upstream to extauthz: parsing, limits, allowlist, merge.

The update header (``x-extauthz-session-update`` by default) holds one JSON value (RFC 8259):

* a JSON **object**: a JSON Merge Patch (RFC 7396) of the session's ``data`` -- a member
  replaces the key, ``null`` deletes it, nested objects merge, arrays and scalars replace;
* a JSON **string** naming an action: ``"logout"`` (revoke the session, clear the cookie) or
  ``"rotate"`` (a new token in a new cookie).

Anything else (an array, a number, ``true``, ``null``, an unknown string) is refused. Limits:
the header value at most :data:`MAX_PATCH_BYTES` bytes (UTF-8), nesting at most
:data:`MAX_DEPTH` levels, no duplicate member names, no ``NaN``/``Infinity`` and no number
that overflows to infinity, no lone surrogate; the merged
``data`` within the session-data limit (:func:`extauthz.store.manager.validate_session_data`).
Only top-level keys the upstream's Envoy cluster is allowed (:class:`Allowlist`) may be
written, never a :data:`RESERVED_KEYS` name.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

MAX_PATCH_BYTES = 4096
MAX_DEPTH = 4
ACTIONS = ("logout", "rotate")
# claim and record names: privileges and identity change through the admin API only
RESERVED_KEYS = frozenset(
    {
        "sub", "sid", "scope", "scopes", "roles", "exp", "expires_at", "iat", "nbf", "iss",
        "aud", "jti", "auth_time", "created_at", "last_seen", "idle_timeout", "version",
        "auth_method", "client_id", "kind", "amr", "acr",
    }
)  # fmt: skip


class Refusal(enum.StrEnum):
    """Why an update was refused (the ``reason`` label of ``extauthz_session_updates_total``)."""

    INVALID_JSON = "invalid_json"  # not one UTF-8 JSON value (or duplicate names, NaN)
    NOT_AN_OBJECT = "not_an_object"  # an array, number, boolean or null
    UNKNOWN_ACTION = "unknown_action"  # a string that names no action
    TOO_LARGE = "too_large"  # the header value is over MAX_PATCH_BYTES
    TOO_DEEP = "too_deep"  # nested deeper than MAX_DEPTH
    RESERVED_KEY = "reserved_key"  # a RESERVED_KEYS name
    KEY_NOT_ALLOWED = "key_not_allowed"  # outside the upstream cluster's allowlist
    DATA_TOO_LARGE = "data_too_large"  # the merged data would exceed the session-data limit
    REPEATED_HEADER = "repeated_header"  # the header came more than once
    NO_SESSION = "no_session"  # the request carried no session (no sid from the Check)
    DENIED_REQUEST = "denied_request"  # the Check did not allow the request
    SESSION_GONE = "session_gone"  # the session ended before the update
    CONFLICT = "conflict"  # other writes won every attempt
    NOT_SUPPORTED = "not_supported"  # an action this node cannot carry out
    NOT_A_COOKIE_SESSION = "not_a_cookie_session"  # rotate asked for a bearer session


class Refused(Exception):
    """An update that is not applied; ``reason`` says why (never the values)."""

    def __init__(self, reason: Refusal, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else str(reason))
        self.reason = reason


@dataclass(frozen=True)
class MergePatch:
    """A JSON Merge Patch of the session's ``data`` (RFC 7396)."""

    patch: Mapping[str, Any]


@dataclass(frozen=True)
class Action:
    """``logout`` or ``rotate``."""

    name: str


UpdateRequest = MergePatch | Action


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError("duplicate member name")
        out[key] = value
    return out


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def depth(value: Any) -> int:
    """Nesting depth of a parsed JSON value: a scalar is 0, ``{}`` and ``[]`` are 1."""
    if isinstance(value, dict):
        return 1 + max((depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((depth(v) for v in value), default=0)
    return 0


def _deeper_than(value: Any, levels: int) -> bool:
    """Whether ``value`` nests more than ``levels`` levels (``depth(value) > levels``),
    descending at most ``levels + 1`` levels: the parser takes nesting that a full
    :func:`depth` could not recurse through."""
    if isinstance(value, dict):
        children: Iterable[Any] = value.values()
    elif isinstance(value, list):
        children = value
    else:
        return False
    return levels <= 0 or any(_deeper_than(child, levels - 1) for child in children)


def parse(value: bytes | str, *, max_bytes: int = MAX_PATCH_BYTES) -> UpdateRequest:
    """The request carried by one header value.

    :raises Refused: ``too_large``, ``invalid_json``, ``too_deep``, ``not_an_object`` or
        ``unknown_action``.
    """
    raw = value.encode("utf-8", "surrogatepass") if isinstance(value, str) else value
    if len(raw) > max_bytes:
        raise Refused(Refusal.TOO_LARGE, f"{len(raw)} bytes, at most {max_bytes}")
    try:
        parsed = json.loads(
            raw.decode("utf-8"),
            object_pairs_hook=_no_duplicates,
            parse_constant=_no_constants,
        )
        # 1e999 reads as inf (written back as Infinity) and "\\ud800" as a lone surrogate:
        # neither could be stored or put in a JWT as JSON text (RFC 8259 sections 6, 8.2)
        json.dumps(parsed, ensure_ascii=False, allow_nan=False).encode("utf-8")
    except (UnicodeDecodeError, UnicodeEncodeError, ValueError) as exc:
        raise Refused(Refusal.INVALID_JSON, type(exc).__name__) from None
    except RecursionError:
        raise Refused(Refusal.TOO_DEEP, "nested beyond the parser's limit") from None
    if isinstance(parsed, str):
        if parsed not in ACTIONS:
            raise Refused(Refusal.UNKNOWN_ACTION, "not one of " + ", ".join(ACTIONS))
        return Action(parsed)
    if not isinstance(parsed, dict):
        raise Refused(Refusal.NOT_AN_OBJECT, type(parsed).__name__)
    if _deeper_than(parsed, MAX_DEPTH):
        raise Refused(Refusal.TOO_DEEP, f"at most {MAX_DEPTH} levels")
    return MergePatch(parsed)


def check_keys(patch: Mapping[str, Any], allowed: frozenset[str]) -> None:
    """Every top-level key of ``patch`` is writable by an upstream allowed ``allowed``.

    :raises Refused: ``reserved_key`` (checked first) or ``key_not_allowed``.
    """
    keys = set(patch)
    if keys & RESERVED_KEYS:
        raise Refused(Refusal.RESERVED_KEY, f"{len(keys & RESERVED_KEYS)} reserved key(s)")
    if not keys <= allowed:
        raise Refused(Refusal.KEY_NOT_ALLOWED, f"{len(keys - allowed)} key(s) not allowed")


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7396 §2 ``MergePatch(Target, Patch)``; neither argument is changed."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for name, value in patch.items():
        if value is None:
            result.pop(name, None)
        else:
            result[name] = merge_patch(result.get(name), value)
    return result


class Allowlist:
    """Which top-level ``data`` keys each upstream may write, by Envoy cluster name (the
    ``xds.cluster_name`` response attribute of ext_proc).

    Built from entries ``"<cluster>=<key>"`` (``session_updates.allowed_keys``); the key is
    what follows the last ``=``, so a cluster name may itself contain ``=``.
    """

    def __init__(self, keys_by_cluster: Mapping[str, Iterable[str]]) -> None:
        self._keys = {c: frozenset(keys) for c, keys in keys_by_cluster.items()}

    @classmethod
    def from_entries(cls, entries: Iterable[str]) -> Allowlist:
        """:raises ValueError: an entry without ``=``, with an empty side, or naming a
        :data:`RESERVED_KEYS` key."""
        keys: dict[str, set[str]] = {}
        for entry in entries:
            cluster, sep, key = entry.rpartition("=")
            if not sep or not cluster or not key:
                raise ValueError(f"{entry!r} is not <cluster>=<key>")
            if key in RESERVED_KEYS:
                raise ValueError(f"{entry!r}: {key!r} is never writable by an upstream")
            keys.setdefault(cluster, set()).add(key)
        return cls(keys)

    def keys_for(self, cluster: str) -> frozenset[str]:
        """The keys ``cluster`` may write (empty for an unknown cluster)."""
        return self._keys.get(cluster, frozenset())

    def clusters(self) -> list[str]:
        return sorted(self._keys)
