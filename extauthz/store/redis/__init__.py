"""The Redis side of the store: every module that speaks to Redis lives here: the clients of
each role (primary, local replica, Sentinel discovery), the session store, the replicated
strategy, the revocation channel, and the Redis-backed users and rate-limit counters
(docs/strategies.md).
"""
