"""The servers and operations: gRPC and HTTP servers, the admin API, metrics, the key-reload
loop and the composition root that wires them (app.py; its store part in store_wiring.py)
(docs/architecture.md).
"""

from extauthz.server.footprint import leave_out_unused_libraries

leave_out_unused_libraries()  # before any server module imports redis-py
