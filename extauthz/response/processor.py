"""Applies what one upstream response asks of its session; knows nothing about protobuf.

:class:`SessionUpdater` gets a :class:`ResponseContext` (what Envoy's ext_proc filter forwards
of a response whose headers carry the update header or the session cookie) and returns the
:class:`ResponseChanges` for it. The session is always the one the ``Check`` of the same request
allowed (its ``sid`` from the ext_authz dynamic metadata), never one named by the upstream.

A bad update is refused, never the response: the client still gets the upstream's answer, the
session is unchanged, the refusal is logged without values and counted by reason. A store that
cannot answer raises :class:`~extauthz.errors.StoreUnavailable` (the transport answers gRPC
``UNAVAILABLE``, Envoy ``status_on_error``, 503: docs/session-updates.md, 'Failure').
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace

from extauthz.errors import Unauthenticated
from extauthz.login.cookies import SessionCookie
from extauthz.response.updates import (
    MAX_PATCH_BYTES,
    Action,
    Allowlist,
    MergePatch,
    Refusal,
    Refused,
    check_keys,
    merge_patch,
    parse,
)
from extauthz.store.budget import store_budget
from extauthz.store.manager import Rotated, validate_session_data
from extauthz.store.model import Session, SessionStore, VersionConflict

log = logging.getLogger("extauthz.response")

# SessionManager.rotate_sid: a new token for the session with this id
Rotate = Callable[[str], Awaitable[Rotated]]


@dataclass(frozen=True)
class ResponseContext:
    """One response, as ext_proc forwards it.

    ``cluster``: the Envoy cluster that answered (``xds.cluster_name``); ``sid``,
    ``decision`` and ``credential`` (``cookie``/``bearer``): the Check's dynamic metadata
    (``""`` when absent); ``updates``: every value of the update header; ``set_cookies``:
    every ``Set-Cookie`` value of the response.
    """

    cluster: str
    sid: str
    decision: str
    updates: tuple[str | bytes, ...] = ()
    set_cookies: tuple[str, ...] = ()
    credential: str = ""


@dataclass(frozen=True)
class ResponseChanges:
    """Header names to remove from the response, then ``(name, value)`` lines to append."""

    remove: tuple[str, ...] = ()
    append: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class UpdateLimits:
    """``max_patch_bytes``: the update header value's bound (bytes); ``attempts``: how often a
    merge is tried again when another write of the record came in between; ``budget_seconds``:
    the longest one update or action may spend on the store (below Envoy's ext_proc
    ``message_timeout``, so that the answer is extauthz's UNAVAILABLE, not Envoy's timeout)."""

    max_patch_bytes: int = MAX_PATCH_BYTES
    attempts: int = 3
    budget_seconds: float | None = 0.8


def cookie_name_of(set_cookie: str) -> str:
    """The cookie name of a ``Set-Cookie`` value (RFC 6265 §5.2: up to the first ``=``,
    whitespace trimmed)."""
    pair = set_cookie.split(";", 1)[0]
    return pair.split("=", 1)[0].strip() if "=" in pair else ""


class SessionUpdater:
    """See the module docstring. ``count(result, reason)`` is called once per processed
    update (``applied``/``refused``) and per dropped cookie (``dropped_cookie``). ``rotate``
    carries out the ``rotate`` action (without it the action is refused, ``not_supported``);
    ``clock`` gives Unix seconds (the new cookie's ``Max-Age``); ``check_session`` raises
    :class:`ValueError` for an updated session whose JWT would exceed ``jwt.max_bytes``
    (:meth:`~extauthz.check.minting.JwtMinter.check_size`; refused as ``data_too_large``)."""

    def __init__(
        self,
        store: SessionStore,
        allowlist: Allowlist,
        cookie: SessionCookie,
        *,
        header: str,
        limits: UpdateLimits | None = None,
        count: Callable[[str, str], None] = lambda result, reason: None,
        rotate: Rotate | None = None,
        clock: Callable[[], float] = time.time,
        check_session: Callable[[Session], None] | None = None,
    ) -> None:
        self.store = store
        self.allowlist = allowlist
        self.cookie = cookie
        self.header = header.lower()
        self.limits = limits or UpdateLimits()
        self._count = count
        self._rotate = rotate
        self._clock = clock
        self._check_session = check_session
        # sid -> (lock, holders): updates of one session on this node wait for each other
        # instead of losing compare-and-set rounds to each other
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    async def process(self, ctx: ResponseContext) -> ResponseChanges:
        """The changes for one response.

        :raises StoreUnavailable: the store could not carry out an update or action within
            ``limits.budget_seconds``.
        """
        remove: list[str] = [self.header] if ctx.updates else []
        append: list[tuple[str, str]] = []
        # a denial is Envoy's own reply built from the Check's answer (Envoy 1.40, not 1.36, runs
        # ext_proc on it), whose Set-Cookie clearing the session cookie is extauthz's own
        own_reply = ctx.decision == "deny"
        kept = [c for c in ctx.set_cookies if cookie_name_of(c) != self.cookie.name]
        if not own_reply and len(kept) != len(ctx.set_cookies):
            # an upstream must not plant or clear the gateway's cookie: drop those lines only
            remove.append("set-cookie")
            append += [("set-cookie", c) for c in kept]
            self._count("dropped_cookie", ctx.cluster or "-")
            log.warning("upstream cluster=%s set the session cookie: dropped", ctx.cluster)
        if ctx.updates:
            async with store_budget(self.limits.budget_seconds), self._one_at_a_time(ctx.sid):
                append += await self._update(ctx)
        return ResponseChanges(tuple(remove), tuple(append))

    @asynccontextmanager
    async def _one_at_a_time(self, sid: str) -> AsyncIterator[None]:
        """Hold the lock of session ``sid`` (the time waited counts against the budget); no
        lock without a session (such an update is refused at once)."""
        if not sid:
            yield
            return
        lock, holders = self._locks.get(sid, (asyncio.Lock(), 0))
        self._locks[sid] = (lock, holders + 1)
        try:
            async with lock:
                yield
        finally:
            lock, holders = self._locks[sid]
            if holders == 1:
                del self._locks[sid]
            else:
                self._locks[sid] = (lock, holders - 1)

    async def _update(self, ctx: ResponseContext) -> list[tuple[str, str]]:
        try:
            if len(ctx.updates) > 1:
                raise Refused(Refusal.REPEATED_HEADER, f"{len(ctx.updates)} copies")
            if ctx.decision not in ("", "allow"):
                raise Refused(Refusal.DENIED_REQUEST)
            if not ctx.sid or ctx.decision != "allow":
                raise Refused(Refusal.NO_SESSION)
            request = parse(ctx.updates[0], max_bytes=self.limits.max_patch_bytes)
            if isinstance(request, Action):
                return await self._action(ctx, request)
            await self._merge(ctx, request)
        except Refused as refusal:
            self._count("refused", str(refusal.reason))
            log.info(
                "session update refused reason=%s cluster=%s sid=%s",
                refusal.reason,
                ctx.cluster,
                ctx.sid or "-",
            )
        return []

    async def _merge(self, ctx: ResponseContext, request: MergePatch) -> None:
        check_keys(request.patch, self.allowlist.keys_for(ctx.cluster))

        def change(session: Session) -> Session:
            merged = merge_patch(dict(session.data), dict(request.patch))
            try:
                changed = replace(session, data=validate_session_data(merged))
                if self._check_session is not None:
                    self._check_session(changed)
            except ValueError:
                raise Refused(Refusal.DATA_TOO_LARGE) from None
            return changed

        try:
            updated = await self.store.update(ctx.sid, change, attempts=self.limits.attempts)
        except VersionConflict:
            raise Refused(Refusal.CONFLICT) from None
        if updated is None:
            raise Refused(Refusal.SESSION_GONE)
        self._count("applied", "merge_patch")
        log.info(
            "session updated sid=%s cluster=%s keys=%d version=%d",
            ctx.sid,
            ctx.cluster,
            len(request.patch),
            updated.version,
        )

    async def _action(self, ctx: ResponseContext, action: Action) -> list[tuple[str, str]]:
        if action.name == "logout":
            revoked = await self.store.revoke_sid(ctx.sid)
            self._count("applied", "logout")
            log.info(
                "session ended by upstream sid=%s cluster=%s revoked=%s",
                ctx.sid,
                ctx.cluster,
                revoked is not None,
            )
            return [("set-cookie", value) for value in self.cookie.clearing()]
        if self._rotate is None:
            raise Refused(Refusal.NOT_SUPPORTED, action.name)
        if ctx.credential != "cookie":
            # a bearer client cannot learn a new token from a Set-Cookie: it would lose the
            # session at the end of the grace
            raise Refused(Refusal.NOT_A_COOKIE_SESSION)
        try:
            rotated = await self._rotate(ctx.sid)
        except Unauthenticated:
            raise Refused(Refusal.SESSION_GONE) from None
        if not rotated.created or rotated.token is None:
            # a concurrent response rotated this very token: its cookie is the one to keep
            self._count("applied", "rotate_joined")
            return []
        self._count("applied", "rotate")
        log.info("session token rotated by upstream sid=%s cluster=%s", ctx.sid, ctx.cluster)
        max_age = rotated.session.expires_at - self._clock()
        return [("set-cookie", self.cookie.set(rotated.token, max_age))]
