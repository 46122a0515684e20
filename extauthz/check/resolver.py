"""One session resolver for both front doors, ``Check`` and ``/auth/*``.

credentials → throttle → lookup of every candidate → the session, or a typed denial
(:class:`~extauthz.errors.Unauthenticated`, :class:`~extauthz.errors.TooManyRequests`). A store
that cannot answer is not a denial: :class:`~extauthz.errors.StoreUnavailable` propagates.

Failed lookups (``unknown_session``, ``malformed_credential``) count in the per-address
:class:`~extauthz.check.throttle.LookupThrottle`, **each** candidate on its own, also when another
candidate of the same request is live, so one's own cookie carries no free guesses. A token
the store remembers as revoked (``revoked_session``) or as issued to a session that idled out
(``session_expired``) is a stale cookie of its holder, not a guess: it does not count (no one
can guess such a token without having held it).

Each source carries only some session kinds (:data:`~extauthz.check.credentials.KINDS_BY_SOURCE`):
a live session of another kind counts as a failed candidate, not as a miss (its holder holds
it): an application's access token or an API key in the session cookie is
``bearer_only_credential``. API keys in the API-key header are looked up, and their misses
counted, exactly as bearer tokens.
"""

from __future__ import annotations

from extauthz.check.context import RequestContext
from extauthz.check.credentials import (
    COOKIE,
    KINDS_BY_SOURCE,
    ApiKeyHeaderExtractor,
    BearerExtractor,
    CookieExtractor,
    Credentials,
    extract_credentials,
    iter_cookies,
)
from extauthz.check.throttle import LookupThrottle
from extauthz.errors import Denied, Reason, StoreUnavailable, TooManyRequests, Unauthenticated
from extauthz.login.cookies import SessionCookie
from extauthz.store.manager import Found, SessionManager
from extauthz.store.model import Session

# the failed lookups that count toward the ``check:addr`` throttle
LOOKUP_MISSES = frozenset({Reason.UNKNOWN_SESSION, Reason.MALFORMED_CREDENTIAL})
THROTTLED = "too many failed token lookups from this address"


def is_miss(failure: Unauthenticated) -> bool:
    """Whether a failed lookup counts toward the throttle (an expired or revoked session
    does not)."""
    return failure.reason in LOOKUP_MISSES


class SessionResolver:
    """Finds the session a request presents. ``cookie`` names the session cookie (and builds
    the ``Set-Cookie`` that clears it); at most ``max_cookie_candidates`` distinct session
    cookies are looked up; ``throttle`` ``None`` counts nothing; API keys are also read from
    the header ``api_key_header`` (lower case; ``api_keys.header``)."""

    def __init__(
        self,
        sessions: SessionManager,
        cookie: SessionCookie,
        *,
        max_cookie_candidates: int = 4,
        throttle: LookupThrottle | None = None,
        api_key_header: str = "x-api-key",
    ) -> None:
        self.sessions = sessions
        self.cookie = cookie
        self.throttle = throttle
        self.api_key_header = api_key_header
        self._cookies = CookieExtractor(cookie.name, max_cookie_candidates)
        self._bearer = BearerExtractor()
        self._api_key = ApiKeyHeaderExtractor(api_key_header)

    def credentials(self, ctx: RequestContext) -> Credentials:
        """The request's credential (see :func:`~extauthz.check.credentials.extract_credentials`).

        :raises Unauthenticated: none (``no_credential``), a malformed one, or an ambiguous one.
        """
        found = extract_credentials(ctx, self._cookies, self._bearer, self._api_key)
        if found is None:
            raise Unauthenticated(Reason.NO_CREDENTIAL, "")
        return found

    def presented(self, ctx: RequestContext) -> tuple[str, ...]:
        """Every token the request carries (session cookies, then a bearer token),
        deduplicated; a malformed or ambiguous credential is skipped, never raised. For
        revocations: a logout and a login's session-fixation defence end whatever they get."""
        found: list[str] = []
        for extractor in (self._cookies, self._bearer):
            try:
                found.extend(extractor.extract(ctx) or ())
            except Denied:
                continue
        return tuple(dict.fromkeys(found))

    def carries_cookie(self, ctx: RequestContext) -> bool:
        """Whether the ``Cookie`` header names the session cookie (with any value)."""
        header = ctx.header("cookie") or ""
        return any(name == self.cookie.name for name, _ in iter_cookies(header))

    def refuse_blocked(self, address: str) -> None:
        """No I/O. :raises TooManyRequests: ``address`` is over its budget of failed lookups."""
        wait = self.throttle.retry_after(address) if self.throttle is not None else 0
        if wait:
            raise TooManyRequests(wait, THROTTLED)

    async def count_misses(self, address: str, misses: int) -> int:
        """Count ``misses`` failed lookups from ``address``; the seconds to wait if it is now
        over its budget, else 0. A rate limiter that cannot answer counts nothing (no
        :class:`~extauthz.errors.StoreUnavailable` leaves here)."""
        if self.throttle is None or misses < 1:
            return 0
        return await self.throttle.failed(address, misses)

    async def resolve(self, ctx: RequestContext, credentials: Credentials | None = None) -> Session:
        """The session of ``credentials``: :meth:`find`'s session."""
        return (await self.find(ctx, credentials)).session

    async def find(self, ctx: RequestContext, credentials: Credentials | None = None) -> Found:
        """The session of ``credentials`` (default: :meth:`credentials` of ``ctx``), from
        ``ctx.peer_address``. A request that puts its address over the budget is refused even
        when a candidate was live: a blocked guesser learns nothing.

        :raises Unauthenticated: no credential, no live candidate (the first failure), or
            live candidates of different subjects (``ambiguous_credential``).
        :raises TooManyRequests: the address is, or is now, over its budget.
        :raises StoreUnavailable: the store did not answer (misses seen so far still count).
        """
        credentials = credentials if credentials is not None else self.credentials(ctx)
        address = ctx.peer_address
        self.refuse_blocked(address)
        misses: list[Unauthenticated] = []
        try:
            found = await self._first_live(credentials, misses)
        except StoreUnavailable:
            await self.count_misses(address, sum(map(is_miss, misses)))
            raise
        except Unauthenticated:
            await self._charge(address, misses)
            raise
        await self._charge(address, misses)
        return found

    async def _charge(self, address: str, misses: list[Unauthenticated]) -> None:
        wait = await self.count_misses(address, sum(map(is_miss, misses)))
        if wait:
            raise TooManyRequests(wait, THROTTLED) from None

    async def _first_live(self, credentials: Credentials, misses: list[Unauthenticated]) -> Found:
        """Look up every candidate (each failure is appended to ``misses``): a single one
        must be live and of a kind its source may carry; of several session cookies (host and
        parent-domain cookies sharing a name) the first such one wins, unless they belong to
        different subjects."""
        live: list[Found] = []
        kinds = KINDS_BY_SOURCE[credentials.source]
        for token in credentials.tokens:
            try:
                found = await self.sessions.find(token)
            except Unauthenticated as failure:
                misses.append(failure)
                continue
            if found.session.kind in kinds:
                live.append(found)
            elif credentials.source == COOKIE:
                misses.append(
                    Unauthenticated(
                        Reason.BEARER_ONLY_CREDENTIAL, "a bearer-only token in a cookie"
                    )
                )
            else:
                misses.append(Unauthenticated(Reason.MALFORMED_CREDENTIAL, "not an API key"))
        if not live:
            raise misses[0] if misses else Unauthenticated(Reason.NO_CREDENTIAL, "")
        if len({found.session.sub for found in live}) > 1:
            raise Unauthenticated(Reason.AMBIGUOUS_CREDENTIAL, "session cookies of different users")
        return live[0]
