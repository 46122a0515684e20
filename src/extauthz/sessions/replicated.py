"""The ``replicated`` strategy's store: reads from the node's own replica, writes to the primary.

- ``get`` / ``get_by_sid`` ask the node-local replica first. A miss falls back to the
  primary (a session created a moment ago through another node is found), and so does a
  replica that cannot answer or is stale.
- Stale: the replica's ``INFO replication`` is consulted at most once per
  ``freshness_check_interval`` seconds (default 0.1 s). It is trusted while it is a replica
  (``role:slave``), not in a full sync, and its link to the primary is younger than
  ``max_staleness_seconds`` -- ``master_last_io_seconds_ago`` while the link is up,
  ``master_link_down_since_seconds`` once it is down. Beyond the bound its positive answers
  are not used (a revocation may not have reached it); its negative answers never are.
- Every write (create, touch, revoke...) goes to the primary's
  :class:`~extauthz.sessions.redis.RedisSessionStore`, whose ``wait_replicas`` is
  ``"all"`` by default: a logout returns only once every online replica has applied it
  (``WAIT``), so no replica can answer for a revoked token afterwards.
- When the replica is unusable and the primary does not answer, reads raise
  :class:`~extauthz.errors.StoreUnavailable` (Envoy 503), never a denial.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from extauthz.errors import StoreUnavailable
from extauthz.sessions.model import Session, SessionStore
from extauthz.sessions.redis import RedisSessionStore

log = logging.getLogger("extauthz.sessions")

FRESHNESS_CHECK_INTERVAL_SECONDS = 0.1


def replica_staleness(info: dict[str, Any]) -> float | None:
    """Seconds since the replica last heard from its primary, from a parsed
    ``INFO replication``; ``None`` when the node is not a usable replica (a primary, or
    loading a full sync)."""
    if str(info.get("role")) != "slave":
        return None
    if str(info.get("master_sync_in_progress", "0")) == "1":
        return None
    if str(info.get("master_link_status")) == "up":
        return float(info.get("master_last_io_seconds_ago", 0))
    down_since = info.get("master_link_down_since_seconds")
    if down_since is None:
        return None
    # -1 means "never linked" in some versions; treat as unusable
    down = float(down_since)
    return None if down < 0 else down


class ReplicatedSessionStore:
    """Satisfies :class:`~extauthz.sessions.model.SessionStore`.

    :param primary: the store on the primary (all writes; the fallback for reads).
    :param replica: a client of this node's replica (reads only).
    :param max_staleness_seconds: see the module docstring.
    """

    backend = "redis"

    def __init__(
        self,
        primary: RedisSessionStore,
        replica: aioredis.Redis,
        key_prefix: str = "extauthz:",
        *,
        max_staleness_seconds: float = 5.0,
        freshness_check_interval: float = FRESHNESS_CHECK_INTERVAL_SECONDS,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._primary = primary
        self._replica_client = replica
        self._replica = RedisSessionStore(replica, key_prefix)
        self._max_staleness = max_staleness_seconds
        self._interval = freshness_check_interval
        self._monotonic = monotonic
        self._checked_at = float("-inf")
        self._usable = False
        self._lock = asyncio.Lock()
        self.invalidation_channel = primary.invalidation_channel
        # counters for tests and the status page: where reads were answered
        self.replica_hits = 0
        self.primary_reads = 0

    @property
    def client(self) -> aioredis.Redis:
        """The primary's client."""
        return self._primary.client

    async def replica_usable(self) -> bool:
        """Whether the replica may give positive answers now (cached for the check interval)."""
        if self._monotonic() - self._checked_at < self._interval:
            return self._usable
        async with self._lock:
            if self._monotonic() - self._checked_at < self._interval:
                return self._usable
            try:
                info = await self._replica_client.info("replication")
                staleness = replica_staleness(info)
            except (RedisError, OSError):
                staleness = None
            usable = staleness is not None and staleness <= self._max_staleness
            if usable != self._usable:
                (log.info if usable else log.warning)(
                    "local replica %s for reads (staleness %s, bound %.1fs)",
                    "trusted" if usable else "NOT trusted",
                    "unknown" if staleness is None else f"{staleness:g}s",
                    self._max_staleness,
                )
            self._usable = usable
            self._checked_at = self._monotonic()
            return usable

    def _distrust(self) -> None:
        self._usable = False
        self._checked_at = self._monotonic()

    async def _read(
        self, read: Callable[[SessionStore], Awaitable[Session | None]]
    ) -> Session | None:
        """Positive answers from the local replica while it is usable; a miss, a stale or an
        unreachable replica falls back to the primary."""
        if await self.replica_usable():
            try:
                session = await read(self._replica)
            except StoreUnavailable:
                self._distrust()
            else:
                if session is not None:
                    self.replica_hits += 1
                    return session
        self.primary_reads += 1
        return await read(self._primary)

    async def get(self, token_hash: str) -> Session | None:
        return await self._read(lambda store: store.get(token_hash))

    async def get_by_sid(self, sid: str) -> Session | None:
        return await self._read(lambda store: store.get_by_sid(sid))

    async def create(self, token_hash: str, session: Session) -> None:
        await self._primary.create(token_hash, session)

    async def touch(self, token_hash: str, session: Session) -> bool:
        return await self._primary.touch(token_hash, session)

    async def revoke(self, token_hash: str) -> Session | None:
        return await self._primary.revoke(token_hash)

    async def revoke_sid(self, sid: str) -> Session | None:
        return await self._primary.revoke_sid(sid)

    async def revoke_subject(self, sub: str) -> int:
        return await self._primary.revoke_subject(sub)

    async def list_subject(self, sub: str) -> list[Session]:
        return await self._primary.list_subject(sub)

    async def ping(self) -> None:
        """Answers while the primary answers, or while the local replica is trusted (reads
        of existing sessions survive a partition from the primary)."""
        try:
            await self._primary.ping()
        except StoreUnavailable:
            if not await self.replica_usable():
                raise

    async def close(self) -> None:
        await self._primary.close()
        await self._replica.close()
