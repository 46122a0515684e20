"""Every Redis key of a session, built in one place.

A session's tag (:func:`extauthz.tokens.subject_tag`) is in its tokens, so in their hashes
(:func:`extauthz.tokens.hash_tag`), and in its session id (:func:`extauthz.tokens.sid_tag`).
Every key of a tagged session carries it as the Redis hash tag ``{tag}``: the keys of one
session, and of every session of one subject, share one Redis Cluster slot, so a lookup needs
no extra round trip and create, revoke and revoke-all of a subject run in one slot (one
``MULTI`` or one script). The kind of key follows the tag in one letter::

    p + "{" + tag + "}s:" + <hash>     the session record
    p + "{" + tag + "}d:" + <sid>      the token hash of session <sid>
    p + "{" + tag + "}u:" + <sub>      the subject's session ids
    p + "{" + tag + "}r:" + <hash>     a revoked token's tombstone
    p + "{" + tag + "}i:" + <hash>     an issued token's marker
    p + "{" + tag + "}n:" + <hash>     a rotated token's successor

(``<hash>`` and ``<sid>`` without their tag and dot.) Sessions from before tags (untagged
token hashes and sids) keep the keys they were written under (``p + "session:" + <hash>``,
``"sid:"``, ``"subject:"``, ``"revoked:"``, ``"issued:"``, ``"successor:"``): on one primary they
keep working; on Redis Cluster those keys are spread over slots (:func:`is_tagged` tells them
apart). Layout and expiries: docs/strategies.md, 'Keys'.
"""

from __future__ import annotations

from extauthz.tokens import TAG_LENGTH, hash_tag, sid_tag, subject_tag

_TAG_END = TAG_LENGTH + 1  # the tag and its dot


def is_tagged(token_hash: str) -> bool:
    """Whether the keys of ``token_hash``'s session carry a hash tag (a token minted with a tag)."""
    return hash_tag(token_hash) is not None


class SessionKeys:
    """The key names under ``prefix`` (``store.key_prefix``)."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

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
        """The marker of an issued ``token_hash``."""
        return self._by_hash("i", "issued", token_hash)

    def successor(self, token_hash: str) -> str:
        """The successor of a rotated ``token_hash``."""
        return self._by_hash("n", "successor", token_hash)

    def sid(self, sid: str) -> str:
        """The index entry of session ``sid`` (its current token hash)."""
        tag = sid_tag(sid)
        if tag is None:
            return f"{self.prefix}sid:{sid}"
        return f"{self.prefix}{{{tag}}}d:{sid[_TAG_END:]}"

    def subject(self, sub: str) -> str:
        """The set of the session ids of ``sub``'s tagged sessions."""
        return f"{self.prefix}{{{subject_tag(sub)}}}u:{sub}"

    def legacy_subject(self, sub: str) -> str:
        """The set of the session ids of ``sub``'s sessions from before tags."""
        return f"{self.prefix}subject:{sub}"

    def subject_of(self, sid: str, sub: str) -> str:
        """The subject set that holds ``sid``: tagged or from before tags, as ``sid`` is."""
        return self.subject(sub) if sid_tag(sid) is not None else self.legacy_subject(sub)
