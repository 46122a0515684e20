"""The name of each Redis Cluster slot's session index (extauthz.store.redis.slot_names)."""

from __future__ import annotations

import hashlib
import re

from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

from extauthz import tokens
from extauthz.store.redis.keys import SessionKeys
from extauthz.store.redis.slot_names import SLOTS, slot_name, slot_names, slot_tag


def test_every_slot_has_a_name_in_that_slot() -> None:
    """Checked against redis-py's CRC16 over all 16,384 slots, as a whole key name."""
    table = [slot_name(slot) for slot in range(SLOTS)]
    assert SLOTS == REDIS_CLUSTER_HASH_SLOTS == len(slot_names()) // 3
    for slot, name in enumerate(table):
        assert re.fullmatch(r"[0-9A-Za-z]{1,3}", name), (slot, name)
        assert key_slot(f"extauthz:{{{name}}}i".encode()) == slot, (slot, name)


def test_a_tags_slot_index_is_in_the_tags_slot() -> None:
    keys = SessionKeys("extauthz:")
    for n in range(2000):
        tag = tokens.subject_tag(f"user-{n}@example.com")
        assert key_slot(keys.slot_index(tag).encode()) == key_slot(tag.encode())
        assert slot_tag(tag) == slot_name(key_slot(tag.encode()))


def test_the_names_never_change() -> None:
    """Every node and every later version must find the indexes already written: the table
    is pinned (shortest names first, then base62 order)."""
    table = [slot_name(slot) for slot in range(SLOTS)]
    assert table[key_slot(b"0")] == "0" and table[key_slot(b"z")] == "z"
    digest = hashlib.sha256(",".join(table).encode()).hexdigest()
    assert digest == PINNED, digest


PINNED = "7882af694dd4fa1070ebc83d881437bf7998667315f6ed8d048df4a1ef4aeb5e"
