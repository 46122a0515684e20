"""Rolling token rotation on the Check path (``session.rotate_after_seconds``, off by default).

A cookie session whose token is older than ``rotate_after_seconds`` gets a new token on an
allowed request: :meth:`~extauthz.store.manager.SessionManager.rotate` makes it (one per old
token, however many requests race), and the answer carries it in a ``Set-Cookie`` that Envoy adds
to the response toward the client (``envoy.service.auth.v3.OkHttpResponse``
``response_headers_to_add``, its own header line). A request that presents a token rotated
moments ago (its grace lasts) gets the same new token, learned from the store, so a response
that was lost or overtaken does not cost the user the session. Bearer tokens are never rotated:
an API client has no way to learn the new token from a ``Set-Cookie``.

A rotation that the store cannot take (down, ``WAIT`` short, the Check's budget spent) does not
fail the request the lookup already allowed: it goes on without a new cookie and the next
request tries again (the old token is still the session's token, or leads to it during the
grace). A token that turns out revoked or expired during the rotation is a denial.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable

from extauthz import tokens
from extauthz.errors import StoreUnavailable
from extauthz.login.cookies import SessionCookie
from extauthz.store.budget import store_budget
from extauthz.store.manager import Found, SessionManager

log = logging.getLogger("extauthz.rotation")

# the least budget worth starting a rotation with (seconds): a Redis round trip or two
MIN_BUDGET_SECONDS = 0.01


class RollingRotation:
    """Decides and performs rolling rotation for one allowed request.

    ``rotate_after_seconds``: the age (seconds) of a cookie session's token from which it is
    replaced; 0 turns rolling rotation off (a superseded token still learns its successor).
    ``stats`` counts outcomes: ``rotated`` (this request made the new token), ``joined`` (it
    sent a token another request made), ``no_cookie`` (a rotation by session id: nothing this
    request could send), ``failed`` (the store did not take it).
    """

    def __init__(
        self,
        sessions: SessionManager,
        cookie: SessionCookie,
        *,
        rotate_after_seconds: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.sessions = sessions
        self.cookie = cookie
        self.rotate_after = rotate_after_seconds
        self._clock = clock
        self.stats: Counter[str] = Counter()

    def due(self, found: Found, source: str) -> bool:
        """Whether the request (credential ``source``: ``"cookie"`` or ``"bearer"``) should
        leave with a new session cookie: its token was superseded, or rolling rotation is on
        and the token is at least ``rotate_after_seconds`` old. No I/O."""
        if source != "cookie":
            return False
        if found.superseded:
            return True
        age = self._clock() - found.session.token_issued_at
        return self.rotate_after > 0 and age >= self.rotate_after

    async def set_cookie(self, found: Found, budget_seconds: float | None) -> tuple[str, ...]:
        """The ``Set-Cookie`` values for the response: one carrying the session's new token,
        or none. ``budget_seconds``: what is left of the Check's store budget (``None``:
        unbounded).

        :raises Unauthenticated: the token names no live session any more (revoked or
            expired since the lookup): the request is denied.
        """
        if found.superseded:  # rotated moments ago: the lookup learned the new token
            return self._joined(found.current_token, found.session.expires_at)
        if budget_seconds is not None and budget_seconds < MIN_BUDGET_SECONDS:
            self.stats["failed"] += 1
            log.warning("token rotation skipped: the Check's store budget is spent")
            return ()
        try:
            async with store_budget(budget_seconds):
                rotated = await self.sessions.rotate(found.token)
        except StoreUnavailable as exc:
            self.stats["failed"] += 1
            log.warning("token rotation not stored, tried again on the next request: %s", exc)
            return ()
        if not rotated.created:
            return self._joined(rotated.token, rotated.session.expires_at)
        assert rotated.token is not None  # a rotation this call made always has its token
        self.stats["rotated"] += 1
        log.info(
            "token rotated sid=%s old=%s new=%s",
            rotated.session.sid,
            tokens.log_id(found.token),
            tokens.log_id(rotated.token),
        )
        return (self.cookie.set(rotated.token, rotated.session.expires_at - self._clock()),)

    def _joined(self, token: str | None, expires_at: float) -> tuple[str, ...]:
        """The cookie of a rotation another request made (``None``: one by session id,
        nothing sealed for this request's token)."""
        if token is None:
            self.stats["no_cookie"] += 1
            return ()
        self.stats["joined"] += 1
        return (self.cookie.set(token, expires_at - self._clock()),)
