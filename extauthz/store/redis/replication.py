"""What a node's replica reports about its replication, and how far its data trails the primary.

:func:`replica_staleness` is the replica's last contact with its primary; a replica can be in
contact (its link up, bytes arriving) and still apply them late, so :class:`ReplicationLag`
measures the delay of the data itself from replication offsets. The ``replicated`` strategy
uses both to decide whether its node may read from the replica (docs/strategies.md,
'replicated').
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

from extauthz.store.redis.errors import text

# lags longer than this many samples (at one sample per lease round) read as that long
MAX_SAMPLES = 64


def online_replica_count(info: dict[str, Any]) -> int:
    """How many replicas a primary's parsed ``INFO replication`` reports ``state=online``
    (its ``slaveN`` entries)."""
    return sum(1 for key, value in info.items() if _is_online_replica(key, value))


def _is_online_replica(key: Any, value: Any) -> bool:
    """One ``slaveN`` entry of a parsed ``INFO replication`` that is ``state=online``."""
    name = text(key)
    if not (name.startswith("slave") and name[5:].isdigit()):
        return False
    if isinstance(value, dict):
        state = value.get("state", value.get(b"state"))
        return state in ("online", b"online")
    return isinstance(value, (bytes, str)) and "state=online" in text(value)


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


@dataclass(frozen=True)
class ReplicaState:
    """The replica's ``INFO replication``, as far as the read lease cares.

    :param staleness: :func:`replica_staleness`.
    :param link_up: ``master_link_status:up``.
    :param replid: the replication history it follows (``master_replid``; "" when unknown).
    :param offset: bytes of that history it has applied (``slave_repl_offset``; -1 when
        unknown).
    """

    staleness: float | None
    link_up: bool
    replid: str = ""
    offset: int = -1

    @classmethod
    def from_info(cls, info: dict[str, Any]) -> ReplicaState:
        staleness = replica_staleness(info)
        return cls(
            staleness,
            str(info.get("master_link_status")) == "up",
            str(info.get("master_replid", "")) if staleness is not None else "",
            _int(info.get("slave_repl_offset")) if staleness is not None else -1,
        )


UNREACHABLE = ReplicaState(None, False)


class ReplicationLag:
    """How long the replica has been missing data its primary had, in seconds.

    Each round the node reads the replica's position (:class:`ReplicaState`) at ``asked``
    (monotonic seconds, taken before the question), then the primary's (``master_replid``,
    ``master_repl_offset`` of its ``INFO replication``) answered at ``at``. Data the primary had
    at sample time ``at`` that the replica has not applied when asked at ``t`` has been missing
    for at least ``t - at``: :meth:`behind` is a lower bound of the replica's delay, with the
    sampling interval as its resolution (a delay shorter than one round reads as 0). A replica
    that follows another history (``replid``) reaches no sample.
    """

    def __init__(self) -> None:
        self._replid = ""
        # (monotonic seconds of the answer, primary's offset then), offsets increasing
        self._samples: deque[tuple[float, int]] = deque(maxlen=MAX_SAMPLES)

    def primary(self, info: dict[str, Any], at: float) -> None:
        """Record the primary's position from its parsed ``INFO replication``."""
        replid, offset = str(info.get("master_replid", "")), _int(info.get("master_repl_offset"))
        if replid != self._replid:
            self._replid = replid
            self._samples.clear()
        if not self._samples or offset > self._samples[-1][1]:
            self._samples.append((at, offset))

    def behind(self, replica: ReplicaState, asked: float) -> float:
        """Seconds the replica, as read at ``asked``, trails the samples taken before."""
        if replica.replid == self._replid:
            while self._samples and self._samples[0][1] <= replica.offset:
                self._samples.popleft()
        return max(0.0, asked - self._samples[0][0]) if self._samples else 0.0


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return -1
