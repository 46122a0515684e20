"""The Check pipeline: request context → credentials → session → policy → mutation.

:class:`Authorizer` knows nothing about gRPC or protobuf. It returns an
:class:`~extauthz.check.decisions.Allow` or a :class:`~extauthz.check.decisions.Deny`, and lets
:class:`~extauthz.errors.StoreUnavailable` propagate: a store that cannot answer is not a
denial (the transport turns it into gRPC ``UNAVAILABLE``).
"""

from __future__ import annotations

import logging

from extauthz import tokens
from extauthz.check.context import RequestContext
from extauthz.check.credentials import (
    BearerExtractor,
    CookieExtractor,
    Credentials,
    extract_credentials,
    iter_cookies,
    strip_cookie,
)
from extauthz.check.decisions import Allow, Decision
from extauthz.check.denials import DenialRenderer
from extauthz.check.minting import JwtMinter
from extauthz.check.policy import Policy
from extauthz.check.throttle import LookupThrottle
from extauthz.errors import Denied, Forbidden, Reason, TooManyRequests, Unauthenticated
from extauthz.login.csrf import SAFE_METHODS, SameSiteCheck
from extauthz.server.metrics import Metrics
from extauthz.store.cache import lookup_source
from extauthz.store.manager import SessionManager
from extauthz.store.model import Session

log = logging.getLogger("extauthz.decision")


class Authorizer:
    """Runs the pipeline. ``jwt_header`` is where the JWT goes toward upstream:
    ``authorization`` gets ``Bearer <JWT>``, any other header the bare JWT."""

    def __init__(
        self,
        sessions: SessionManager,
        minter: JwtMinter,
        denials: DenialRenderer,
        *,
        cookie_name: str,
        max_cookie_candidates: int = 4,
        jwt_header: str = "authorization",
        store_strategy: str,
        node_id: str,
        throttle: LookupThrottle | None = None,
        same_site: SameSiteCheck | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.sessions = sessions
        self.minter = minter
        self.denials = denials
        self.cookie_name = cookie_name
        self._cookies = CookieExtractor(cookie_name, max_cookie_candidates)
        self._bearer = BearerExtractor()
        self.jwt_header = jwt_header
        self.store_strategy = store_strategy
        self.node_id = node_id
        self.throttle = throttle
        self.same_site = same_site or SameSiteCheck()
        self.metrics = metrics

    def _metadata(self, decision: str, reason: Reason, sid: str = "") -> dict[str, str]:
        if self.metrics is not None:
            self.metrics.count_decision(decision, reason)
        return {
            "decision": decision,
            "reason": str(reason),
            "sid": sid,
            "store_strategy": self.store_strategy,
            "node_id": self.node_id,
            # hit / miss / bypass (push channel not trusted) / off: extauthz.store.cache
            "session_cache": lookup_source.get(),
        }

    async def authorize(self, ctx: RequestContext) -> Decision:
        """Decide one request.

        :raises StoreUnavailable: the session store could not answer.
        """
        lookup_source.set("off")
        policy = Policy.from_context_extensions(ctx.context_extensions)
        credentials: Credentials | None = None
        try:
            credentials = extract_credentials(ctx, self._cookies, self._bearer)
            if credentials is None:
                raise Unauthenticated(Reason.NO_CREDENTIAL, "")
            self._check_same_site(ctx, policy, credentials)
            session = await self._resolve_throttled(ctx, credentials)
            policy.check(session)
        except Denied as denial:
            log.info(
                "deny reason=%s method=%s path=%s credential=%s",
                denial.reason,
                ctx.method,
                ctx.path,
                _log_ids(credentials),
            )
            return self.denials.render(
                ctx,
                policy,
                denial,
                saw_cookie=_has_cookie(ctx, self.cookie_name),
                metadata=self._metadata("deny", denial.reason),
            )
        return self._allow(ctx, session, credentials)

    def reject(self, denial: Denied) -> Decision:
        """The answer to a request that could not even be read (e.g. ``BadRequest``)."""
        ctx = RequestContext(method="", scheme="", host="", path="")
        return self.denials.render(
            ctx,
            Policy(client="api"),
            denial,
            saw_cookie=False,
            metadata=self._metadata("deny", denial.reason),
        )

    def _check_same_site(
        self, ctx: RequestContext, policy: Policy, credentials: Credentials
    ) -> None:
        """Routes with ``same_site: required``: a cookie-authenticated unsafe request from
        another site is refused before its session is even looked up."""
        if (
            not policy.same_site_required
            or credentials.source != "cookie"
            or ctx.method in SAFE_METHODS
        ):
            return
        violation = self.same_site.violation(ctx.scheme, ctx.host, ctx.headers)
        if violation is not None:
            raise Forbidden(Reason.CROSS_SITE_REQUEST, violation)

    async def _resolve_throttled(self, ctx: RequestContext, credentials: Credentials) -> Session:
        """:meth:`_resolve`, refused with 429 for an address over its budget of failed
        lookups (:mod:`extauthz.check.throttle`). Every unknown or malformed candidate counts, also
        when another candidate of the same request is live (otherwise one's own cookie would
        carry a few free guesses in every request)."""
        if self.throttle is None:
            return await self._resolve(credentials, [])
        wait = self.throttle.retry_after(ctx.peer_address)
        if wait:
            raise TooManyRequests(wait, "too many failed token lookups from this address")
        misses: list[Unauthenticated] = []
        try:
            session = await self._resolve(credentials, misses)
        except Unauthenticated:
            await self._count_misses(ctx, misses)
            raise
        await self._count_misses(ctx, misses)
        return session

    async def _count_misses(self, ctx: RequestContext, misses: list[Unauthenticated]) -> None:
        """:raises TooManyRequests: the misses put the address over its budget."""
        assert self.throttle is not None
        counted = sum(
            m.reason in (Reason.UNKNOWN_SESSION, Reason.MALFORMED_CREDENTIAL) for m in misses
        )
        wait = await self.throttle.failed(ctx.peer_address, counted)
        if wait:
            raise TooManyRequests(wait, "too many failed token lookups from this address") from None

    async def _resolve(self, credentials: Credentials, misses: list[Unauthenticated]) -> Session:
        """Look up every candidate token (each failure is appended to ``misses``): a single
        one must be live; of several session cookies (host and parent-domain cookies sharing
        a name) the first live one wins, unless live ones belong to different subjects."""
        live: list[Session] = []
        first_failure: Unauthenticated | None = None
        for token in credentials.tokens:
            try:
                live.append(await self.sessions.lookup(token))
            except Unauthenticated as failure:
                misses.append(failure)
                first_failure = first_failure or failure
        if not live:
            assert first_failure is not None
            raise first_failure
        if len({s.sub for s in live}) > 1:
            raise Unauthenticated(
                Reason.AMBIGUOUS_CREDENTIAL, "session cookies of different users"
            )
        return live[0]

    def _allow(self, ctx: RequestContext, session: Session, credentials: Credentials) -> Allow:
        jwt = self.minter.mint(session)
        value = f"Bearer {jwt}" if self.jwt_header == "authorization" else jwt
        to_set: list[tuple[str, str]] = [(self.jwt_header, value)]
        to_remove: list[str] = []
        if credentials.source == "bearer" and self.jwt_header != "authorization":
            to_remove.append("authorization")
        cookie_header = ctx.header("cookie")
        if cookie_header is not None:
            rest = strip_cookie(cookie_header, self.cookie_name)
            if rest is None:
                to_remove.append("cookie")
            elif rest != cookie_header:
                to_set.append(("cookie", rest))
        log.debug("allow sid=%s method=%s path=%s", session.sid, ctx.method, ctx.path)
        return Allow(
            headers_to_set=tuple(to_set),
            headers_to_remove=tuple(to_remove),
            metadata=self._metadata("allow", Reason.SESSION_VALID, session.sid),
        )


def _has_cookie(ctx: RequestContext, cookie_name: str) -> bool:
    header = ctx.header("cookie") or ""
    return any(name == cookie_name for name, _ in iter_cookies(header))


def _log_ids(credentials: Credentials | None) -> str:
    if credentials is None:
        return "-"
    return ",".join(tokens.log_id(t) for t in credentials.tokens)
