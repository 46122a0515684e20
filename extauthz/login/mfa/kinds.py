"""Factor kinds: the small protocol every kind of second factor satisfies, and the registry
the second step asks. A kind says which RFC 8176 ``amr`` values a use of it earns, and checks
one response against one of the user's stored factors of that kind.

A new kind (passkeys: ``"webauthn"``, ``amr`` ``hwk``/``swk``) is a class with these members,
added to the :class:`FactorKinds` the composition root builds; the pending login's
``challenge`` is there for kinds that sign a server nonce (a WebAuthn assertion).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Protocol

from extauthz.login.mfa.factors import Factor


@dataclass(frozen=True)
class Attempt:
    """One response to the second step. ``response``: what the user sent (a code, or a
    kind's own encoding such as an assertion's JSON); ``now``: Unix seconds; ``challenge``:
    the pending login's random nonce (``""`` when the step is not bound to one)."""

    user: str
    response: str
    now: float
    challenge: str = ""


class FactorKind(Protocol):
    """The rules of one kind of second factor."""

    @property
    def name(self) -> str:
        """The ``Factor.kind`` this kind reads (``"totp"``)."""

    @property
    def amr(self) -> tuple[str, ...]:
        """RFC 8176 §2 values a use earns besides ``pwd`` (``("otp",)``); the session then
        records ``pwd``, these, and ``mfa``."""

    def verify(self, factor: Factor, attempt: Attempt) -> Factor:
        """The record to store after ``attempt`` used ``factor`` (a later time-step, one code
        fewer, a higher sign count; ``last_used_at`` = ``attempt.now``). Pure: the store
        calls it inside its compare-and-set, so of two racing uses one wins.

        :raises FactorRejected: the response is wrong, malformed or replayed.
        """


def amr_of(kind: FactorKind, factor: Factor) -> tuple[str, ...]:
    """What a use of ``factor`` earns: ``kind.amr``, or the factor's own values when the kind
    tells them apart (``amr_of_factor``; passkeys: ``hwk`` or ``swk`` by attachment)."""
    per_factor = getattr(kind, "amr_of_factor", None)
    if callable(per_factor):
        return tuple(str(value) for value in per_factor(factor))
    return kind.amr


class FactorKinds:
    """The registry: kinds by name, in the order the second-step page offers them."""

    def __init__(self, kinds: Iterable[FactorKind]) -> None:
        self._kinds = {kind.name: kind for kind in kinds}

    def get(self, name: str) -> FactorKind | None:
        return self._kinds.get(name)

    def __iter__(self) -> Iterator[FactorKind]:
        return iter(self._kinds.values())

    def names(self) -> tuple[str, ...]:
        return tuple(self._kinds)
