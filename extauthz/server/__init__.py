"""The servers and operations: gRPC and HTTP servers, the admin API, metrics, the key-reload
loop and the composition root that wires them (app.py; its store part in store_wiring.py)
(docs/architecture.md).
"""

from extauthz.server.footprint import defer_unused_modules, import_redis_py

defer_unused_modules()  # before the libraries that import them (extauthz.server.footprint)
import_redis_py()  # before any server module imports it: without its OpenTelemetry metrics
