"""The closed sets that name where sessions live and how nodes share them
(docs/strategies.md).

Settings parse them (``store.strategy``, ``store.backend``); the store, the node registry, the
status RPC, metrics and the Check's ``dynamic_metadata`` report them. Members are ``str``
(:class:`enum.StrEnum`): they compare equal to their value and format as it.
"""

from __future__ import annotations

import enum


@enum.unique
class StoreStrategy(enum.StrEnum):
    """How the nodes of one deployment share sessions."""

    CENTRAL = "central"  # one logical Redis: primary, replicas, Sentinels
    STICKY = "sticky"  # a store per node; the front proxy pins each user to a node
    REPLICATED = "replicated"  # writes to one primary, reads from the node's local replica


@enum.unique
class StoreBackend(enum.StrEnum):
    """Where the session store keeps its records."""

    MEMORY = "memory"  # in this process: node-local, so only for the sticky strategy
    REDIS = "redis"
