"""A short hash tag for each Redis Cluster slot: the name of a slot's session index.

Redis Cluster puts a key in slot ``CRC16(tag) mod 16384`` (CRC-16/XMODEM of the key's hash tag;
https://redis.io/docs/latest/operate/oss_and_stack/reference/cluster-spec/#key-distribution-model).
:func:`slot_names` gives, for every slot, the first string of 1 to 3 base62 characters (shortest
first, then in base62 order) that hashes to it, so that ``p + "{" + slot_tag(t) + "}i"`` lives
in the slot of every subject tag that hashes there (:mod:`extauthz.store.redis.keys`). The table
is the same on every node and every version: changing the order would lose the indexes already
written. Built once per process (:func:`slot_names`, about 0.15 s, kept in 48 KiB), when the key
names are (:class:`~extauthz.store.redis.keys.SessionKeys`, at start-up).
"""

from __future__ import annotations

import functools
from binascii import crc_hqx
from itertools import product

SLOTS = 16384
"""Redis Cluster's hash slots."""
_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_MAX_LENGTH = 3  # 62 + 62**2 + 62**3 = 242,234 candidates cover all 16,384 slots


def key_slot(tag: str) -> int:
    """The slot (0 to 16,383) of keys whose hash tag is ``tag`` (ASCII, no braces)."""
    return crc_hqx(tag.encode("ascii"), 0) % SLOTS


@functools.cache
def slot_names() -> str:
    """The name of each slot, packed: 3 characters a slot (a shorter name padded with spaces),
    slot 0 first; 49,152 characters, one str (as 16,384 str objects it was ~1 MiB a process).

    :raises RuntimeError: a slot that no candidate reaches (never with CRC16: the test of
        this module checks every slot).
    """
    # written into one buffer as found: no object per slot (16,384 str objects, even freed at
    # the end, left ~1 MiB of the heap in use)
    table = bytearray(b" " * (SLOTS * _MAX_LENGTH))
    found = bytearray(SLOTS)
    left = SLOTS
    for length in range(1, _MAX_LENGTH + 1):
        for chars in product(_ALPHABET.encode("ascii"), repeat=length):
            name = bytes(chars)
            slot = crc_hqx(name, 0) % SLOTS
            if not found[slot]:
                found[slot] = 1
                table[slot * _MAX_LENGTH : slot * _MAX_LENGTH + length] = name
                left -= 1
                if left == 0:
                    return table.decode("ascii")
    missing = [slot for slot in range(SLOTS) if not found[slot]]
    raise RuntimeError(f"no tag of at most {_MAX_LENGTH} characters for slots {missing[:5]}")


def slot_name(slot: int) -> str:
    """The name (1 to 3 base62 characters) of ``slot`` (0 to 16,383)."""
    start = slot * _MAX_LENGTH
    return slot_names()[start : start + _MAX_LENGTH].rstrip()


def slot_tag(tag: str) -> str:
    """The name of the slot that ``tag`` hashes to (1 to 3 characters)."""
    return slot_name(key_slot(tag))
