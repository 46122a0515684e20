"""The Check pipeline: request context → credentials → session → policy → mutation.

Credentials, throttling and the session lookup are the
:class:`~extauthz.check.resolver.SessionResolver`'s (the same one serves ``/auth/*``).

:class:`Authorizer` knows nothing about gRPC or protobuf. It returns an
:class:`~extauthz.check.decisions.Allow` or a :class:`~extauthz.check.decisions.Deny`, and lets
:class:`~extauthz.errors.StoreUnavailable` propagate: a store that cannot answer is not a
denial (the transport turns it into gRPC ``UNAVAILABLE``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from extauthz import tokens
from extauthz.check.context import RequestContext
from extauthz.check.credentials import Credentials, strip_cookie
from extauthz.check.decisions import Allow, Decision
from extauthz.check.denials import DenialRenderer
from extauthz.check.minting import JwtMinter
from extauthz.check.policy import Policy, route_policy
from extauthz.check.resolver import SessionResolver
from extauthz.check.rotation import RollingRotation
from extauthz.errors import Denied, Forbidden, Reason
from extauthz.login.csrf import SAFE_METHODS, SameSiteCheck
from extauthz.server.metrics import Metrics
from extauthz.store.budget import store_budget
from extauthz.store.cache import lookup_source
from extauthz.store.manager import Found

log = logging.getLogger("extauthz.decision")


class Authorizer:
    """Runs the pipeline. ``resolver`` finds the session (credentials, throttle, lookup; the
    same one serves ``/auth/*``). ``jwt_header`` is where the JWT goes toward upstream:
    ``authorization`` gets ``Bearer <JWT>``, any other header the bare JWT.
    ``store_budget_seconds`` bounds the resolver's whole time on the store
    (:func:`~extauthz.store.budget.store_budget`; ``None``: unbounded); ``clock`` (Unix
    seconds) dates a route's ``max_auth_age``; a token rotation
    (``rotation``, :mod:`extauthz.check.rotation`) gets what is left of it."""

    def __init__(
        self,
        resolver: SessionResolver,
        minter: JwtMinter,
        denials: DenialRenderer,
        *,
        jwt_header: str = "authorization",
        store_strategy: str,
        node_id: str,
        same_site: SameSiteCheck | None = None,
        metrics: Metrics | None = None,
        store_budget_seconds: float | None = None,
        rotation: RollingRotation | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.resolver = resolver
        self._clock = clock
        self.minter = minter
        self.denials = denials
        self.jwt_header = jwt_header
        self.store_strategy = store_strategy
        self.node_id = node_id
        self.same_site = same_site or SameSiteCheck()
        self.metrics = metrics
        self.store_budget_seconds = store_budget_seconds
        self.rotation = rotation

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
        policy = route_policy(ctx.context_extensions)
        credentials: Credentials | None = None
        started = time.monotonic()
        try:
            credentials = self.resolver.credentials(ctx)
            self._check_same_site(ctx, policy, credentials)
            async with store_budget(self.store_budget_seconds):
                found = await self.resolver.find(ctx, credentials)
            policy.check(found.session, self._clock())
            set_cookies = await self._rotate(found, credentials, started)
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
                saw_cookie=self.resolver.carries_cookie(ctx),
                metadata=self._metadata("deny", denial.reason),
            )
        return self._allow(ctx, found, credentials, set_cookies)

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

    async def _rotate(
        self, found: Found, credentials: Credentials, started: float
    ) -> tuple[str, ...]:
        """The ``Set-Cookie`` values of a token rotation (:mod:`extauthz.check.rotation`),
        within what is left of the store budget; none when no rotation is due.

        :raises Unauthenticated: the session ended meanwhile.
        """
        if self.rotation is None or not self.rotation.due(found, credentials.source):
            return ()
        budget = self.store_budget_seconds
        left = None if budget is None else budget - (time.monotonic() - started)
        return await self.rotation.set_cookie(found, left)

    def _allow(
        self,
        ctx: RequestContext,
        found: Found,
        credentials: Credentials,
        set_cookies: tuple[str, ...] = (),
    ) -> Allow:
        session = found.session
        jwt = self.minter.mint(session)
        value = f"Bearer {jwt}" if self.jwt_header == "authorization" else jwt
        to_set: list[tuple[str, str]] = [(self.jwt_header, value)]
        to_remove: list[str] = []
        if credentials.source == "bearer" and self.jwt_header != "authorization":
            to_remove.append("authorization")
        # an API key never reaches upstream, whichever header carried the credential used
        if ctx.header(self.resolver.api_key_header) is not None:
            to_remove.append(self.resolver.api_key_header)
        cookie_header = ctx.header("cookie")
        if cookie_header is not None:
            rest = strip_cookie(cookie_header, self.resolver.cookie.name)
            if rest is None:
                to_remove.append("cookie")
            elif rest != cookie_header:
                to_set.append(("cookie", rest))
        log.debug("allow sid=%s method=%s path=%s", session.sid, ctx.method, ctx.path)
        return Allow(
            headers_to_set=tuple(to_set),
            headers_to_remove=tuple(to_remove),
            # each its own header line toward the client, never folded with the upstream's
            response_headers_to_add=tuple(("set-cookie", value) for value in set_cookies),
            # credential: "cookie", "bearer" or "api_key_header" (the response path rotates
            # cookie sessions only)
            metadata={
                **self._metadata("allow", Reason.SESSION_VALID, session.sid),
                "credential": credentials.source,
            },
        )


def _log_ids(credentials: Credentials | None) -> str:
    if credentials is None:
        return "-"
    return ",".join(tokens.log_id(t) for t in credentials.tokens)
