"""Registration of each live node in the session store, so that nodes running different
strategies against one store are detected.

The registry is a Redis hash ``<key prefix>nodes``: field = node id, value = JSON::

    {"strategy": "central", "version": "0.1.0", "topology": "...",
     "started": 1700000000.0, "heartbeat": 1700000012.5, "ttl": 15.0}

Times are Unix seconds taken from the Redis server's ``TIME`` (so node clocks do not
matter). A node is *live* while ``now - heartbeat <= ttl``; ``ttl`` is three heartbeat
intervals of the node that wrote it. Entries dead for longer than ten ``ttl``s (at least a
minute) are pruned.

:meth:`NodeRegistry.register` checks and registers in one Lua script (atomic: two nodes
starting at once cannot both miss each other) and raises :class:`SettingsError` naming the
live nodes that run another strategy. The heartbeat task re-registers every
``heartbeat_seconds`` and reports a conflict it finds later through a callback.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass

import redis.asyncio as aioredis

from extauthz.errors import SettingsError, StoreUnavailable
from extauthz.store.redis.store import unavailable_on_redis_error

log = logging.getLogger("extauthz.server.registry")

LIVENESS_HEARTBEATS = 3

# KEYS[1] = registry hash; ARGV = node id, strategy, version, ttl, topology, mode
# mode "check": do not register when a live node runs another strategy.
# Returns {registered 0/1, "<node id>=<strategy>", ...} of the conflicting live nodes.
_REGISTER = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local entries = redis.call('HGETALL', KEYS[1])
local conflicts = {}
local started = now
for i = 1, #entries, 2 do
  local id = entries[i]
  local ok, rec = pcall(cjson.decode, entries[i + 1])
  if not ok or type(rec) ~= 'table' then
    redis.call('HDEL', KEYS[1], id)
  elseif id == ARGV[1] then
    if rec.strategy == ARGV[2] and tonumber(rec.started) then started = tonumber(rec.started) end
  else
    local age = now - (tonumber(rec.heartbeat) or 0)
    local ttl = tonumber(rec.ttl) or 0
    if age <= ttl then
      if rec.strategy ~= ARGV[2] then
        table.insert(conflicts, id .. '=' .. tostring(rec.strategy))
      end
    elseif age > math.max(ttl * 10, 60) then
      redis.call('HDEL', KEYS[1], id)
    end
  end
end
if #conflicts > 0 and ARGV[6] == 'check' then
  return {0, unpack(conflicts)}
end
local record = cjson.encode({strategy = ARGV[2], version = ARGV[3], ttl = tonumber(ARGV[4]),
  topology = ARGV[5], started = started, heartbeat = now})
redis.call('HSET', KEYS[1], ARGV[1], record)
return {1, unpack(conflicts)}
"""


@dataclass(frozen=True)
class NodeRecord:
    """One registered node, as read back from the store."""

    node_id: str
    strategy: str
    version: str
    topology: str
    started: float
    heartbeat: float
    ttl: float

    def live(self, now: float) -> bool:
        return now - self.heartbeat <= self.ttl


class NodeRegistry:
    """This node's entry in ``<key_prefix>nodes`` on the store's primary.

    :param client: a client of the store's primary, owned (closed) by the registry.
    :param heartbeat_seconds: interval of :meth:`run`; the entry is live for three of them.
    """

    def __init__(
        self,
        client: aioredis.Redis,
        key_prefix: str,
        *,
        node_id: str,
        strategy: str,
        version: str,
        topology: str = "",
        heartbeat_seconds: float = 5.0,
    ) -> None:
        self._redis = client
        self.key = f"{key_prefix}nodes"
        self.node_id = node_id
        self.strategy = strategy
        self.version = version
        self.topology = topology
        self.heartbeat_seconds = heartbeat_seconds
        self.registered = False
        self._script = client.register_script(_REGISTER)

    async def _call(self, mode: str) -> tuple[bool, list[str]]:
        args = [
            self.node_id,
            self.strategy,
            self.version,
            self.heartbeat_seconds * LIVENESS_HEARTBEATS,
            self.topology,
            mode,
        ]
        async with unavailable_on_redis_error("register node"):
            # redis-py's Script loads the script again when a failed-over primary lacks it
            reply = await self._script(keys=[self.key], args=args)
        registered = bool(int(reply[0]))
        conflicts = [_text(item) for item in reply[1:]]
        return registered, conflicts

    def _conflict_error(self, conflicts: list[str]) -> SettingsError:
        named = ", ".join(
            f"{node} ({strategy})" for node, _, strategy in (c.rpartition("=") for c in conflicts)
        )
        return SettingsError(
            f"store.strategy: this node ({self.node_id}) runs {self.strategy!r} but live nodes "
            f"registered in the same store ({self.key}) run another strategy: {named}"
        )

    async def register(self) -> None:
        """Check and register atomically.

        :raises SettingsError: live nodes in this store run another strategy (named).
        :raises StoreUnavailable: the store did not answer.
        """
        registered, conflicts = await self._call("check")
        if not registered:
            raise self._conflict_error(conflicts)
        self.registered = True

    async def heartbeat(self) -> list[str]:
        """Refresh the entry (registering it if :meth:`register` could not run); return the
        conflicting live nodes as ``node=strategy``, empty when there are none."""
        registered, conflicts = await self._call("check" if not self.registered else "beat")
        self.registered = self.registered or registered
        return conflicts

    async def run(self, on_conflict: Callable[[SettingsError], None]) -> None:
        """Heartbeat every ``heartbeat_seconds`` until cancelled. A conflict found now (the
        store was unreachable at start-up, or a partition healed) goes to ``on_conflict``."""
        while True:
            try:
                conflicts = await self.heartbeat()
            except StoreUnavailable as exc:
                log.warning("node registration not refreshed: %s", exc)
            else:
                if conflicts:
                    on_conflict(self._conflict_error(conflicts))
            await asyncio.sleep(self.heartbeat_seconds)

    async def deregister(self) -> None:
        """Remove this node's entry (on a clean shutdown); errors are logged, not raised."""
        try:
            async with unavailable_on_redis_error("deregister node"):
                await self._redis.hdel(self.key, self.node_id)
        except StoreUnavailable as exc:
            log.warning("node registration not removed: %s", exc)
        self.registered = False

    async def close(self) -> None:
        """Close the client (the registry owns it)."""
        await self._redis.aclose()

    async def nodes(self) -> list[NodeRecord]:
        """Every entry of the registry (live or not), ordered by node id.

        :raises StoreUnavailable: the store did not answer.
        """
        async with unavailable_on_redis_error("list nodes"):
            raw = await self._redis.hgetall(self.key)
        records = []
        for key, value in raw.items():
            try:
                rec = json.loads(value)
                records.append(
                    NodeRecord(
                        node_id=_text(key),
                        strategy=str(rec["strategy"]),
                        version=str(rec.get("version", "")),
                        topology=str(rec.get("topology", "")),
                        started=float(rec.get("started", 0)),
                        heartbeat=float(rec["heartbeat"]),
                        ttl=float(rec.get("ttl", 0)),
                    )
                )
            except (ValueError, KeyError, TypeError):
                continue
        return sorted(records, key=lambda r: r.node_id)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
