"""Every Redis key of a session, built in one place.

A session's tag (:func:`extauthz.tokens.subject_tag`) is in its tokens, so in their hashes
(:func:`extauthz.tokens.hash_tag`), and in its session id (:func:`extauthz.tokens.sid_tag`).
Every key of a tagged session carries it as the Redis hash tag ``{tag}``: the keys of one
session, and of every session of one subject, share one Redis Cluster slot, so a lookup needs
no extra round trip, and create, revoke and revoke-all of a subject run in one slot (one
``MULTI`` or one script). The kind of key follows the tag in one letter::

    p + "{" + tag + "}s:" + <hash>     the session record (MessagePack), kept until the absolute
                                       expiry: it is also the token's "issued" marker
    p + "{" + c + "}i"                 the slot's index: a hash <sid> -> <hash> over every tag
                                       of the slot (c: extauthz.store.redis.slot_names), with
                                       a bookkeeping field "#" (its pruning); expiring with
                                       the last absolute expiry in it
    p + "{" + tag + "}x"               the tag's index of sids minted before slot indexes
                                       (<tag>.<22>): <sid without tag> -> <hash>
    p + "{" + tag + "}r:" + <hash>     a revoked token's tombstone
    p + "{" + tag + "}n:" + <hash>     a rotated token's successor

(``<hash>`` without its tag and dot; a sid ``<tag>-<22>`` whole, its tag starts the field.) The
index serves both the lookup by sid and "every session of a subject" (``HSCAN MATCH <tag>-*``;
the subjects that share a tag are told apart by the records), so a session costs one key of
its own and a field of a hash shared with the other tags of its slot. Sessions from before tags
(untagged token hashes and sids) keep the keys they were written under (``p + "session:" +
<hash>``, ``"sid:"``, ``"subject:"``, ``"revoked:"``, ``"issued:"``, ``"successor:"``): on one
primary they keep working; on Redis Cluster those keys are spread over slots (:func:`is_tagged`
tells them apart). Layout and expiries: docs/strategies.md, 'Keys'.
"""

from __future__ import annotations

from extauthz.store.redis.slot_names import slot_names, slot_tag
from extauthz.tokens import SID_SEPARATOR, TAG_LENGTH, hash_tag, sid_tag

_TAG_END = TAG_LENGTH + 1  # the tag and its dot


def is_tagged(token_hash: str) -> bool:
    """Whether the keys of ``token_hash``'s session carry a hash tag (a token minted with a tag)."""
    return hash_tag(token_hash) is not None


class SessionKeys:
    """The key names under ``prefix`` (``store.key_prefix``)."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        slot_names()  # the slots' names, built once per process at start-up (~0.15 s)

    def _by_hash(self, kind: str, legacy: str, token_hash: str) -> str:
        tag = hash_tag(token_hash)
        if tag is None:
            return f"{self.prefix}{legacy}:{token_hash}"
        return f"{self.prefix}{{{tag}}}{kind}:{token_hash[_TAG_END:]}"

    def record(self, token_hash: str) -> str:
        """The session record of ``token_hash``."""
        return self._by_hash("s", "session", token_hash)

    def revoked(self, token_hash: str) -> str:
        """The tombstone of a revoked ``token_hash``."""
        return self._by_hash("r", "revoked", token_hash)

    def issued(self, token_hash: str) -> str:
        """The marker of an issued ``token_hash``: for a tagged one, its record (kept until
        the absolute expiry, :meth:`record_lasts_until_expiry`)."""
        return self._by_hash("s", "issued", token_hash)

    @staticmethod
    def record_lasts_until_expiry(token_hash: str) -> bool:
        """Whether the record of ``token_hash`` is kept until the session's absolute expiry
        (tagged: the store reads a record past its idle deadline as ended) rather than its
        deadline (sessions from before tags, with a separate issued marker)."""
        return is_tagged(token_hash)

    def successor(self, token_hash: str) -> str:
        """The successor of a rotated ``token_hash``."""
        return self._by_hash("n", "successor", token_hash)

    def index(self, sid: str) -> tuple[str, str]:
        """Where session ``sid``'s current token hash is kept: ``(key, field)``, the slot's
        index hash and the sid; for a sid minted before slot indexes (a dot after the tag),
        the tag's index hash and the sid without its tag; for a sid from before tags, its own
        string key and ``""``."""
        tag = sid_tag(sid)
        if tag is None:
            return f"{self.prefix}sid:{sid}", ""
        if sid[TAG_LENGTH] == SID_SEPARATOR:
            return self.slot_index(tag), sid
        return self.tag_index(tag), sid[_TAG_END:]

    @staticmethod
    def index_value(token_hash: str) -> str:
        """What the index keeps for ``token_hash``: a tagged hash without its tag and dot
        (the index's key has it), else the whole hash."""
        return token_hash[_TAG_END:] if is_tagged(token_hash) else token_hash

    def tag_index(self, tag: str) -> str:
        """The index hash of ``tag``'s sids minted before slot indexes (:meth:`index`)."""
        return f"{self.prefix}{{{tag}}}x"

    def slot_index(self, tag: str) -> str:
        """The index hash of the slot of ``tag`` (:meth:`index`): its sids start with
        ``tag + "-"``."""
        return f"{self.prefix}{{{slot_tag(tag)}}}i"

    def entry_token_hash(self, sid: str, value: str) -> str:
        """The token hash that the index entry of ``sid`` names by ``value`` (tagged sids:
        the hash without its tag, :meth:`index_value`; sids from before tags: the hash)."""
        tag = sid_tag(sid)
        return value if tag is None else f"{tag}.{value}"

    def legacy_subject(self, sub: str) -> str:
        """The set of the session ids of ``sub``'s sessions from before tags (tagged
        sessions are found through the index of the subject's tag)."""
        return f"{self.prefix}subject:{sub}"
