"""The servers and operations: gRPC and HTTP servers, the admin API, node registration,
metrics, background tasks and the composition root that wires them (docs/architecture.md).
"""
