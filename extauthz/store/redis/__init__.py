"""The Redis side of the store: every module that speaks to Redis lives here, and only here:
the clients of each role (clients.py: primary, local replica, one Sentinel discovery), the one
error boundary (errors.py), every Lua script (scripts.py), the process's membership
(membership.py: node record, caching and read-lease memberships under one instance id), the
revocation channel (channel.py) and acknowledgement barrier (barrier.py), the session store,
the cache invalidation protocol, the replicated strategy, and the Redis-backed users and
rate-limit counters (docs/strategies.md).
"""
