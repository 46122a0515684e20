"""The Redis session store and its strategies: clients per role, the store, the replicated
strategy and the revocation channel (docs/strategies.md).
"""
